"""``phxq admin reconcile`` against real processes: counts per queue and window, consumer
progress, and the replicas' chain checksums."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable

import pytest

import phxq
from phxq.devcluster import ProcessCluster
from phxq.store.reconcile import reconcile

pytestmark = pytest.mark.integration

TOPIC = "orders"
BILLING = '\n[[consumer_group]]\nname = "billing"\ntopic = "orders"\nhandler = "http://127.0.0.1:9/hook"\n'


@pytest.fixture
def with_billing(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=2, extra=BILLING)


async def test_reconcile_counts_windows_and_flags_unconsumed_messages(
    with_billing: ProcessCluster,
) -> None:
    cluster = with_billing
    async with phxq.Client(cluster.store_addresses) as client:
        old = [await client.enqueue(TOPIC, b"old%d" % i, queue=3) for i in range(4)]
        cut = time.time() + 0.01
        time.sleep(0.05)
        new = [await client.enqueue(TOPIC, b"new%d" % i, queue=3) for i in range(3)]
        await client.enqueue(TOPIC, b"lonely", queue=4)
        await client.commit("billing", TOPIC, queue=3, offset=new[-1].offset, token=1)

        report = await reconcile(cluster.config, TOPIC)
        rows = {r["queue"]: r for r in report.queues}
        assert rows[3]["enqueued"] == 7 and rows[3]["consumed"] == {"billing": 7}
        assert rows[4]["enqueued"] == 1 and rows[4]["consumed"] == {"billing": 0}
        assert report.mismatches == ["queue 4: billing consumed 0 of 1 (unconsumed 1)"]
        assert report.unreachable == []
        assert len(report.checksums) == 2  # both Paxos groups compared, all replicas agree
        assert all(len(set(c["checksums"].values())) == 1 for c in report.checksums)
        assert all(len(c["checksums"]) == 3 for c in report.checksums)

        window = await reconcile(cluster.config, TOPIC, since=cut)
        assert {r["queue"]: r["enqueued"] for r in window.queues}[3] == 3
        early = await reconcile(cluster.config, TOPIC, until=cut)
        assert {r["queue"]: r["enqueued"] for r in early.queues}[3] == len(old)

        code, out = await cli(cluster, "--topic", TOPIC)
        assert code == 1 and "MISMATCH queue 4: billing consumed 0 of 1" in out
        lonely = (await client.dequeue("billing", TOPIC, queue=4))[0]
        await client.commit("billing", TOPIC, queue=4, offset=lonely.offset, token=1)
        code, out = await cli(cluster, "--topic", TOPIC, "--json")
        assert code == 0 and json.loads(out)["mismatches"] == []
        code, out = await cli(cluster, "--topic", TOPIC, "--group", "nobody")
        assert code != 0 and "nobody" in out

        cluster.kill(2)
        degraded = await reconcile(cluster.config, TOPIC)
        assert degraded.unreachable == [2]
        assert degraded.mismatches == []


async def cli(cluster: ProcessCluster, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phxq",
        "admin",
        "reconcile",
        "--config",
        str(cluster.config_path),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()
