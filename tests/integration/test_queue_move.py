"""``phxq admin queue move`` with real processes: two store sets of three stores and a lock
service; a queue moves from set 1 to set 2 under continuous enqueues (dedup ids, several keys)
with a dequeue + commit consumer, a tail and a managed consumer, while every store of the target
set is down when the move is recorded (it waits, shown by ``admin status``; it is cancelled and
asked again; it completes when they return) and the source set's master of the queue's group is
SIGKILLed during the move. Every acked message is read exactly once at its acked offset,
per-key order holds, offsets increase across the move and the cursors are exact at the end.
Then the queue moves back (a third segment) and reads stay whole and ordered."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

import phxq
from phxq import admin
from phxq.devcluster import ProcessCluster
from phxq.errors import Unavailable, VersionMismatch
from phxq.net.rpc import RpcPool
from phxq.routing import queue_for_key

from .conftest import group_master, wait_until

pytestmark = pytest.mark.integration

TOPIC, QUEUE, QUEUES = "orders", 0, 8
KEYS = [k for k in (f"user-{i}" for i in range(200)) if queue_for_key(k, QUEUES) == QUEUE][:6]
CG = "movers"


@pytest.fixture
def sets_with_locks(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(nodes=3, groups=4, sets=2, locks=True, wait_locks=True)


class Load:
    """Producers (one message per key in flight, retried with its dedup id) and a consumer
    (dequeue after its last offset, commit each page with the previous cursor as ``expect``)."""

    def __init__(self, client: phxq.Client) -> None:
        self.client = client
        self.stop = asyncio.Event()
        self.produced = asyncio.Event()  # every producer saw its last ack
        self.acked: dict[str, int] = {}  # dedup id -> offset
        self.read: list[phxq.Message] = []
        self.cursor: int | None = None

    async def produce(self, key: str) -> None:
        seq = 0
        while not self.stop.is_set():
            dedup_id = f"{key}/{seq}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    ack = await self.client.enqueue(
                        TOPIC, dedup_id.encode(), key=key, dedup_id=dedup_id
                    )
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, f"{dedup_id} never acked"
            assert ack.queue == QUEUE
            self.acked[dedup_id] = ack.offset  # type: ignore[assignment]
            seq += 1
            await asyncio.sleep(0.003)

    async def consume(self) -> None:
        after: int | None = None
        while True:
            try:
                page = await self.client.dequeue(
                    CG, TOPIC, queue=QUEUE, after=after, limit=100, wait=0.2
                )
            except Unavailable:
                continue
            if not page:
                if self.produced.is_set() and set(self.acked.values()) <= {
                    m.offset for m in self.read
                }:
                    return
                continue
            self.read.extend(page)
            after = page[-1].offset
            while True:
                try:
                    await self.client.commit(
                        CG, TOPIC, queue=QUEUE, offset=after, token=1, expect=self.cursor
                    )
                    break
                except Unavailable:
                    continue
                except VersionMismatch:
                    # A retried commit whose first attempt went through (its answer was lost):
                    # the consumer tier's rule, the cursor must be where we put it.
                    assert await self.client.cursor(CG, TOPIC, queue=QUEUE) == after
                    break
            self.cursor = after


async def test_a_queue_moves_under_load_through_crashes(sets_with_locks: ProcessCluster) -> None:
    cluster = sets_with_locks
    cfg = cluster.config
    target = [s.id for s in cfg.set_stores(2)]
    async with RpcPool() as pool, phxq.Client(cluster.store_addresses, retry_timeout=20) as client:
        topo = await wait_until(
            lambda: client.cluster_map(refresh=True), 20, "the cluster map from a store"
        )
        assert topo.route(TOPIC, QUEUE)[0] == 1
        load = Load(client)
        async with asyncio.TaskGroup() as tg:
            producers = [tg.create_task(load.produce(key)) for key in KEYS]
            consumer = tg.create_task(load.consume())
            tail = client.tail(TOPIC, from_="start", queues=[QUEUE])
            tailed: list[int] = []
            managed: list[int] = []  # Client.consume: lock-guarded, commits with its token

            stream = client.consume("managed", TOPIC, queues=[QUEUE])

            async def consume_managed() -> None:
                async for msg in stream:
                    managed.append(msg.offset)

            managing = tg.create_task(consume_managed())
            await wait_until(lambda: _at_least(load.acked, 150), 20, "acks before the move")

            # The target set is down: the move is recorded and waits (admin status shows it).
            for node in target:
                cluster.kill(node)
            row = await admin.queue_move(cfg, TOPIC, QUEUE, 2, wait=False)
            assert row["state"] == "pending" and row["from"] == 1 and row["to"] == 2

            async def shown() -> bool:
                moves = (await admin.status(cfg)).moves()
                return [(m["topic"], m["queue"], m["to"]) for m in moves] == [(TOPIC, QUEUE, 2)]

            await wait_until(shown, 15, "admin status listing the move")
            # Cancelled before its seal (set 1 decides, in its log), then asked again.
            cancelled = await admin.queue_move_cancel(cfg, TOPIC, QUEUE)
            assert cancelled["state"] == "cancelled" and cancelled["move"] == row["move"]

            async def none_shown() -> bool:
                return (await admin.status(cfg)).moves() == []

            await wait_until(none_shown, 15, "admin status without the cancelled move")
            row = await admin.queue_move(cfg, TOPIC, QUEUE, 2, wait=False)
            assert row["state"] == "pending" and row["move"] != cancelled["move"]
            await wait_until(shown, 15, "admin status listing the second move")
            acked_before = len(load.acked)
            await wait_until(
                lambda: _at_least(load.acked, acked_before + 50), 20, "enqueues on set 1"
            )

            # The target set returns and drives the move; the source's master dies meanwhile.
            for node in target:
                cluster.restart(node)
            source_master = await group_master(
                pool, cluster, QUEUE % cfg.cluster.groups, set_number=1
            )
            cluster.kill(source_master)

            async def moved() -> bool:
                cmap = await client.cluster_map(refresh=True)
                return cmap.route(TOPIC, QUEUE)[0] == 2

            await wait_until(moved, 40, "the move to complete")
            sealed = (await client.cluster_map()).history[TOPIC][QUEUE][-1][1]
            moved_at = len(load.acked)
            await wait_until(lambda: _at_least(load.acked, moved_at + 150), 20, "enqueues on set 2")
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*producers), 30)
            load.produced.set()
            await asyncio.wait_for(consumer, 30)

            async def follow() -> None:
                async for msg in tail:  # a tail from the start reads across the move too
                    tailed.append(msg.offset)
                    if len(tailed) == len(load.read):
                        return

            await asyncio.wait_for(follow(), 30)
            await tail.aclose()

            async def managed_done() -> bool:
                return set(load.acked.values()) <= set(managed)

            await wait_until(managed_done, 30, "the managed consumer to read every message")
            await stream.aclose()  # hands the queue over: commits, then releases its lock
            await asyncio.wait_for(managing, 10)

        # Every acked message read exactly once, at its acked offset; offsets increase.
        offsets = [m.offset for m in load.read]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        by_offset = {m.offset: m.payload.decode() for m in load.read}
        for dedup_id, offset in load.acked.items():
            assert by_offset.get(offset) == dedup_id, f"{dedup_id} acked at {offset}"
        assert sorted(by_offset.values()) == sorted(load.acked)  # nothing else, once each
        assert any(o > sealed for o in load.acked.values())  # stored on set 2, above the seal
        assert any(o < sealed for o in load.acked.values())
        # Per key, the sequence numbers come in order.
        per_key: dict[str, list[int]] = defaultdict(list)
        for m in load.read:
            key, seq = m.payload.decode().split("/")
            per_key[key].append(int(seq))
        for key, seqs in per_key.items():
            assert seqs == sorted(seqs), f"key {key} reordered"
        # The cursor is exact, read back across both sets; a fresh reader sees the same queue.
        assert await client.cursor(CG, TOPIC, queue=QUEUE) == offsets[-1]
        again: list[int] = []
        after = None
        while page := await client.dequeue(None, TOPIC, queue=QUEUE, after=after, limit=500):
            again.extend(m.offset for m in page)
            after = page[-1].offset
        assert again == offsets
        assert tailed == offsets
        # The managed consumer: every message, first deliveries in queue order (a redelivery
        # repeats a suffix at most), and its cursor committed up to what it processed.
        assert list(dict.fromkeys(managed)) == offsets
        assert await client.cursor("managed", TOPIC, queue=QUEUE) in offsets[-2:]
        # A tail from a time reads only what came after it, on the new set.
        when = datetime.now(UTC)
        last = await client.enqueue(TOPIC, b"last", key=KEYS[0])
        async with client.tail(TOPIC, from_=when, queues=[QUEUE]) as since:
            first = await asyncio.wait_for(anext(aiter(since)), 20)
        assert (first.offset, first.payload) == (last.offset, b"last") and last.offset > sealed
        cmap = await client.cluster_map(refresh=True)
        assert cmap.route(TOPIC, QUEUE)[0] == 2 and cmap.history[TOPIC][QUEUE] == [(1, sealed)]

        # And back to set 1 (one surviving store there was killed): a third segment.
        back = await admin.queue_move(cfg, TOPIC, QUEUE, 1, timeout=30)
        assert back["state"] == "done" and back["sealed"] > last.offset
        more = [
            await client.enqueue(TOPIC, f"back/{i}".encode(), key=KEYS[0], dedup_id=f"back/{i}")
            for i in range(20)
        ]
        assert all(a.offset > back["sealed"] for a in more)
        again, after = [], None
        while page := await client.dequeue(None, TOPIC, queue=QUEUE, after=after, limit=500):
            again.extend(m.offset for m in page)
            after = page[-1].offset
        assert again == [*offsets, last.offset, *(a.offset for a in more)]
        cmap = await client.cluster_map(refresh=True)
        assert cmap.history[TOPIC][QUEUE] == [(1, sealed), (2, back["sealed"])]


async def _at_least(acked: dict[str, int], count: int) -> bool:
    return len(acked) >= count
