"""`phxq dev` as the README runs it, on a clean directory: it accepts `phxq enqueue` and the
Python client, stops cleanly on SIGINT, and resumes from the same data."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import phxq
from phxq.config import load_config
from phxq.devcluster import GATEWAY_PORT_OFFSET, PortInUse, check_ports_free, dev_ports
from phxq.security.daemon import client_options

pytestmark = pytest.mark.integration


def free_base_port() -> int:
    """A ``--base-port`` whose store and lock ports are free now, outside the kernel's
    ephemeral range, so the test never collides with a running ``phxq dev`` (7101..)."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 30000)
        try:
            stores, locks = dev_ports(base, 3)
            gateway = [base + GATEWAY_PORT_OFFSET]
            check_ports_free([("port", f"127.0.0.1:{p}") for p in stores + locks + gateway])
        except PortInUse:
            continue
        return base
    raise AssertionError("no free base port found")


def _start_dev(data: Path, base_port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "phxq", "dev", "--data", str(data), "--base-port", str(base_port)],
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
    base = free_base_port()
    proc = _start_dev(data, base)
    stores = [f"127.0.0.1:{p}" for p in dev_ports(base, 3)[0]]
    try:
        config = data / "cluster.toml"
        assert config.exists()
        first = _enqueue_cli(config, "hello")  # the CLI finds its token in [client]
        creds = client_options(load_config(config))  # secure by default: token and CA
        assert creds["token"] and creds["ca"] is not None
        anonymous = phxq.SyncClient(stores, ca=creds["ca"])
        try:
            with pytest.raises(phxq.Unauthenticated):
                anonymous.enqueue("orders", b"no token")
        finally:
            anonymous.close()
        with phxq.SyncClient(stores, **creds) as client:
            ack = client.enqueue("orders", b"from python", key="user-42")
            assert ack.queue == first["queue"] and ack.offset > first["offset"]
    finally:
        _stop_dev(proc)
    assert proc.returncode == 0
    proc = _start_dev(data, base)  # resumes its config (and so its ports)
    try:
        with phxq.SyncClient(stores[:1], **creds) as client:
            msgs = client.dequeue(None, "orders", queue=int(first["queue"]), limit=10)  # type: ignore[call-overload]
            assert [m.payload for m in msgs] == [b"hello", b"from python"]
        # Only the supervisor is signalled, twice (as `timeout` plus `kill` do): it must still
        # stop every daemon it started (each in a session of its own), not die first.
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)  # the second signal lands while the daemons are being stopped
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        deadline = time.monotonic() + 20
        while _daemons_of(data) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _daemons_of(data) == [], "phxq dev left daemons running"
    finally:
        if proc.poll() is None:
            _stop_dev(proc)
        for pid in _daemons_of(data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _daemons_of(data: Path) -> list[int]:
    """Live processes whose command line names ``data`` (the dev cluster's daemons)."""
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] if cmdline else "Z"
        except OSError:
            continue
        if str(data).encode() in cmdline and state != "Z":
            alive.append(int(entry.name))
    return alive
