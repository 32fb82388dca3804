"""The cluster map in the lock service's KV, with real processes: seeded at first start, topics
created and altered online while a producer runs, stale clients redirected, and stores serving
with their last map while the lock service is down (also across a restart)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

import phxq
from phxq import admin
from phxq.devcluster import ProcessCluster
from phxq.errors import BadArgument, StaleMap, UnknownTopic
from phxq.net.rpc import RpcPool

from .conftest import phxq_admin, wait_until

pytestmark = pytest.mark.integration


async def _versions(pool: RpcPool, cluster: ProcessCluster) -> set[int]:
    out = set()
    for s in cluster.config.stores:
        if cluster.alive(s.id):
            meta = await pool.call(s.addr, "meta", {}, timeout=1.0)
            out.add(meta["map"]["version"])
    return out


async def _produce(client: phxq.Client, stop: asyncio.Event, acked: list[phxq.Ack]) -> None:
    i = 0
    while not stop.is_set():
        acked.append(await client.enqueue("orders", f"p{i}".encode(), key=f"k{i % 50}"))
        i += 1
        await asyncio.sleep(0.002)


@pytest.fixture
def map_cluster(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(nodes=3, groups=4, sets=2, locks=True, wait_locks=True)


async def test_topics_change_online_and_stale_clients_follow(map_cluster: ProcessCluster) -> None:
    cluster = map_cluster
    cfg = cluster.config
    addrs = cluster.store_addresses
    async with RpcPool() as pool:
        # Every store seeded or adopted the same map: version 1, the config's topics.
        await wait_until(lambda: _is(_versions(pool, cluster), {1}), 20, "map version 1")
        async with phxq.Client(addrs) as stale, phxq.Client(addrs) as producer:
            assert (await stale.cluster_map()).version == 1
            stop, acked = asyncio.Event(), []
            producing = asyncio.ensure_future(_produce(producer, stop, acked))

            row = await admin.topic_create(cfg, "events", queues=4, sets=[2])
            assert row["placement"] == [2, 2, 2, 2] and row["map_version"] == 2
            assert sorted(row["confirmed"]) == [1, 2, 3, 4, 5, 6]
            with pytest.raises(BadArgument, match="already exists"):
                await admin.topic_create(cfg, "events", queues=1)
            # A client that never heard of the topic finds it by itself.
            ack = await stale.enqueue("events", b"e", queue=3)
            assert ack.queue == 3 and (await stale.cluster_map()).version == 2

            row = await admin.topic_alter(cfg, "orders", queues=12, retention=3600.0)
            assert row["placement"][:8] == [1, 2, 1, 2, 1, 2, 1, 2]  # old queues stay
            assert row["placement"][8:] == [1, 1, 1, 1]  # set 2 holds events: least loaded
            assert row["map_version"] == 3
            # A request routed with map 2 is refused with the typed redirect...
            params = {"topic": "orders", "batches": [[0, [[b"x", None, {}, None]]]], "map": 2}
            store1 = cfg.store(1).addr
            with pytest.raises(StaleMap) as info:
                await pool.call(store1, "enqueue", params, timeout=2.0)
            assert info.value.version == 3
            # ...which the client follows by itself.
            ack = await stale.enqueue("orders", b"o", queue=1)
            assert (await stale.cluster_map()).version == 3
            ack = await stale.enqueue("orders", b"new queue", queue=11)
            assert ack.queue == 11
            await asyncio.sleep(0.3)
            stop.set()
            await producing
            assert len(acked) > 20
            # The producer crossed both changes without an error; its acks read back.
            for a in acked[-5:]:
                got = await producer.dequeue(None, "orders", queue=a.queue, after=a.offset - 1)
                assert got and got[0].offset == a.offset
        # Managed consumption of the online topic (its queues on set 2), lock-guarded.
        locks = [lk.addr for lk in cfg.locks]
        async with phxq.Client(addrs, locks=locks) as consumer:
            got = []
            async with asyncio.timeout(20):
                async for msg in consumer.consume("readers", "events"):
                    got.append((msg.queue, msg.payload))
                    if len(got) == 1:
                        break
            assert got == [(3, b"e")]
        listed = {r["name"]: r for r in await admin.topic_list(cfg)}
        assert listed["orders"]["queues"] == 12 and listed["events"]["sets"] == [2]
        with pytest.raises(UnknownTopic):
            await admin.topic_describe(cfg, "nope")

        # The thin CLI over the same functions.
        described = json.loads(await phxq_admin(cluster, "topic", "describe", "events", "--json"))
        assert described["placement"] == [2, 2, 2, 2] and described["map_version"] == 3
        with pytest.raises(AssertionError, match="not removed"):
            await phxq_admin(cluster, "topic", "alter", "events", "--queues", "2")

        # The lock service down: the stores keep serving with their last map, also a store
        # restarted meanwhile (from the copy in its data directory).
        for lk in cfg.locks:
            cluster.kill(lk.id, role="lock")
        cluster.kill(4)
        cluster.restart(4)
        await wait_until(lambda: _is(_versions(pool, cluster), {3}), 10, "map 3 everywhere")
        async with phxq.Client([cfg.store(4).addr]) as fresh:
            for q in range(4):
                await fresh.enqueue("events", b"while the map's home is down", queue=q)
            assert (await fresh.cluster_map()).version == 3


async def _is(values: object, expected: set[int]) -> bool:
    return await values == expected  # type: ignore[misc]
