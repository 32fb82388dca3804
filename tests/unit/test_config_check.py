"""``phxq config check C``: a valid config is one line and exit 0; anything a daemon would trip
over later (a handler that does not import, a URL that does not parse, a certificate that does
not load) is exit 1 naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from phxq.cli import cli
from phxq.config import ConfigError
from phxq.config.check import check_config
from phxq.devcluster import DEV_CONSUMER_GROUPS, free_ports, write_dev_config


def dev_config(tmp_path: Path, *, secure: bool = False, handler: str | None = None) -> Path:
    extra = DEV_CONSUMER_GROUPS
    if handler is not None:
        extra = extra.replace("phxq.consumer.demo:log_message", handler)
    ports = free_ports(6)
    return write_dev_config(
        tmp_path, store_ports=ports[:3], lock_ports=ports[3:], extra=extra, secure=secure
    )


def check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    return result.exit_code, result.output.strip()


def test_a_valid_config_is_one_line_and_exit_0(tmp_path: Path) -> None:
    code, out = check(dev_config(tmp_path))
    assert code == 0, out
    assert len(out.splitlines()) == 1
    assert "OK: 3 stores, 3 lock nodes, 16 Paxos groups, 2 topics (9 queues)" in out
    assert "1 consumer group (handlers resolved)" in out and "plaintext" in out


@pytest.mark.parametrize(
    ("handler", "complaint"),
    [
        ("no_such_module_xyz:handle", "cannot import 'no_such_module_xyz'"),
        ("phxq.consumer.demo:no_such_function", "has no 'no_such_function'"),
        ("phxq.consumer.demo:log", "is not callable"),
        ("http://127.0.0.1:99999/hook", "not a valid URL"),
        ("http://:8080/hook", "has no host"),
        ("exploding_handler_mod:handle", "raised RuntimeError: boom"),
    ],
)
def test_a_handler_that_would_fail_names_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handler: str, complaint: str
) -> None:
    (tmp_path / "exploding_handler_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = check(dev_config(tmp_path / "c", handler=handler))
    assert code == 1, out
    assert "consumer_group[0].handler: " in out and complaint in out, out
    assert len(out.splitlines()) == 1


def test_an_importable_handler_in_the_users_package_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "billing_hooks.py").write_text("async def handle(delivery):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    summary = check_config(dev_config(tmp_path / "c", handler="billing_hooks:handle"))
    assert summary.consumer_groups == 1


def test_certificates_and_files_are_loaded_not_just_named(tmp_path: Path) -> None:
    path = dev_config(tmp_path, secure=True)
    assert "TLS and tokens" in str(check_config(path))
    text = path.read_text()
    # store 1's key swapped for another member's: the pair does not load.
    assert 'key = "certs/store-1.key"' in text
    path.write_text(text.replace('key = "certs/store-1.key"', 'key = "certs/store-2.key"'))
    with pytest.raises(ConfigError) as err:
        check_config(path)
    assert err.value.data["key"] == "store[0].cert", err.value.message
    # A CA file that is gone.
    (tmp_path / "certs" / "ca.pem").rename(tmp_path / "certs" / "ca.moved")
    path.write_text(text)
    code, out = check(path)
    assert code == 1 and "security.ca: " in out and "no such file" in out, out
