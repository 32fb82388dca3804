"""Two store sets of three real store processes each: the client routes every queue to its set,
and acked messages survive SIGKILLs and SIGSTOPs of stores of both sets."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable

import pytest

import phxq
from phxq.devcluster import ProcessCluster
from phxq.errors import StaleMap, Unavailable
from phxq.net.rpc import RpcPool
from phxq.routing import queue_for_key
from phxq.topology import Topology

from .conftest import wait_until

pytestmark = pytest.mark.integration

TOPIC = "orders"
QUEUES = 8
PRODUCERS = 40
KEYS = 200
MESSAGES = 10_000  # at least; producers go on until the nemesis has done its ROUNDS
ROUNDS = 4


@pytest.fixture
def two_sets(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(nodes=3, groups=4, sets=2)


async def _read_queue(client: phxq.Client, q: int) -> list[phxq.Message]:
    msgs: list[phxq.Message] = []
    after = None
    while True:
        page = await client.dequeue(None, TOPIC, queue=q, after=after, limit=1000)
        if not page:
            return msgs
        msgs.extend(page)
        after = page[-1].offset


async def test_queues_live_on_their_set_and_other_sets_redirect(two_sets: ProcessCluster) -> None:
    await _preferred_masters_in_each_set(two_sets)
    topo = Topology.from_config(two_sets.config)
    assert topo.placement[TOPIC] == (1, 2, 1, 2, 1, 2, 1, 2)  # dealt round-robin over sets
    async with phxq.Client(two_sets.store_addresses[:1]) as client:  # a seed of set 1 only
        acks = [await client.enqueue(TOPIC, f"q{q}".encode(), queue=q) for q in range(QUEUES)]
        assert [a.queue for a in acks] == list(range(QUEUES))
        for q in range(QUEUES):
            assert [m.payload for m in await _read_queue(client, q)] == [f"q{q}".encode()]
        # A transaction may span store sets (queue 0 is on set 1, 3 on set 2; more in
        # test_store_txn_sets.py).
        async with client.transaction() as txn:
            await txn.enqueue(TOPIC, b"t0", queue=0)
            await txn.enqueue(TOPIC, b"t3", queue=3)
        assert [m.payload for m in await _read_queue(client, 3)] == [b"q3", b"t3"]
    async with RpcPool() as pool:
        by_set = {s.set: s.addr for s in two_sets.config.stores}
        meta = await pool.call(by_set[2], "meta", {}, timeout=2.0)
        assert meta["set"] == 2 and meta["map"]["topics"][TOPIC]["placement"][1] == 2
        status = await pool.call(by_set[2], "status", {}, timeout=2.0)
        assert status["set"] == 2 and status["map_version"] == 0  # no lock service: the config
        # Queue 1 lives on set 2: a set-1 store refuses it with a typed redirect, even a local
        # read, and never wrote it (each set is its own Paxos cluster).
        params = {"group": None, "topic": TOPIC, "queue": 1, "after": None, "limit": 10}
        with pytest.raises(StaleMap) as info:
            await pool.call(by_set[1], "dequeue", {**params, "local": True}, timeout=2.0)
        assert info.value.data["set"] == 2
        rows = await pool.call(by_set[2], "dequeue", {**params, "local": True}, timeout=2.0)
        assert [bytes(r[1]) for r in rows] == [b"q1"]


async def _produce(
    client: phxq.Client,
    producer: int,
    counter: list[int],
    acked: dict[bytes, phxq.Ack],
    order: dict[str, list[int]],
    faults_done: asyncio.Event,
) -> None:
    keys = [f"user-{k}" for k in range(producer, KEYS, PRODUCERS)]
    seq = 0
    while counter[0] < MESSAGES or not faults_done.is_set():
        counter[0] += 1
        key = keys[seq % len(keys)]
        payload = f"{key}:{seq}".encode()
        try:
            ack = await client.enqueue(TOPIC, payload, key=key, dedup_id=f"{producer}-{seq}")
        except Unavailable:
            seq += 1  # not acked: it may or may not be stored, never twice
            continue
        acked[payload] = ack
        order[key].append(seq)  # one producer per key, one message at a time: acked order
        seq += 1


async def _nemesis(cluster: ProcessCluster, rng: random.Random) -> None:
    """ROUNDS times, one store of each set down (a majority of each set stays up): a SIGKILL in
    one set and a SIGSTOP in the other, then both back, then the other way round."""
    sets = {n: [s.id for s in cluster.config.set_stores(n)] for n in cluster.config.sets}
    for rounds in range(ROUNDS):
        killed = rng.choice(sets[1 + rounds % 2])
        paused = rng.choice(sets[2 - rounds % 2])
        cluster.kill(killed)
        cluster.pause(paused)
        await asyncio.sleep(1.5)
        cluster.resume(paused)
        cluster.restart(killed)
        await asyncio.sleep(1.5)


async def test_two_sets_keep_every_acked_message_through_kills_and_pauses(
    two_sets: ProcessCluster,
) -> None:
    rng = random.Random(18)
    acked: dict[bytes, phxq.Ack] = {}
    order: dict[str, list[int]] = defaultdict(list)
    counter = [0]
    faults_done = asyncio.Event()
    started = time.monotonic()

    async def nemesis() -> None:
        try:
            await _nemesis(two_sets, rng)
        finally:
            faults_done.set()

    async with phxq.Client(two_sets.store_addresses, retry_timeout=20.0) as client:
        await asyncio.gather(
            nemesis(),
            *(_produce(client, p, counter, acked, order, faults_done) for p in range(PRODUCERS)),
        )
        produced = time.monotonic() - started
        assert len(acked) >= MESSAGES * 0.9, f"only {len(acked)} of {MESSAGES} acked"
        got = {q: await _read_queue(client, q) for q in range(QUEUES)}

    seen: dict[bytes, int] = {}
    for q, msgs in got.items():
        offsets = [m.offset for m in msgs]
        assert offsets == sorted(set(offsets)), f"queue {q}: offsets not strictly increasing"
        for m in msgs:
            assert m.payload not in seen, f"{m.payload!r} stored twice"
            seen[m.payload] = m.offset
            assert queue_for_key(m.key or "", QUEUES) == q
    for payload, ack in acked.items():
        assert seen.get(payload) == ack.offset, f"acked {payload!r} lost or moved"
    # Per key, the acked messages come back in the order they were acked.
    by_key: dict[str, list[int]] = defaultdict(list)
    for q in range(QUEUES):
        for m in got[q]:
            if m.payload in acked:
                key, seq = m.payload.decode().rsplit(":", 1)
                by_key[key].append(int(seq))
    assert by_key == {k: v for k, v in order.items() if v}
    # Both sets took a share of the load.
    assert {acked[p].queue % 2 for p in acked} == {0, 1}
    print(f"{len(acked)} acked in {produced:.1f}s under faults")


async def _preferred_masters_in_each_set(two_sets: ProcessCluster) -> None:
    """Every group has a master in each set, among that set's stores, preferred g % 3."""
    preferred = {
        n: {str(g): [s.id for s in two_sets.config.set_stores(n)][g % 3] for g in range(4)}
        for n in (1, 2)
    }
    async with RpcPool() as pool:

        async def settled() -> bool:
            for s in two_sets.config.stores:
                meta = await pool.call(s.addr, "meta", {}, timeout=2.0)
                if meta["masters"] != preferred[s.set]:
                    return False
            return True

        await wait_until(settled, 20, "the preferred masters g % 3 in both sets")
