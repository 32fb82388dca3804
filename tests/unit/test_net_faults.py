"""The fault-injecting transport: each fault does what it says, and a seed replays exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from phxq.errors import Unavailable
from phxq.net import frames
from phxq.net.rpc import RpcPool, RpcServer
from phxq.testing import Faults, FaultyTransport, Inbox, MemoryNetwork, memory_pair


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def wrapped(seed: int = 1) -> tuple[Faults, FaultyTransport, FaultyTransport]:
    a, b = memory_pair()
    faults = Faults(seed)
    return faults, faults.wrap(a), FaultyTransport(b, Faults(seed))  # b's side has no faults


async def drain_available(inbox: Inbox, count: int) -> list[bytes]:
    return [await asyncio.wait_for(inbox.recv(), 5) for _ in range(count)]


async def test_drop_rate_loses_about_that_share_of_frames_and_counts_them() -> None:
    faults, a, b = wrapped()
    _ia, ib = Inbox(a), Inbox(b)
    faults.drop_rate = 0.3
    for i in range(1000):
        a.send(b"%d" % i)
    received = faults.stats.sent
    assert 600 < received < 800
    assert faults.stats.dropped == 1000 - received
    got = await drain_available(ib, received)
    assert got == sorted(got, key=int)  # losses never reorder the rest


async def test_the_same_seed_drops_the_same_frames() -> None:
    def run(seed: int) -> list[int]:
        faults = Faults(seed)
        faults.drop_rate = 0.5
        return [i for i in range(200) if not faults._lose()]

    assert run(7) == run(7)
    assert run(7) != run(8)


async def test_only_notifies_are_duplicated() -> None:
    faults, a, b = wrapped()
    _ia, ib = Inbox(a), Inbox(b)
    faults.duplicate_rate = 1.0
    a.send(frames.encode_request(1, "enqueue", None))
    a.send(frames.encode_notify("px", 1))
    got = await drain_available(ib, 3)
    assert [frames.frame_kind(body) for body in got] == [
        frames.REQUEST,
        frames.NOTIFY,
        frames.NOTIFY,
    ]
    assert faults.stats.duplicated == 1


async def test_delay_with_jitter_holds_frames_but_keeps_their_order() -> None:
    faults, a, b = wrapped()
    _ia, ib = Inbox(a), Inbox(b)
    faults.delay = 0.02
    faults.jitter = 0.02
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(50):
        a.send(b"%d" % i)
    assert a.buffered > 0
    got = await drain_available(ib, 50)
    assert loop.time() - start >= 0.02
    assert got == [b"%d" % i for i in range(50)]
    assert faults.stats.delayed == 50


async def test_one_way_partitions_block_exactly_one_direction() -> None:
    faults, a, b = wrapped()
    ia, ib = Inbox(a), Inbox(b)
    faults.block_send = True
    a.send(b"lost")
    b.send(b"arrives")
    assert await asyncio.wait_for(ia.recv(), 5) == b"arrives"
    faults.block_send = False
    faults.block_recv = True
    incoming = asyncio.ensure_future(ia.recv())  # frames are judged as they arrive
    dropped = faults.stats.dropped
    b.send(b"lost too")
    await eventually(lambda: faults.stats.dropped == dropped + 1, "the incoming drop")
    a.send(b"goes out")
    assert await asyncio.wait_for(ib.recv(), 5) == b"goes out"
    faults.block_recv = False
    b.send(b"after heal")
    assert await asyncio.wait_for(incoming, 5) == b"after heal"


async def test_stall_holds_frames_both_ways_until_unstall() -> None:
    faults, a, b = wrapped()
    ia, ib = Inbox(a), Inbox(b)
    faults.stall()
    a.send(b"held")
    b.send(b"also held")
    incoming = asyncio.ensure_future(ia.recv())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not incoming.done()
    assert a.buffered == len(b"held")
    faults.unstall()
    assert await asyncio.wait_for(incoming, 5) == b"also held"
    assert await asyncio.wait_for(ib.recv(), 5) == b"held"


async def test_sever_closes_every_wrapped_connection() -> None:
    faults, a, b = wrapped()
    _ia, ib = Inbox(a), Inbox(b)
    faults.sever()
    assert a.closed
    with pytest.raises(Unavailable):
        await asyncio.wait_for(ib.recv(), 5)


async def test_dropped_requests_time_out_and_sever_fails_pending_calls_then_reconnects() -> None:
    net = MemoryNetwork()
    gate = asyncio.Event()

    async def handle(method: str, params: object) -> object:
        if method == "wait":
            await gate.wait()
        return params

    faults = Faults(seed=3)
    async with (
        RpcServer(handle) as server,
        RpcPool(transport_factory=faults.factory(net.connect)) as pool,
    ):
        net.listen("n:1", server.accept)
        faults.drop_rate = 1.0
        with pytest.raises(Unavailable, match="timed out"):
            await pool.call("n:1", "echo", 1, timeout=0.05)
        faults.heal()
        pending = asyncio.ensure_future(pool.call("n:1", "wait", 2))
        await eventually(lambda: server.connections == 1 and faults.stats.sent >= 1, "the call")
        faults.sever()
        with pytest.raises(Unavailable):
            await pending
        assert await pool.call("n:1", "echo", 3) == 3
        assert pool.stats.connects == 2
        gate.set()


async def test_sever_wakes_a_receiver_held_by_a_stall() -> None:
    faults, a, b = wrapped()
    ia, _ib = Inbox(a), Inbox(b)
    faults.stall()
    b.send(b"held")
    incoming = asyncio.ensure_future(ia.recv())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not incoming.done()
    faults.sever()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(incoming, 5)
