"""The pair worker: ordered delivery, fenced commits, loss, handoff, replay, retries and
dead letters. The store is an in-memory stand-in with the store's cursor rules (fencing,
compare-and-set, one-shot seek); the lock service is :class:`MemoryLocks`. The same worker
runs against real daemons in tests/integration/test_consumer_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from phxq.client import Ack, Message
from phxq.config import ConsumerGroupConfig
from phxq.consumer.group import GroupRuntime, Timings
from phxq.consumer.handlers import CallableHandler, Delivery
from phxq.consumer.locking import MemoryLocks
from phxq.consumer.pair import Ownership, PairWorker
from phxq.consumer.settings import GroupSettings
from phxq.errors import BadArgument, StaleToken, VersionMismatch
from phxq.metrics import REGISTRY

FAST = Timings(
    lock_ttl=0.6,
    acquire_retry=0.02,
    long_poll=0.05,
    blocked_probe=0.05,
    commit_interval=0.01,
    backoff_base=0.01,
    backoff_cap=0.05,
    settings_poll=0.05,
)
PAIR = ("billing", "orders", 0)
METRICS = (
    "phxq_consumer_delivered_total",
    "phxq_consumer_acked_total",
    "phxq_consumer_failed_total",
    "phxq_consumer_dead_lettered_total",
    "phxq_consumer_handler_latency_seconds_count",
)


@dataclass
class FakeStore:
    """The store's queue and cursor rules, in memory (see phxq.store.state)."""

    messages: dict[tuple[str, int], list[Message]] = field(default_factory=dict)
    cursors: dict[tuple[str, str, int], int] = field(default_factory=dict)
    tokens: dict[tuple[str, str, int], int] = field(default_factory=dict)
    commits: list[tuple[float, int, int]] = field(default_factory=list)  # (time, offset, token)
    dedup: dict[str, int] = field(default_factory=dict)
    next_offset: int = 1 << 20
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, topic: str, queue: int, payload: bytes, key: str | None = None, **kw: Any) -> int:
        offset = self.next_offset
        self.next_offset += 1 << 20
        msg = Message(topic, queue, offset, payload, key, kw.get("headers") or {}, time.time())
        self.messages.setdefault((topic, queue), []).append(msg)
        self.arrived.set()
        self.arrived = asyncio.Event()
        return offset

    async def dequeue(
        self, group: Any, topic: str, *, queue: int, after: int | None, limit: int, wait: float = 0
    ) -> list[Message]:
        deadline = time.monotonic() + wait
        while True:
            rows = [
                m
                for m in self.messages.get((topic, queue), [])
                if after is None or m.offset > after
            ]
            if rows or time.monotonic() >= deadline:
                return rows[:limit]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), deadline - time.monotonic())

    async def cursor(self, group: str, topic: str, *, queue: int) -> int | None:
        return self.cursors.get((group, topic, queue))

    async def commit(
        self, group: str, topic: str, *, queue: int, offset: int, token: int, expect: Any = ...
    ) -> None:
        key = (group, topic, queue)
        if token < self.tokens.get(key, 0):
            raise StaleToken(f"token {token} < {self.tokens[key]}")
        current = self.cursors.get(key)
        if expect is not ... and expect != current:
            raise VersionMismatch(f"cursor is {current}", {"version": current})
        if current is not None and offset < current:
            raise BadArgument("cursor may not move backwards")
        self.tokens[key] = token
        self.cursors[key] = offset
        self.commits.append((time.monotonic(), offset, token))

    async def seek(self, group: str, topic: str, *, queue: int, offset: int) -> int:
        self.cursors[(group, topic, queue)] = offset - 1
        return offset - 1

    async def enqueue(
        self,
        topic: str,
        payload: bytes,
        *,
        key: str | None = None,
        headers: Any = None,
        dedup_id: str | None = None,
    ) -> Ack:
        if dedup_id is not None and dedup_id in self.dedup:
            return Ack(topic, 0, self.dedup[dedup_id], duplicate=True)
        offset = self.add(topic, 0, payload, key, headers=headers)
        if dedup_id is not None:
            self.dedup[dedup_id] = offset
        return Ack(topic, 0, offset)


def group_config(**kw: Any) -> ConsumerGroupConfig:
    base: dict[str, Any] = {
        "name": "billing",
        "topic": "orders",
        "handler": "unused:unused",
        "max_attempts": 3,
        "dead_letter": "orders.dlq",
    }
    base.update(kw)
    return ConsumerGroupConfig(**base)


