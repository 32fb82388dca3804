"""Retention with real processes: the log is truncated behind a durable snapshot, a restarted
store recovers from it, and a replica that fell behind every peer's truncation point catches
up from a peer's snapshot plus the retained log."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import phxq
from phxq.devcluster import ProcessCluster
from phxq.net.rpc import RpcPool

from .conftest import replica_views, wait_until

pytestmark = pytest.mark.integration

TOPIC = "orders"
OPTIONS = 'segment_bytes = "8KiB"\nretention_interval = "200ms"'


async def fill(client: phxq.Client, n: int, tag: str) -> list[phxq.Ack]:
    payload = b"x" * 300
    return [
        await client.enqueue(TOPIC, payload + f"{tag}{i}".encode(), queue=i % 8) for i in range(n)
    ]


async def group0(pool: RpcPool, cluster: ProcessCluster, node: int) -> dict[str, Any]:
    status = await pool.call(cluster.store_address(node), "status", {}, timeout=2.0)
    group: dict[str, Any] = status["groups"][0]
    return group


@pytest.fixture
def short_retention(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=1, cluster_options=OPTIONS, topic_retention="1s")


async def test_truncation_snapshot_recovery_and_snapshot_transfer(
    short_retention: ProcessCluster,
) -> None:
    cluster = short_retention
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        early = await client.enqueue(TOPIC, b"keep-once", queue=1, dedup_id="early-1")
        acks = await fill(client, 60, "a")
        await client.commit("billing", TOPIC, queue=3, offset=acks[3].offset, token=5)
        cluster.kill(3)
        behind = (await group0(pool, cluster, 1))["chosen_up_to"]

        async def truncated_past_node3() -> bool:
            await fill(client, 10, "b")  # keep rolling segments so old ones seal and age
            firsts = [(await group0(pool, cluster, n))["first_instance"] for n in (1, 2)]
            return min(firsts) > behind + 1

        await wait_until(truncated_past_node3, 40, "stores 1 and 2 truncate past node 3")

        # a retried enqueue is still deduplicated: the dedup window lives in the snapshot
        again = await client.enqueue(TOPIC, b"keep-once", queue=1, dedup_id="early-1")
        assert again.duplicate and again.offset == early.offset

        cluster.restart(3)

        async def converged() -> bool:
            views = await replica_views(pool, cluster)
            marks = {
                (v["groups"][0]["chosen_up_to"], v["groups"][0]["checksum"]) for v in views.values()
            }
            return len(views) == 3 and len(marks) == 1

        await wait_until(converged, 30, "node 3 catches up through a snapshot")
        node3 = await group0(pool, cluster, 3)
        assert node3["failed"] is None and node3["first_instance"] > behind + 1
        assert "installed a peer's snapshot" in cluster.logs("store", 3, tail=400)

        # node 3's state came with the snapshot: same cursor, same messages after it, from the
        # first instance every replica still holds (replicas truncate independently: node 3
        # lacks what its snapshot's sender had already dropped by retention)
        async def local_read(node: int) -> list[Any]:
            params = {"group": "billing", "topic": TOPIC, "queue": 3, "local": True, "limit": 1000}
            rows = await pool.call(cluster.store_address(node), "dequeue", params, timeout=2)
            views = await replica_views(pool, cluster)
            floor = max(v["groups"][0]["first_instance"] for v in views.values())
            return [r for r in rows if r[0] >> 20 >= floor]

        assert await local_read(3) == await local_read(1)

        # a store restarted after truncating recovers from its own snapshot
        cluster.kill(1)
        cluster.restart(1)
        await wait_until(converged, 30, "node 1 recovers from its snapshot and rejoins")
        assert (await group0(pool, cluster, 1))["failed"] is None
        assert await local_read(1) == await local_read(3)
        assert await client.cursor("billing", TOPIC, queue=3) == acks[3].offset
        after = await client.enqueue(TOPIC, b"keep-once", queue=1, dedup_id="early-1")
        assert after.duplicate and after.offset == early.offset


BILLING = '\n[[consumer_group]]\nname = "billing"\ntopic = "orders"\nhandler = "http://127.0.0.1:9/hook"\n'


@pytest.fixture
def with_billing(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=2, extra=BILLING)


async def test_admin_status_reports_consumer_lag_per_queue(with_billing: ProcessCluster) -> None:
    cluster = with_billing
    async with phxq.Client(cluster.store_addresses) as client:
        acks = [await client.enqueue(TOPIC, b"m%d" % i, queue=3) for i in range(8)]
        await client.enqueue(TOPIC, b"other", queue=4)
        await client.commit("billing", TOPIC, queue=3, offset=acks[4].offset, token=1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phxq",
        "admin",
        "status",
        "--config",
        str(cluster.config_path),
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    rows = [r for st in json.loads(out)["stores"].values() for r in st.get("consumers", [])]
    by_queue = {r["queue"]: r for r in rows if r["group"] == "billing"}
    assert sorted(by_queue) == list(range(8))  # every queue reported once, by its master
    assert (by_queue[3]["cursor"], by_queue[3]["lag"]) == (acks[4].offset, 3)
    assert (by_queue[4]["cursor"], by_queue[4]["lag"]) == (None, 1)
    assert by_queue[0]["lag"] == 0


@pytest.fixture
def small_segments(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=1, cluster_options='segment_bytes = "8KiB"')


async def test_a_replica_with_a_corrupt_log_votes_only_once_repaired(
    small_segments: ProcessCluster,
) -> None:
    cluster = small_segments
    async with phxq.Client(cluster.store_addresses, retry_timeout=3.0) as client, RpcPool() as pool:
        await fill(client, 80, "c")
        cluster.kill(3)
        segments = sorted((cluster.config.store(3).data / "g0000").glob("*.plog"))
        assert len(segments) >= 2, segments
        with open(segments[0], "r+b") as f:  # flip one byte in the middle of an older segment
            f.seek(3000)
            byte = f.read(1)
            f.seek(3000)
            f.write(bytes([byte[0] ^ 0xFF]))
        cluster.kill(2)  # the repair needs every other member: node 3 cannot finish it yet
        cluster.restart(3)

        async def reports_damage() -> dict[str, Any] | None:
            g = await group0(pool, cluster, 3)
            return g if g["needs_repair"] and g["repair"] == "repairing" else None

        await wait_until(reports_damage, 20, "node 3 reports its damaged log")
        with pytest.raises(phxq.Unavailable):  # node 3 must not vote with node 1
            await fill(client, 1, "e")
        assert (await group0(pool, cluster, 3))["failed"]

        cluster.restart(2)  # now it rebuilds from both peers and votes again

        async def repaired() -> dict[str, Any] | None:
            g = await group0(pool, cluster, 3)
            return g if g["repair"] is None and not g["needs_repair"] else None

        await wait_until(repaired, 30, "node 3 to repair its log")
        cluster.kill(2)
        await fill(client, 5, "d")  # nodes 1 and 3 are a majority now


def test_a_second_daemon_on_the_same_data_directory_refuses_to_start(
    small_segments: ProcessCluster,
) -> None:
    cluster = small_segments
    cmd = [sys.executable, "-m", "phxq", "store", "--config", str(cluster.config_path)]
    second = subprocess.run([*cmd, "--node", "2"], capture_output=True, timeout=60)
    assert second.returncode != 0
    assert b"in use by another process" in second.stdout + second.stderr
    assert cluster.alive(2)  # the running daemon is untouched
