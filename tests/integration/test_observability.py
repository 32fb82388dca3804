"""Observability of real daemons: each one serves only its own Prometheus series (a consumer's
endpoint comes from its ``[[consumer]]`` table), ``--log-format json`` (PHXQ_LOG_FORMAT) gives
one JSON object per line, a clean first start logs nothing at WARNING or above, and a handler
that raises on every message logs its traceback once per interval, not once per failure."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

import phxq
from phxq.devcluster import (
    DEV_CONSUMER,
    PortInUse,
    ProcessCluster,
    free_ports,
    metrics_addresses,
    prepare_dev,
    write_dev_config,
)

pytestmark = pytest.mark.integration

HANDLER = """
def handle(delivery):
    if delivery.payload.startswith(b"fail"):
        raise ValueError("cannot bill " + delivery.payload.decode())
"""
GROUP = """
[[consumer_group]]
name = "billing"
topic = "orders"
handler = "billing_hook:handle"
max_attempts = 3
"""


def scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def try_scrape(addr: str) -> str:
    """The endpoint's text, or "" while it is not listening yet."""
    try:
        return scrape(addr)
    except OSError:
        return ""


def records(path: Path) -> list[dict[str, object]]:
    """Every line of a daemon's log as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_daemons_export_their_own_series_log_json_and_rate_limit_handler_tracebacks(
    tmp_path: Path,
) -> None:
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "billing_hook.py").write_text(HANDLER)
    ports = free_ports(13)
    path = write_dev_config(
        tmp_path / "c",
        groups=4,
        store_ports=ports[0:3],
        lock_ports=ports[3:6],
        metrics_ports=ports[6:9],
        lock_metrics_ports=ports[9:12],
        consumer_metrics={"c1": ports[12]},
        extra=GROUP,
    )
    pythonpath = os.pathsep.join(
        filter(None, [str(tmp_path / "hooks"), os.environ.get("PYTHONPATH")])
    )
    env = {"PHXQ_LOG_FORMAT": "json", "PYTHONPATH": pythonpath}
    cluster = ProcessCluster(path, locks=True, env=env)
    try:
        cluster.start()
        cluster.wait_ready(timeout=30)
        cluster.start_node("consumer", "c1")  # no --metrics-addr: [[consumer]] gives it
        addrs = dict(metrics_addresses(cluster.config, "c1"))
        assert len(addrs) == 7, addrs
        consumer_addr = addrs["consumer c1"]
        wait_for(lambda: "phxq_consumer_pairs_owned{" in try_scrape(consumer_addr), 30, "c1 owns")

        # Each daemon exports only its own series.
        store, lock, consumer = (
            scrape(addrs["store 1"]),
            scrape(addrs["lock node 1"]),
            scrape(consumer_addr),
        )
        assert "phxq_enqueue_latency_seconds_bucket" in store and "phxq_consumer_" not in store
        assert "phxq_masters_held" in lock and "phxq_fsync_latency_seconds_count" in lock
        assert "phxq_enqueue_latency" not in lock and "phxq_consumer_" not in lock
        assert "phxq_consumer_pairs_owned" in consumer
        assert "phxq_fsync_latency" not in consumer and "phxq_masters_held" not in consumer

        # A clean first start: JSON lines only, nothing at WARNING or above.
        logs = cluster.log_dir
        assert logs is not None
        for log in sorted(logs.glob("*.log")):
            rows = records(log)
            assert rows and {"time", "level", "daemon", "logger", "message"} <= set(rows[0])
            loud = [r for r in rows if r["level"] in ("WARNING", "ERROR", "CRITICAL")]
            assert not loud, (log.name, loud)

        # A handler raising on every message: many failures, one traceback per interval.
        with phxq.SyncClient(cluster.store_addresses) as client:
            client.enqueue_many("orders", [(b"fail-%d" % i, "same-key") for i in range(3)])
        wait_for(
            lambda: sample(scrape(consumer_addr), "phxq_consumer_failed_total") >= 4,
            60,
            "four failed attempts",
        )
        rows = records(logs / "consumerc1.log")
        tracebacks = [r for r in rows if "traceback" in r]
        failures = [r for r in rows if "failed: ValueError" in str(r["message"])]
        assert len(failures) >= 4, rows
        assert len(tracebacks) == 1, tracebacks
        assert tracebacks[0]["level"] == "WARNING"
        assert "billing_hook:handle raised" in str(tracebacks[0]["message"])
        assert "ValueError: cannot bill fail-0" in str(tracebacks[0]["traceback"])
    finally:
        cluster.stop()


def test_phxq_dev_turns_metrics_on_for_every_daemon(tmp_path: Path) -> None:
    for base in sorted(free_ports(3)):
        if base > 65535 - 400:
            continue
        try:
            config_path, resumed = prepare_dev(tmp_path / str(base), base_port=base, secure=False)
        except PortInUse:
            continue  # something listens in this range: another try
        break
    else:
        raise AssertionError("no free dev port range among three candidates")
    from phxq.config import load_config

    addrs = dict(metrics_addresses(load_config(config_path), DEV_CONSUMER))
    assert not resumed
    assert addrs == {
        "store 1": f"127.0.0.1:{base + 300}",
        "store 2": f"127.0.0.1:{base + 301}",
        "store 3": f"127.0.0.1:{base + 302}",
        "lock node 1": f"127.0.0.1:{base + 310}",
        "lock node 2": f"127.0.0.1:{base + 311}",
        "lock node 3": f"127.0.0.1:{base + 312}",
        f"consumer {DEV_CONSUMER}": f"127.0.0.1:{base + 320}",
    }
