"""Check-back with real processes: a producer process (SyncClient) commits one transaction
with ``with``, prepares two more and is SIGKILLed before deciding; the home group's master
asks the producer group's HTTP check handler (signed like a consumer push), which answers
committed for one and rolled_back for the other: readers see all of the first and none of
the second."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import phxq
from phxq.devcluster import ProcessCluster

from .checkback import CheckHandler, producer_group_toml
from .conftest import wait_until

pytestmark = pytest.mark.integration

TOPIC = "orders"
SECRET = b"a-check-back-secret-of-enough-bytes"

PRODUCER = """
import sys, phxq
with phxq.SyncClient(sys.argv[1].split(",")) as client:
    with client.transaction() as txn:  # committed on exit
        txn.enqueue("orders", b"sync0", queue=0)
    for label in ("yes", "no"):
        txn = client.transaction("checkout", timeout=1.0)
        txn.enqueue("orders", label.encode() + b"0", queue=0)
        txn.enqueue("orders", label.encode() + b"1", queue=1)
        txn.prepare()
        print(label, txn.id, flush=True)
    sys.stdin.read()  # killed here, before deciding
"""


async def test_killed_producer_is_decided_by_the_signed_check_back(
    make_cluster: Callable[..., ProcessCluster],
    check_handler: tuple[CheckHandler, int],
    tmp_path: Path,
) -> None:
    handler, port = check_handler
    handler.secret = SECRET  # every check-back request must come signed with it
    secret = tmp_path / "checkout.secret"
    secret.write_bytes(SECRET)
    extra = producer_group_toml(port, more=f'signing_secret_file = "{secret}"\n')
    cluster = await asyncio.to_thread(make_cluster, groups=2, extra=extra)
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, ",".join(cluster.store_addresses)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert producer.stdout is not None
        ids = {}
        for _ in range(2):
            line = await asyncio.to_thread(producer.stdout.readline)
            label, txn = line.decode().split()
            ids[label] = txn
        handler.answers = {ids["yes"]: "committed", ids["no"]: "rolled_back"}
        producer.send_signal(signal.SIGKILL)
    finally:
        producer.kill()
        producer.wait()

    async with phxq.Client(cluster.store_addresses) as client:

        async def settled() -> bool:
            q0 = [m.payload for m in await client.dequeue(None, TOPIC, queue=0, limit=100)]
            q1 = [m.payload for m in await client.dequeue(None, TOPIC, queue=1, limit=100)]
            status = await client.status()
            closed = sum(g["transactions"]["open"] for g in status["groups"]) == 0
            return closed and q0 == [b"sync0", b"yes0"] and q1 == [b"yes1"]

        await wait_until(settled, 30, "the check-back to commit one and roll back the other")
    assert set(handler.asked) >= set(ids.values())
    assert handler.bad_signatures == 0