def make_worker(
    store: FakeStore,
    locks: MemoryLocks,
    handle: Callable[[Delivery], Awaitable[Any]],
    *,
    owner: str = "c1",
    settings: GroupSettings | None = None,
    **cfg: Any,
) -> PairWorker:
    runtime = GroupRuntime(
        group_config(**cfg),
        CallableHandler(handle, timeout=5.0),
        settings or GroupSettings(None, None),
    )
    return PairWorker(
        PAIR,
        runtime,
        client=store,
        locks=locks,
        owner=owner,
        timings=FAST,
        paxos_group=0,  # type: ignore[arg-type]
    )


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def stop(worker: PairWorker, task: asyncio.Task[None]) -> None:
    worker.drain()
    await asyncio.wait_for(task, 5)


async def test_delivers_in_order_and_commits_with_the_lock_token() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, f"m{i}".encode()) for i in range(50)]
    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        seen.append(d.offset)

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "the cursor at the end")
    assert seen == offsets
    info = await locks.get("cg/billing/orders/0")
    assert info is not None and info.owner == "c1"
    assert {token for _, _, token in store.commits} == {info.token}
    # Batched: fewer commits than messages, but every commit moves forward.
    committed = [offset for _, offset, _ in store.commits]
    assert committed == sorted(committed) and len(committed) < len(offsets)
    later = store.add("orders", 0, b"late")
    await until(lambda: store.cursors.get(PAIR) == later, "a message that arrives later")
    await stop(worker, task)
    assert worker.state is Ownership.RELEASED
    assert await locks.get("cg/billing/orders/0") is None  # released on handoff


async def test_waits_for_a_held_lock_and_resumes_from_the_committed_cursor() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, b"x") for _ in range(10)]
    store.cursors[PAIR] = offsets[4]
    token = await locks.acquire("cg/billing/orders/0", "someone-else", 30)
    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        seen.append(d.offset)

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)
    assert worker.state is Ownership.ACQUIRING and seen == []
    await locks.release("cg/billing/orders/0", "someone-else", token)
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "delivery after the release")
    assert seen == offsets[5:]
    await stop(worker, task)


async def test_lost_lease_stops_at_once_and_commits_nothing_after() -> None:
    store, locks = FakeStore(), MemoryLocks()
    for _ in range(5):
        store.add("orders", 0, b"x")
    release = asyncio.Event()
    started: list[int] = []

    async def handle(d: Delivery) -> None:
        started.append(d.offset)
        if len(started) == 3:
            await release.wait()  # stuck in the handler when the lease goes

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await until(lambda: len(started) == 3, "the third delivery")
    await until(
        lambda: len(store.commits) > 0 and store.commits[-1][1] == started[1], "commit of 2"
    )
    locks.expire("cg/billing/orders/0")
    lost_at = time.monotonic()
    await asyncio.wait_for(task, 5)  # the renewer notices within ttl/3 and the pair stops
    release.set()
    await asyncio.sleep(0.1)
    assert worker.state is Ownership.RELEASED
    assert all(at < lost_at + FAST.lock_ttl for at, _, _ in store.commits)
    assert store.cursors[PAIR] == started[1]  # the abandoned message is not committed
    assert len(started) == 3


async def test_handoff_finishes_the_in_flight_message_commits_then_releases() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, b"x") for _ in range(5)]
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        if d.offset == offsets[2]:
            entered.set()
            await release.wait()
        seen.append(d.offset)

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(entered.wait(), 5)
    worker.drain()
    assert worker.state is Ownership.DRAINING
    await asyncio.sleep(0.05)
    assert await locks.get("cg/billing/orders/0") is not None  # still held while in flight
    release.set()
    await asyncio.wait_for(task, 5)
    assert seen == offsets[:3]  # nothing new started after the drain
    assert store.cursors[PAIR] == offsets[2]
    assert await locks.get("cg/billing/orders/0") is None


async def test_a_newer_owner_fences_the_old_one() -> None:
    store, locks = FakeStore(), MemoryLocks()
    store.add("orders", 0, b"x")
    gate = asyncio.Event()

    async def handle(d: Delivery) -> None:
        await gate.wait()

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.state is Ownership.OWNED, "ownership")
    store.tokens[PAIR] = 10**6  # someone with a newer token committed
    gate.set()
    await asyncio.wait_for(task, 5)
    assert worker.state is Ownership.RELEASED
    assert store.commits == []


async def test_replay_while_idle_is_picked_up_and_delivered_once() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, b"x") for _ in range(10)]
    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        seen.append(d.offset)

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "the first pass")
    await store.seek("billing", "orders", queue=0, offset=offsets[6])
    await until(lambda: len(seen) == 14 and store.cursors[PAIR] == offsets[-1], "the replay")
    await asyncio.sleep(0.2)  # and nothing more
    assert seen == offsets + offsets[6:]
    await stop(worker, task)


