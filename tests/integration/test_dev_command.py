"""`phxq dev` as the README runs it, on a clean directory: it accepts `phxq enqueue` and the
Python client, stops cleanly on SIGINT, and resumes from the same data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import phxq

pytestmark = pytest.mark.integration


def _start_dev(data: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "phxq", "dev", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Ctrl-C to stop" in line:
            return proc
    proc.kill()
    raise AssertionError("phxq dev did not become ready:\n" + "".join(seen))


def _stop_dev(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def _enqueue_cli(config: Path, payload: str) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "phxq",
            "enqueue",
            "--config",
            str(config),
            "orders",
            "--key",
            "user-42",
            "--json",
            payload,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_dev_cluster_accepts_cli_and_client_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "phxq-data"
    proc = _start_dev(data)
    try:
        config = data / "cluster.toml"
        assert config.exists()
        first = _enqueue_cli(config, "hello")
        with phxq.SyncClient(["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]) as client:
            ack = client.enqueue("orders", b"from python", key="user-42")
            assert ack.queue == first["queue"] and ack.offset > first["offset"]
    finally:
        _stop_dev(proc)
    assert proc.returncode == 0
    proc = _start_dev(data)
    try:
        with phxq.SyncClient(["127.0.0.1:7101"]) as client:
            msgs = client.dequeue(None, "orders", queue=int(first["queue"]), limit=10)  # type: ignore[call-overload]
            assert [m.payload for m in msgs] == [b"hello", b"from python"]
    finally:
        _stop_dev(proc)
