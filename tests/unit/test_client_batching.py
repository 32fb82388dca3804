"""The client's enqueue batching, observed at a real RpcServer that answers like a store.

The server records every enqueue request (how many messages it carried) and how many were in
flight at once; replies are held until the test releases them, so the client's queueing is
deterministic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from phxq.client import Client
from phxq.errors import BadArgument
from phxq.net.server import RpcServer


class FakeStore:
    """One store that masters every group: meta, and enqueue answered in order on release."""

    def __init__(self) -> None:
        self.requests: list[int] = []  # messages per enqueue request, in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate = asyncio.Event()
        self.offset = 0
        self.address = ""

    async def handle(self, method: str, params: Any) -> Any:
        if method == "meta":
            return {"groups": 4, "nodes": {"1": self.address}, "topics": {"t": 1}, "masters": {}}
        assert method == "enqueue"
        count = sum(len(messages) for _, messages in params["batches"])
        self.requests.append(count)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        out = []
        for _, messages in params["batches"]:
            out.append([[self.offset + i, False] for i in range(len(messages))])
            self.offset += len(messages)
        return out


async def _run(n: int, *, spaced: bool = True, **client_options: Any) -> FakeStore:
    store = FakeStore()
    async with RpcServer(store.handle) as server:
        await server.start("127.0.0.1", 0)
        store.address = server.address
        async with Client([server.address], **client_options) as client:
            calls = []
            for i in range(n):
                calls.append(asyncio.create_task(client.enqueue("t", b"x%d" % i)))
                # The client's send task for this call (if it may send now) runs before the
                # timer fires, whatever the machine's load.
                if spaced:
                    await asyncio.sleep(0.002)
            while store.in_flight < len(store.requests) or not store.requests:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.05)  # nothing else may arrive while the gate is shut
            store.gate.set()
            acks = await asyncio.gather(*calls)
    assert sorted(a.offset for a in acks) == list(range(n))
    return store


@pytest.mark.asyncio
async def test_no_batching_sends_one_message_per_request() -> None:
    store = await _run(20, batching=False)
    assert store.requests == [1] * 20
    assert store.max_in_flight == 20


@pytest.mark.asyncio
async def test_no_batching_sends_one_message_per_request_when_calls_arrive_together() -> None:
    # Calls made in one loop iteration used to share a request (~2.5 messages per request at
    # 64 outstanding in the "no batching" benchmark).
    store = await _run(20, spaced=False, batching=False)
    assert store.requests == [1] * 20


@pytest.mark.asyncio
async def test_batching_queues_behind_the_request_in_flight() -> None:
    store = await _run(20, batching=True, window=1)
    # The first call leaves alone; the other 19 queue behind it and leave together.
    assert store.requests == [1, 19]
    assert store.max_in_flight == 1


@pytest.mark.asyncio
async def test_a_second_request_leaves_only_once_enough_messages_are_queued() -> None:
    store = await _run(20, batching=True)  # the default window, 2
    # Alone first; the next leaves beside it only with EXTRA_REQUEST_MIN_MESSAGES (8) queued;
    # the last 11 wait for a free slot.
    assert store.requests == [1, 8, 11]
    assert store.max_in_flight == 2


@pytest.mark.asyncio
async def test_a_few_queued_messages_wait_for_the_request_in_flight() -> None:
    store = await _run(5, batching=True, window=4)
    assert store.requests == [1, 4]  # too few to justify a second instance at once
    assert store.max_in_flight == 1


@pytest.mark.asyncio
async def test_window_allows_several_requests_in_flight_per_group() -> None:
    store = await _run(20, batching=True, window=3)
    assert store.max_in_flight == 3
    assert store.requests == [1, 8, 8, 3]


def test_window_must_be_positive() -> None:
    with pytest.raises(BadArgument):
        Client(["127.0.0.1:1"], window=0)


class RecordingStore(FakeStore):
    """Answers at once and keeps each enqueued payload."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.payloads: list[bytes] = []

    async def handle(self, method: str, params: Any) -> Any:
        if method == "enqueue":
            self.payloads += [m[0] for _, messages in params["batches"] for m in messages]
        return await super().handle(method, params)


async def test_enqueue_many_with_a_bad_message_sends_none_of_its_messages() -> None:
    store = RecordingStore()
    async with RpcServer(store.handle) as server:
        await server.start("127.0.0.1", 0)
        store.address = server.address
        async with Client([server.address]) as client:
            await client.cluster_map()
            bad = [(b"a", "k"), (b"b", "k"), ("not bytes", "k")]
            with pytest.raises(BadArgument, match="payload must be bytes"):
                await client.enqueue_many("t", bad)  # type: ignore[list-item]
            ack = await client.enqueue("t", b"c", key="k")  # the same group's sender
    assert store.payloads == [b"c"]
    assert ack.offset == 0


async def test_enqueue_many_keeps_no_message_once_it_returns() -> None:
    """A bulk load must not keep its messages alive until their deadline (once each call had
    its acks): a sweep entry per message did, and made a 1M-message fill 2x slower."""
    import gc

    from phxq.client.batching import Pending

    store = RecordingStore()
    async with RpcServer(store.handle) as server:
        await server.start("127.0.0.1", 0)
        store.address = server.address
        async with Client([server.address], retry_timeout=120) as client:
            for _ in range(3):
                acks = await client.enqueue_many("t", [(b"m", f"k{i}") for i in range(500)])
                assert len(acks) == 500
            gc.collect()
            alive = [o for o in gc.get_objects() if isinstance(o, Pending)]
            assert alive == []