async def test_replay_while_busy_is_not_overwritten_by_the_owner() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, b"x") for _ in range(40)]
    seen: list[int] = []
    replayed = False

    async def handle(d: Delivery) -> None:
        nonlocal replayed
        seen.append(d.offset)
        if d.offset == offsets[30] and not replayed:
            replayed = True
            await store.seek("billing", "orders", queue=0, offset=offsets[0])
        await asyncio.sleep(0.001)

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await until(
        lambda: seen.count(offsets[-1]) == 1 and len(seen) > 40, "delivery after the replay"
    )
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "the end")
    await stop(worker, task)
    # Everything from the replay point came again: a second full pass, in order.
    second = seen[seen.index(offsets[0], 1) :]
    assert second == offsets
    assert seen[: len(seen) - len(second)] == offsets[: len(seen) - len(second)]


async def test_failing_message_is_retried_with_backoff_then_dead_lettered_once() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [
        store.add("orders", 0, p, key="k", headers={"h": "1"}) for p in (b"ok", b"bad", b"ok2")
    ]
    attempts: list[tuple[int, int, float]] = []

    async def handle(d: Delivery) -> None:
        attempts.append((d.offset, d.attempt, time.monotonic()))
        if d.payload == b"bad":
            raise RuntimeError("nope")

    def count(metric: str) -> float:
        return REGISTRY.get_sample_value(metric, {"group": "billing"}) or 0.0

    before = {m: count(m) for m in METRICS}
    worker = make_worker(store, locks, handle, max_attempts=3)
    task = asyncio.create_task(worker.run())
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "the queue continuing")
    await stop(worker, task)
    assert {m: count(m) - before[m] for m in METRICS} == {
        "phxq_consumer_delivered_total": 5,
        "phxq_consumer_acked_total": 2,
        "phxq_consumer_failed_total": 3,
        "phxq_consumer_dead_lettered_total": 1,
        "phxq_consumer_handler_latency_seconds_count": 5,
    }
    bad = [(a, t) for o, a, t in attempts if o == offsets[1]]
    assert [a for a, _ in bad] == [1, 2, 3]
    assert bad[1][1] - bad[0][1] >= FAST.backoff_base / 2  # backed off
    assert [o for o, _, _ in attempts] == [offsets[0], *[offsets[1]] * 3, offsets[2]]  # in order
    (dead,) = store.messages[("orders.dlq", 0)]
    assert dead.payload == b"bad" and dead.key == "k" and dead.headers["h"] == "1"
    assert dead.headers["phxq-dlq-offset"] == str(offsets[1])
    assert dead.headers["phxq-dlq-attempts"] == "3"
    assert "RuntimeError: nope" in dead.headers["phxq-dlq-error"]
    assert f"dlq/billing/orders/0/{offsets[1]}" in store.dedup


async def test_block_stops_the_queue_until_resume() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, p) for p in (b"ok", b"bad", b"ok2")]
    healthy = False
    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        if d.payload == b"bad" and not healthy:
            raise RuntimeError("nope")
        seen.append(d.offset)

    worker = make_worker(store, locks, handle, max_attempts=2, on_failure="block", dead_letter=None)
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.blocked == offsets[1], "the block")
    await until(lambda: store.cursors.get(PAIR) == offsets[0], "commit before the bad one")
    await asyncio.sleep(0.2)
    assert seen == [offsets[0]] and worker.blocked == offsets[1]
    healthy = True
    worker.runtime.apply(GroupSettings(None, None, unblock=1), 1.0)  # `phxq admin resume`
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "delivery after resume")
    assert seen == offsets and worker.blocked is None
    assert ("orders.dlq", 0) not in store.messages
    await stop(worker, task)


async def test_pause_stops_new_deliveries_and_resume_continues() -> None:
    store, locks = FakeStore(), MemoryLocks()
    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        seen.append(d.offset)

    worker = make_worker(store, locks, handle, settings=GroupSettings(None, None, paused=True))
    task = asyncio.create_task(worker.run())
    offsets = [store.add("orders", 0, b"x") for _ in range(3)]
    await asyncio.sleep(0.3)
    assert seen == []
    worker.runtime.apply(GroupSettings(None, None, paused=False), 1.0)
    await until(lambda: seen == offsets, "delivery after resume")
    await stop(worker, task)


