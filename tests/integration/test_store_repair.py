"""A replica that may have forgotten votes rebuilds from its peers before it votes again (real
processes): a flipped byte in the middle of a follower's log, and a store restarted on an empty
data directory (a replaced disk), follower or master. See ``phxq.replication.rejoin``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import phxq
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.lock import LockClient
from phxq.net.rpc import RpcPool

from .conftest import wait_until
from .test_lock_cluster import lock_cluster, lock_master

pytestmark = pytest.mark.integration

TOPIC = "orders"


@pytest.fixture
def small_segments(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=1, cluster_options='segment_bytes = "8KiB"')


async def fill(client: phxq.Client, n: int, tag: str) -> list[phxq.Ack]:
    payload = b"x" * 300
    return [
        await client.enqueue(TOPIC, payload + f"{tag}{i}".encode(), queue=i % 8) for i in range(n)
    ]


async def status(pool: RpcPool, cluster: ProcessCluster, node: int) -> dict[str, Any]:
    result: dict[str, Any] = await pool.call(cluster.store_address(node), "status", {}, timeout=2)
    return result


async def group0(pool: RpcPool, cluster: ProcessCluster, node: int) -> dict[str, Any]:
    group: dict[str, Any] = (await status(pool, cluster, node))["groups"][0]
    return group


async def votes_again(pool: RpcPool, cluster: ProcessCluster, node: int) -> dict[str, Any]:
    async def whole() -> dict[str, Any] | None:
        g = await group0(pool, cluster, node)
        ok = g["repair"] is None and g["failed"] is None and not g["needs_repair"]
        return g if ok else None

    result: dict[str, Any] = await wait_until(whole, 30, f"store {node} to vote again")
    return result


async def replicas_agree(pool: RpcPool, cluster: ProcessCluster, nodes: list[int]) -> None:
    async def same() -> bool:
        views = [await group0(pool, cluster, n) for n in nodes]
        return len({(v["chosen_up_to"], v["checksum"]) for v in views}) == 1

    await wait_until(same, 20, f"stores {nodes} to agree on chosen_up_to and checksum")


async def read_all(client: phxq.Client) -> dict[bytes, int]:
    seen: dict[bytes, int] = {}
    for q in range(8):
        after = None
        while True:
            msgs = await client.dequeue("billing", TOPIC, queue=q, after=after, limit=500)
            if not msgs:
                break
            seen.update((m.payload, m.offset) for m in msgs)
            after = msgs[-1].offset
    return seen


def assert_all_present(acks: list[phxq.Ack], payloads: list[bytes], seen: dict[bytes, int]) -> None:
    missing = [p for p in payloads if p not in seen]
    assert not missing, f"{len(missing)} acked messages lost, e.g. {missing[:3]}"
    assert [seen[p] for p in payloads] == [a.offset for a in acks]


def tagged(n: int, tag: str) -> list[bytes]:
    return [b"x" * 300 + f"{tag}{i}".encode() for i in range(n)]


async def test_a_follower_with_a_flipped_byte_repairs_from_its_peers_and_votes_again(
    small_segments: ProcessCluster,
) -> None:
    cluster = small_segments
    async with (
        phxq.Client(cluster.store_addresses, retry_timeout=10.0) as client,
        RpcPool() as pool,
    ):
        acks = await fill(client, 80, "c")
        cluster.kill(3)
        group_dir = cluster.config.store(3).data / "g0000"
        segments = sorted(group_dir.glob("*.plog"))
        assert len(segments) >= 2, segments
        with open(segments[0], "r+b") as f:  # flip one byte in the middle of an older segment
            f.seek(3000)
            byte = f.read(1)
            f.seek(3000)
            f.write(bytes([byte[0] ^ 0xFF]))
        cluster.restart(3)
        await votes_again(pool, cluster, 3)
        assert (group_dir / "repaired").exists(), "the repair is recorded for the next start"
        assert "repaired" in cluster.logs("store", 3, tail=400)
        acks += await fill(client, 5, "d")
        await replicas_agree(pool, cluster, [1, 2, 3])
        cluster.kill(2)  # nodes 1 and 3 are a majority only if the repaired node votes
        acks += await fill(client, 5, "e")
        await replicas_agree(pool, cluster, [1, 3])
        seen = await read_all(client)
        assert_all_present(acks, tagged(80, "c") + tagged(5, "d") + tagged(5, "e"), seen)
        cluster.kill(3)  # a restart keeps it whole: the repaired region is not damage any more
        cluster.restart(3)
        await votes_again(pool, cluster, 3)


async def test_an_empty_data_directory_joins_and_votes_only_once_rebuilt(
    small_segments: ProcessCluster,
) -> None:
    cluster = small_segments
    async with phxq.Client(cluster.store_addresses, retry_timeout=3.0) as client, RpcPool() as pool:
        acks = await fill(client, 60, "a")
        cluster.kill(3)
        shutil.rmtree(cluster.config.store(3).data)  # the disk was replaced
        cluster.kill(2)
        cluster.restart(3)

        async def joining() -> dict[str, Any] | None:
            s = await status(pool, cluster, 3)
            g = s["groups"][0]
            return s if s["membership"] == "joining" and g["repair"] == "joining" else None

        s = await wait_until(joining, 20, "store 3 to join (not vote)")
        assert "2" in s["groups"][0]["repair_reason"], s["groups"][0]
        with pytest.raises(phxq.Unavailable):  # node 3 must not vote with node 1
            await fill(client, 1, "never")
        assert not (cluster.config.store(3).data / "MEMBER").exists()

        cluster.restart(2)
        g = await votes_again(pool, cluster, 3)
        assert g["chosen_up_to"] >= 60

        async def member() -> bool:  # written once every group is whole, just after it resumes
            return (await status(pool, cluster, 3))["membership"] == "member"

        await wait_until(member, 10, "store 3 to write MEMBER once rebuilt")
        assert (cluster.config.store(3).data / "MEMBER").exists()
        client_acks = await fill(client, 5, "b")
        cluster.kill(1)  # nodes 2 and 3 are a majority only if the rebuilt node votes
        client_acks += await fill(client, 5, "f")
        await replicas_agree(pool, cluster, [2, 3])
        seen = await read_all(client)
        assert_all_present(
            acks + client_acks, tagged(60, "a") + tagged(5, "b") + tagged(5, "f"), seen
        )


async def test_a_master_restarted_on_an_empty_directory_joins_then_takes_its_group_back(
    small_segments: ProcessCluster,
) -> None:
    cluster = small_segments
    async with (
        phxq.Client(cluster.store_addresses, retry_timeout=10.0) as client,
        RpcPool() as pool,
    ):
        assert (await group0(pool, cluster, 1))["is_master"]  # group 0 prefers node 1
        acks = await fill(client, 60, "m")
        cluster.kill(1)
        shutil.rmtree(cluster.config.store(1).data)
        acks += await fill(client, 10, "n")  # nodes 2 and 3 elect a master meanwhile
        cluster.restart(1)
        await votes_again(pool, cluster, 1)

        async def back() -> bool:
            return bool((await group0(pool, cluster, 1))["is_master"])

        await wait_until(back, 30, "node 1 to take group 0 back after rebuilding")
        acks += await fill(client, 5, "o")
        cluster.kill(3)  # nodes 1 and 2: node 1 must vote (and lead)
        acks += await fill(client, 5, "p")
        await replicas_agree(pool, cluster, [1, 2])
        seen = await read_all(client)
        expected = tagged(60, "m") + tagged(10, "n") + tagged(5, "o") + tagged(5, "p")
        assert_all_present(acks, expected, seen)


@pytest.fixture
def short_retention(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    options = 'segment_bytes = "8KiB"\nretention_interval = "200ms"'
    return make_cluster(groups=1, cluster_options=options, topic_retention="1s")


async def test_an_empty_directory_behind_every_peers_truncation_joins_from_a_snapshot(
    short_retention: ProcessCluster,
) -> None:
    cluster = short_retention
    async with (
        phxq.Client(cluster.store_addresses, retry_timeout=10.0) as client,
        RpcPool() as pool,
    ):
        await fill(client, 60, "s")

        async def truncated() -> bool:
            await fill(client, 10, "t")  # keep rolling segments so old ones seal and age
            firsts = [(await group0(pool, cluster, n))["first_instance"] for n in (1, 2, 3)]
            return min(firsts) > 5

        await wait_until(truncated, 30, "every store to truncate its log")
        cluster.kill(3)
        shutil.rmtree(cluster.config.store(3).data)
        cluster.restart(3)
        g = await votes_again(pool, cluster, 3)
        assert g["first_instance"] > 1, "it started from a peer's snapshot"
        await replicas_agree(pool, cluster, [1, 2, 3])
        cluster.kill(1)  # nodes 2 and 3 are a majority only if the rebuilt node votes
        await fill(client, 5, "u")
        await replicas_agree(pool, cluster, [2, 3])


@pytest.fixture
def unstarted(tmp_path: Path) -> Iterator[ProcessCluster]:
    ports = free_ports(6)
    path = write_dev_config(tmp_path, groups=2, store_ports=ports[:3], lock_ports=ports[3:])
    cluster = ProcessCluster(path)
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_new_cluster_votes_only_once_every_node_has_answered(
    unstarted: ProcessCluster,
) -> None:
    cluster = unstarted
    cluster.start_node("store", "1")
    cluster.start_node("store", "2")
    async with RpcPool() as pool:

        async def both_probing() -> bool:
            states = [(await status(pool, cluster, n))["membership"] for n in (1, 2)]
            return states == ["probing", "probing"]

        await wait_until(both_probing, 20, "stores 1 and 2 to wait for store 3")
        for _ in range(10):  # no election meanwhile: a new directory does not vote
            for n in (1, 2):
                meta = await pool.call(cluster.store_address(n), "meta", {}, timeout=2.0)
                assert set(meta["masters"].values()) == {None}, meta
            await asyncio.sleep(0.1)
        cluster.start_node("store", "3")
        await cluster.wait_ready_async(30)
        for n in (1, 2, 3):
            assert (await status(pool, cluster, n))["membership"] == "member"
            assert (cluster.config.store(n).data / "MEMBER").exists()


@pytest.fixture
def locks(tmp_path: Path) -> Iterator[ProcessCluster]:
    yield from lock_cluster(tmp_path)


async def test_a_lock_node_restarted_on_an_empty_directory_joins_before_it_votes(
    locks: ProcessCluster,
) -> None:
    await lock_node_rejoins(locks)


async def lock_node_rejoins(cluster: ProcessCluster) -> None:
    async with LockClient(cluster.lock_addresses) as client, RpcPool() as pool:
        token = await client.acquire("pair/orders/1", "a", 60.0)
        await client.kv_put("settings/x", 1)
        master = await lock_master(cluster)
        victim = next(n.id for n in cluster.config.locks if n.id != master)
        cluster.kill(victim, "lock")
        shutil.rmtree(cluster.config.lock(victim).data)
        cluster.restart(victim, "lock")
        addr = cluster.config.lock(victim).addr

        async def member() -> dict[str, Any] | None:
            s: dict[str, Any] = await pool.call(addr, "status", {}, timeout=2.0)
            return s if s["membership"] == "member" and s["repair"] is None else None

        s = await wait_until(member, 30, f"lock {victim} to rejoin")
        assert s["chosen_up_to"] > 0
        cluster.kill(master, "lock")  # the other survivor needs the rejoined node's vote
        info = await client.get("pair/orders/1")
        assert info is not None and (info.owner, info.token) == ("a", token)
        assert (await client.kv_get("settings/x"))[0] == 1
