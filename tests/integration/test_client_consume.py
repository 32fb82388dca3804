"""``Client.consume`` against real stores and lock nodes: ordered per queue, committed with the
lock's fencing token, shared and handed over between members, ``ack()`` without auto-commit."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

import phxq
from phxq.client import Client
from phxq.client.types import ConsumedMessage
from phxq.devcluster import ProcessCluster
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

TOPIC = "orders"  # 8 queues in the dev config


@pytest.fixture
def locked(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(locks=True)


async def collect(
    stream: phxq.client.stream.MessageStream[ConsumedMessage],
    into: list[ConsumedMessage],
    until: Callable[[], bool],
) -> None:
    async for message in stream:
        into.append(message)
        if until():
            return


async def test_consume_yields_each_queue_in_order_and_commits_on_moving_on(
    locked: ProcessCluster,
) -> None:
    sent = [(b"m%d" % i, f"k{i % 13}") for i in range(300)]
    async with Client(locked.store_addresses) as client:
        acks = await client.enqueue_many(TOPIC, sent)
        got: list[ConsumedMessage] = []
        async with asyncio.timeout(60), client.consume("billing", TOPIC) as stream:
            await collect(stream, got, lambda: len(got) == len(sent))
        assert sorted(m.payload for m in got) == sorted(p for p, _ in sent)  # each once
        for key in {k for _, k in sent}:
            assert [m.payload for m in got if m.key == key] == [p for p, k in sent if k == key]
        assert all(m.group == "billing" and m.token > 0 for m in got)
        # Leaving the loop normally counts the last message as processed: every queue's cursor
        # is at its last message (committed by the handoff before the locks were released).
        last = {q: max(a.offset for a in acks if a.queue == q) for q in {a.queue for a in acks}}
        for q, offset in last.items():
            assert await client.cursor("billing", TOPIC, queue=q) == offset


async def test_members_share_the_queues_and_the_survivor_takes_over(locked: ProcessCluster) -> None:
    async with Client(locked.store_addresses) as a, Client(locked.store_addresses) as b:
        got_a: list[ConsumedMessage] = []
        got_b: list[ConsumedMessage] = []
        stream_a = a.consume("shared", TOPIC)
        stream_b = b.consume("shared", TOPIC)
        run_a = asyncio.ensure_future(collect(stream_a, got_a, lambda: False))
        run_b = asyncio.ensure_future(collect(stream_b, got_b, lambda: False))
        try:
            rounds = iter(range(1000))

            async def split() -> bool:
                """A round of messages on every queue, all delivered, each queue to one member
                and both members holding four (the steady state of the assignment)."""
                tag = b"round-%d" % next(rounds)
                await asyncio.gather(*(a.enqueue(TOPIC, tag, queue=q) for q in range(8)))
                await wait_until(
                    lambda: asyncio.sleep(0, sum(m.payload == tag for m in got_a + got_b) == 8),
                    20,
                    f"{tag!r} delivered",
                )
                queues_a = {m.queue for m in got_a if m.payload == tag}
                queues_b = {m.queue for m in got_b if m.payload == tag}
                return len(queues_a) == len(queues_b) == 4 and not queues_a & queues_b

            await wait_until(split, 40, "both members holding half of the queues")
            await stream_b.aclose()  # b leaves: a takes over its queues
            await run_b
            before = len(got_a)
            await a.enqueue_many(TOPIC, [(b"after", f"x{i}") for i in range(40)])
            await wait_until(
                lambda: asyncio.sleep(0, sum(m.payload == b"after" for m in got_a) == 40),
                30,
                "the survivor consuming every queue",
            )
            assert {m.queue for m in got_a[before:]} == set(range(8))
        finally:
            await stream_a.aclose()
            await asyncio.gather(run_a, run_b, return_exceptions=True)
        dupes = Counter((m.queue, m.offset) for m in got_a + got_b)
        assert max(dupes.values()) == 1  # clean handoffs: nothing delivered twice


async def test_without_auto_commit_only_acked_messages_are_committed(
    locked: ProcessCluster,
) -> None:
    async with Client(locked.store_addresses) as client:
        for i in range(5):
            await client.enqueue(TOPIC, b"n%d" % i, queue=3)
        stream = client.consume("manual", TOPIC, queues=[3], auto_commit=False)
        with pytest.raises(RuntimeError, match="stop here"):
            async with asyncio.timeout(30), stream:
                async for message in stream:
                    if message.payload == b"n2":
                        raise RuntimeError("stop here")  # n2 is in hand, not acked
                    await message.ack()  # returns once committed
                    assert await client.cursor("manual", TOPIC, queue=3) == message.offset
        again = client.consume("manual", TOPIC, queues=[3], auto_commit=False)
        async with asyncio.timeout(30), again:
            first = await again.__anext__()
        assert first.payload == b"n2"  # redelivered: n0 and n1 were committed, n2 was not


def test_sync_consume(locked: ProcessCluster) -> None:
    with phxq.SyncClient(locked.store_addresses) as client:
        ack = client.enqueue(TOPIC, b"sync", key="s")
        with client.consume("sync", TOPIC, queues=[ack.queue]) as stream:
            message = next(iter(stream))
        assert message.payload == b"sync"
        assert client.cursor("sync", TOPIC, queue=ack.queue) == ack.offset
