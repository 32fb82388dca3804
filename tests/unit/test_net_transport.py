"""Transport conformance: every implementation (TCP, in-memory, fault wrapper with no faults
set) keeps the same promises, so the RPC layer can run on any of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from phxq.errors import BadArgument, MessageTooLarge, Unavailable
from phxq.net.transport import TcpTransport, Transport, connect_tcp, parse_addr
from phxq.testing.faults import Faults
from phxq.testing.memory import MemoryNetwork, memory_pair

MAX = 64 << 10


async def tcp_pair() -> tuple[Transport, Transport, asyncio.Server]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[TcpTransport] = loop.create_future()
    server = await loop.create_server(
        lambda: TcpTransport(MAX, on_connected=accepted.set_result), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    client = await connect_tcp(f"127.0.0.1:{port}", max_frame=MAX)
    return client, await accepted, server


@pytest.fixture(params=["tcp", "memory", "faulty-tcp", "faulty-memory"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Transport, Transport]]:
    server = None
    a: Transport
    b: Transport
    if request.param.endswith("tcp"):
        a, b, server = await tcp_pair()
    else:
        a, b = memory_pair(MAX)
    if request.param.startswith("faulty"):
        faults = Faults(seed=1)
        a, b = faults.wrap(a), faults.wrap(b)
    yield a, b
    a.close()
    b.close()
    await asyncio.wait_for(asyncio.gather(a.wait_closed(), b.wait_closed()), 5)
    if server is not None:
        server.close()
        await server.wait_closed()


async def test_frames_arrive_whole_and_in_order_both_ways(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    sent = [bytes([i % 256]) * (i * 37 % 5000) for i in range(300)]
    for body in sent:
        a.send(body)
        b.send(body[::-1])
    assert [await b.recv() for _ in sent] == sent
    assert [await a.recv() for _ in sent] == [body[::-1] for body in sent]


async def test_a_frame_of_exactly_max_frame_passes(pair: tuple[Transport, Transport]) -> None:
    a, b = pair
    a.send(b"m" * MAX)
    assert await b.recv() == b"m" * MAX


async def test_an_oversized_send_is_refused_and_the_connection_goes_on(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    with pytest.raises(MessageTooLarge):
        a.send(b"x" * (MAX + 1))
    a.send(b"after")
    assert await b.recv() == b"after"


async def test_recv_returns_what_was_sent_before_the_peer_closed_then_unavailable(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    a.send(b"one")
    a.send(b"two")
    a.close()
    assert await b.recv() == b"one"
    assert await b.recv() == b"two"
    with pytest.raises(Unavailable):
        await b.recv()


async def test_a_waiting_recv_is_woken_by_the_peer_closing(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    waiting = asyncio.ensure_future(b.recv())
    await asyncio.sleep(0)
    a.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 5)


async def test_a_waiting_recv_is_woken_by_our_own_close(pair: tuple[Transport, Transport]) -> None:
    _, b = pair
    waiting = asyncio.ensure_future(b.recv())
    await asyncio.sleep(0)
    b.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 5)


async def test_send_after_close_raises_unavailable_and_close_is_idempotent(
    pair: tuple[Transport, Transport],
) -> None:
    a, _ = pair
    assert not a.closed
    a.close()
    a.close()
    assert a.closed
    with pytest.raises(Unavailable):
        a.send(b"late")
    with pytest.raises(Unavailable):
        await a.recv()
    await asyncio.wait_for(a.wait_closed(), 5)


async def test_a_burst_larger_than_every_buffer_arrives_intact_with_drain(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    count = 200  # 200 x 60 KiB = 12 MiB: above socket, write and read high-water marks

    async def produce() -> None:
        for i in range(count):
            a.send(i.to_bytes(4, "big") * (15 << 10))
            await a.drain()

    producer = asyncio.ensure_future(produce())
    for i in range(count):
        body = await asyncio.wait_for(b.recv(), 10)
        assert body[:4] == i.to_bytes(4, "big") and len(body) == 60 << 10
    await producer
    assert isinstance(a.buffered, int) and a.buffered >= 0


async def test_memory_network_connects_to_a_listener_and_refuses_unknown_addresses() -> None:
    net = MemoryNetwork()
    accepted: list[Transport] = []
    net.listen("node1:1", accepted.append)
    client = await net.connect("node1:1")
    client.send(b"hi")
    assert await accepted[0].recv() == b"hi"
    with pytest.raises(Unavailable):
        await net.connect("node2:1")
    net.unlisten("node1:1")
    with pytest.raises(Unavailable):
        await net.connect("node1:1")


def test_parse_addr_accepts_host_port_and_bracketed_ipv6() -> None:
    assert parse_addr("127.0.0.1:7101") == ("127.0.0.1", 7101)
    assert parse_addr("[::1]:80") == ("::1", 80)
    for bad in ("nohost", ":80", "h:", "h:99999", "h:x"):
        with pytest.raises(BadArgument):
            parse_addr(bad)


async def test_tcp_stops_reading_a_peer_whose_frames_are_not_consumed_then_resumes() -> None:
    a, b, server = await tcp_pair()
    assert isinstance(b, TcpTransport)
    count = 200

    async def produce() -> None:
        for i in range(count):
            a.send(i.to_bytes(4, "big") * (15 << 10))
            await a.drain()

    producer = asyncio.ensure_future(produce())
    deadline = asyncio.get_running_loop().time() + 10
    while not b._reading_paused:  # nobody calls recv(): the inbox fills up to its limit
        assert asyncio.get_running_loop().time() < deadline, "reading was never paused"
        await asyncio.sleep(0.001)
    assert not producer.done()  # backpressure reached the producer
    for i in range(count):
        body = await asyncio.wait_for(b.recv(), 10)
        assert body[:4] == i.to_bytes(4, "big")
    await producer
    a.close()
    b.close()
    server.close()
    await server.wait_closed()


async def test_lazy_bodies_ride_with_the_next_flush_behind_its_urgent_bodies() -> None:
    a, b, server = await tcp_pair()
    assert isinstance(a, TcpTransport)
    a.send(b"lazy-1", flush=False)
    a.send(b"lazy-2", flush=False)
    a.send(b"urgent-1")
    a.send(b"urgent-2")
    got = [await asyncio.wait_for(b.recv(), 5) for _ in range(4)]
    # One write; what someone waits for first, each kind in its own order.
    assert got == [b"urgent-1", b"urgent-2", b"lazy-1", b"lazy-2"]
    assert a.writes == 1
    a.send(b"alone", flush=False)  # no company: leaves after LAZY_FLUSH on its own
    assert await asyncio.wait_for(b.recv(), 5) == b"alone"
    a.close()
    b.close()
    server.close()
    await server.wait_closed()