async def test_per_key_parallelism_keeps_key_order_and_a_safe_cursor() -> None:
    store, locks = FakeStore(), MemoryLocks()
    keys = [f"k{i % 4}" for i in range(40)]
    offsets = [store.add("orders", 0, b"x", key=k) for k in keys]
    running = 0
    peak = 0
    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.002 * (1 + d.offset % 3))
        seen.append(d.offset)
        running -= 1

    worker = make_worker(store, locks, handle, ordering="per_key", concurrency=4)
    task = asyncio.create_task(worker.run())
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "the end")
    await stop(worker, task)
    assert sorted(seen) == offsets and peak > 1 and peak <= 4
    for key in set(keys):
        mine = [o for o in seen if keys[offsets.index(o)] == key]
        assert mine == sorted(mine)
    assert seen != offsets  # it really ran out of offset order


async def test_rate_limit_paces_deliveries() -> None:
    store, locks = FakeStore(), MemoryLocks()
    for _ in range(30):
        store.add("orders", 0, b"x")
    times: list[float] = []

    async def handle(d: Delivery) -> None:
        times.append(time.monotonic())

    worker = make_worker(store, locks, handle, settings=GroupSettings(100.0, None))
    task = asyncio.create_task(worker.run())
    await until(lambda: len(times) == 30, "30 deliveries", timeout=10)
    await stop(worker, task)
    rate = (len(times) - 10) / (times[-1] - times[9])  # past the initial burst
    assert rate < 130  # paced (unpaced, this loop runs thousands per second)


@pytest.mark.parametrize("ordering", ["strict", "per_key"])
async def test_handoff_between_two_workers_skips_and_repeats_nothing(ordering: str) -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, b"x", key=f"k{i % 3}") for i in range(200)]
    seen: list[tuple[str, int]] = []

    def handler(name: str) -> Callable[[Delivery], Awaitable[None]]:
        async def handle(d: Delivery) -> None:
            await asyncio.sleep(0.0005)
            seen.append((name, d.offset))

        return handle

    conc = 1 if ordering == "strict" else 3
    first = make_worker(store, locks, handler("a"), owner="a", ordering=ordering, concurrency=conc)
    second = make_worker(store, locks, handler("b"), owner="b", ordering=ordering, concurrency=conc)
    t1 = asyncio.create_task(first.run())
    await until(lambda: len(seen) >= 60, "some progress")
    t2 = asyncio.create_task(second.run())
    first.drain()
    await asyncio.wait_for(t1, 5)
    await until(lambda: store.cursors.get(PAIR) == offsets[-1], "the second owner finishing")
    await stop(second, t2)
    delivered = [o for _, o in seen]
    assert sorted(delivered) == offsets  # each exactly once: a clean handoff loses nothing
    owners = [n for n, _ in seen]
    assert owners == sorted(owners)  # a, then b, never interleaved


async def test_drain_while_the_lock_is_being_granted_hands_over_without_delivering() -> None:
    store, locks = FakeStore(), MemoryLocks()
    store.add("orders", 0, b"x")
    granting = asyncio.Event()
    proceed = asyncio.Event()

    class SlowGrant:
        """The lock service answers the acquire only after ``proceed``."""

        def __getattr__(self, name: str) -> Any:
            return getattr(locks, name)

        @contextlib.asynccontextmanager
        async def hold(self, name: str, owner: str, ttl: float) -> AsyncIterator[Any]:
            granting.set()
            await proceed.wait()
            async with locks.hold(name, owner, ttl) as lease:
                yield lease

    seen: list[int] = []

    async def handle(d: Delivery) -> None:
        seen.append(d.offset)

    worker = make_worker(store, SlowGrant(), handle)  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(granting.wait(), 5)
    worker.drain()
    proceed.set()
    await asyncio.wait_for(task, 5)
    assert worker.state is Ownership.RELEASED and seen == []
    assert await locks.get("cg/billing/orders/0") is None


async def test_committed_past_waits_for_the_commit_and_fails_when_the_lease_is_lost() -> None:
    store, locks = FakeStore(), MemoryLocks()
    offsets = [store.add("orders", 0, b"x") for _ in range(3)]
    release = asyncio.Event()

    async def handle(d: Delivery) -> None:
        if d.offset == offsets[2]:
            await release.wait()  # the third message is in hand when the lease goes

    worker = make_worker(store, locks, handle)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.committed_past(offsets[1]), 5)
    assert store.cursors[PAIR] >= offsets[1]  # returned only once the store had the commit
    pending = asyncio.ensure_future(worker.committed_past(offsets[2]))
    await asyncio.sleep(0.05)
    assert not pending.done()
    locks.expire("cg/billing/orders/0")
    with pytest.raises(StaleToken):
        await asyncio.wait_for(pending, 5)
    await asyncio.wait_for(task, 5)
    await worker.committed_past(offsets[0])  # committed before the loss: fine
    with pytest.raises(StaleToken):
        await worker.committed_past(offsets[2])  # released: it will never get there
