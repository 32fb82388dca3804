"""``phxq dev`` runs one consumer daemon: what is enqueued reaches its (logging) handler, and
``phxq admin status`` shows it owning every pair of the dev consumer group."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import phxq
from phxq.config import load_config
from phxq.devcluster import dev_ports
from phxq.security.daemon import client_options
from tests.integration.test_dev_command import _start_dev, _stop_dev, free_base_port

pytestmark = pytest.mark.integration


def test_dev_consumer_delivers_enqueued_messages(tmp_path: Path) -> None:
    data = tmp_path / "phxq-data"
    base = free_base_port()
    proc = _start_dev(data, base)
    try:
        config = data / "cluster.toml"
        stores = [f"127.0.0.1:{p}" for p in dev_ports(base, 3)[0]]
        creds = client_options(load_config(config))  # the dev cluster is secure by default
        with phxq.SyncClient(stores, **creds) as client:
            ack = client.enqueue("orders", b"hello consumer", key="user-7")
        log = data / "logs" / "consumerdev.log"
        expected = f"q{ack.queue} @{ack.offset} key=user-7 attempt=1: b'hello consumer'"
        deadline = time.monotonic() + 30
        while expected not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "not delivered:\n" + log.read_text()[-3000:]
            time.sleep(0.1)
        status = subprocess.run(
            [sys.executable, "-m", "phxq", "admin", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert "consumers: dev (weight 1)" in status
        assert status.count(" dev#") == 8  # every pair of group "log" (8 queues)
    finally:
        _stop_dev(proc)
