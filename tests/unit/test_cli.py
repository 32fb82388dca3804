"""The ``phxq`` command line without a cluster (click's CliRunner): argument checks, where the
config comes from, and every error as one line with exit code 1."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from phxq import __version__
from phxq.cli import cli
from phxq.devcluster import free_ports, write_dev_config


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    extra = '\n[[consumer_group]]\nname = "billing"\ntopic = "orders"\nhandler = "json:dumps"\n'
    ports = free_ports(6)
    return write_dev_config(
        tmp_path / "c", store_ports=ports[:3], lock_ports=ports[3:], extra=extra
    )


def test_version() -> None:
    assert __version__ in run("--version").output


def test_a_command_without_a_config_says_how_to_give_one() -> None:
    result = run("admin", "lag")
    assert result.exit_code == 2
    assert "--config FILE (or set PHXQ_CONFIG)" in result.output


def test_phxq_config_names_the_config_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\ngroups = 0\n")
    line = one_line_error(run("admin", "lag", env={"PHXQ_CONFIG": str(bad)}))
    assert "ConfigError" in line and "bad.toml" in line and "groups" in line


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(run("admin", "status", "--config", str(tmp_path / "nope.toml")))
    assert "nope.toml" in line


def test_an_unknown_consumer_group_is_one_line_before_connecting(config: Path) -> None:
    line = one_line_error(run("admin", "pause", "--config", str(config), "--group", "nope"))
    assert "ConfigError" in line and "nope" in line


def test_limit_needs_a_change(config: Path) -> None:
    result = run("admin", "limit", "--config", str(config), "--group", "billing")
    assert result.exit_code == 2 and "--rate, --bytes, --unlimited or --reset" in result.output


def test_enqueue_to_no_server_is_unavailable_in_one_line() -> None:
    (port,) = free_ports(1)
    args = ("enqueue", "-s", f"127.0.0.1:{port}", "--timeout", "0.3", "orders", "x")
    line = one_line_error(run(*args))
    assert "Unavailable" in line and str(port) in line


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--header", "nonsense", "orders", "x"), "NAME=VALUE"),
        (("--lines", "orders", "x"), "--lines reads stdin"),
        (("--lines", "--dedup-id", "d", "orders"), "not with --lines"),
    ],
)
def test_enqueue_rejects_bad_arguments(args: tuple[str, ...], complaint: str) -> None:
    result = run("enqueue", "-s", "127.0.0.1:1", *args, stdin="")
    assert result.exit_code == 2 and complaint in result.output


def test_tail_rejects_an_unknown_start() -> None:
    result = run("tail", "-s", "127.0.0.1:1", "orders", "--from", "yesterday")
    assert result.exit_code == 2 and "now, start, cursor, an OFFSET, an ISO time" in result.output


def test_dev_names_a_taken_port_before_anything_is_ready(tmp_path: Path) -> None:
    with socket.socket() as taken:
        for port in range(21000, 21400):  # a fixed range, so the check always runs
            try:
                taken.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        else:
            raise AssertionError("no free port in 21000-21399 to take")
        taken.listen()
        line = one_line_error(run("dev", "--data", str(tmp_path / "d"), "--base-port", str(port)))
    assert f"port {port} (store 1) is already in use" in line
    assert "--base-port" in line
    assert not (tmp_path / "d" / "cluster.toml").exists()  # the next run may pick other ports


def test_dev_refuses_a_base_port_that_contradicts_the_data_it_resumes(config: Path) -> None:
    line = one_line_error(run("dev", "--data", str(config.parent), "--base-port", "20000"))
    assert "not --base-port 20000" in line
