"""MapWatch: the consumer tier's long poll of the cluster map (MemoryLocks' kv_wait)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from phxq import mapstore
from phxq.config import TopicConfig
from phxq.consumer.locking import MemoryLocks
from phxq.consumer.mapwatch import MapWatch
from phxq.topology import Topology, deal


def _map(version: int, queues: int) -> Topology:
    spec = TopicConfig(name="orders", queues=queues, retention=60.0, max_message_bytes=1024)
    return Topology(version, (1,), {"orders": spec}, {"orders": deal(queues, [1])})


async def test_every_newer_map_is_handed_over_in_order_and_bad_ones_skipped() -> None:
    locks = MemoryLocks()
    seen: list[tuple[int, int]] = []
    got = asyncio.Event()

    async def changed(topo: Topology) -> None:
        seen.append((topo.version, topo.topics["orders"].queues))
        got.set()

    async def step(value: object) -> None:
        got.clear()
        await locks.kv_put(mapstore.MAP_KEY, value)

    watch = MapWatch(locks, changed)
    task = asyncio.ensure_future(watch.run())
    try:
        await step(_map(1, 2).to_wire())
        await asyncio.wait_for(got.wait(), 2)
        await step({"version": 5, "topics": "garbage"})  # unreadable: skipped, still watching
        await asyncio.sleep(0.05)
        await step(replace(_map(1, 2), version=1).to_wire())  # not newer: ignored
        await asyncio.sleep(0.05)
        await step(_map(2, 4).to_wire())
        await asyncio.wait_for(got.wait(), 2)
        assert seen == [(1, 2), (2, 4)] and watch.version == 2
    finally:
        task.cancel()
