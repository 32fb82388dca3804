"""Transport conformance: every implementation (TCP, in-memory, fault wrapper with no faults
set) keeps the same promises, so the RPC layer runs one path on all of them. Bodies are read
through ``Inbox``, which uses the push delivery (``set_receiver``, ``pause_reading``,
``resume_reading``) that the RPC client and server use in production."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from phxq.errors import BadArgument, MessageTooLarge, PhxqError, Unavailable
from phxq.net.transport import TcpTransport, Transport, connect_tcp, parse_addr, receive_one
from phxq.testing import Faults, Inbox, MemoryNetwork, memory_pair

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
    inbox_a, inbox_b = Inbox(a), Inbox(b)  # set after the bodies were sent: nothing is lost
    assert [await inbox_b.recv() for _ in sent] == sent
    assert [await inbox_a.recv() for _ in sent] == [body[::-1] for body in sent]


async def test_a_frame_of_exactly_max_frame_passes(pair: tuple[Transport, Transport]) -> None:
    a, b = pair
    a.send(b"m" * MAX)
    assert await Inbox(b).recv() == b"m" * MAX


async def test_an_oversized_send_is_refused_and_the_connection_goes_on(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    with pytest.raises(MessageTooLarge):
        a.send(b"x" * (MAX + 1))
    a.send(b"after")
    assert await Inbox(b).recv() == b"after"


async def test_recv_returns_what_was_sent_before_the_peer_closed_then_unavailable(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    inbox = Inbox(b)
    a.send(b"one")
    a.send(b"two")
    a.close()
    assert await inbox.recv() == b"one"
    assert await inbox.recv() == b"two"
    with pytest.raises(Unavailable):
        await inbox.recv()


async def test_a_waiting_recv_is_woken_by_the_peer_closing(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    waiting = asyncio.ensure_future(Inbox(b).recv())
    await asyncio.sleep(0)
    a.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 5)


async def test_a_waiting_recv_is_woken_by_our_own_close(pair: tuple[Transport, Transport]) -> None:
    _, b = pair
    waiting = asyncio.ensure_future(Inbox(b).recv())
    await asyncio.sleep(0)
    b.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 5)


async def test_send_after_close_raises_unavailable_and_close_is_idempotent(
    pair: tuple[Transport, Transport],
) -> None:
    a, _ = pair
    inbox = Inbox(a)
    assert not a.closed
    a.close()
    a.close()
    assert a.closed
    with pytest.raises(Unavailable):
        a.send(b"late")
    with pytest.raises(Unavailable):
        await inbox.recv()
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
    inbox = Inbox(b)
    for i in range(count):
        body = await asyncio.wait_for(inbox.recv(), 10)
        assert body[:4] == i.to_bytes(4, "big") and len(body) == 60 << 10
    await producer
    assert isinstance(a.buffered, int) and a.buffered >= 0


async def test_memory_network_connects_to_a_listener_and_refuses_unknown_addresses() -> None:
    net = MemoryNetwork()
    accepted: list[Transport] = []
    net.listen("node1:1", accepted.append)
    client = await net.connect("node1:1")
    client.send(b"hi")
    assert await Inbox(accepted[0]).recv() == b"hi"
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


async def test_a_paused_receiver_gets_nothing_and_backpressure_reaches_the_sender(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    count = 200  # 12 MiB: above the inbox's high-water mark and every send buffer
    inbox = Inbox(b)

    async def produce() -> None:
        for i in range(count):
            a.send(i.to_bytes(4, "big") * (15 << 10))
            await a.drain()

    producer = asyncio.ensure_future(produce())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not inbox.paused:  # nobody calls recv(): the inbox fills up to its limit
        assert loop.time() < deadline, "reading was never paused"
        await asyncio.sleep(0.001)
    held = inbox._bytes
    for _ in range(100):
        await asyncio.sleep(0)
    assert inbox._bytes == held  # paused: not one more body delivered
    assert not producer.done()  # backpressure reached the producer's drain()
    for i in range(count):
        body = await asyncio.wait_for(inbox.recv(), 10)
        assert body[:4] == i.to_bytes(4, "big")
    await asyncio.wait_for(producer, 10)


async def test_lazy_bodies_ride_with_the_next_flush_behind_its_urgent_bodies(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    inbox = Inbox(b)
    a.send(b"lazy-1", flush=False)
    a.send(b"lazy-2", flush=False)
    a.send(b"urgent-1")
    a.send(b"urgent-2")
    got = [await asyncio.wait_for(inbox.recv(), 5) for _ in range(4)]
    # What someone waits for first, each kind in its own order.
    assert got == [b"urgent-1", b"urgent-2", b"lazy-1", b"lazy-2"]
    a.send(b"alone", flush=False)  # no company: leaves after LAZY_FLUSH on its own
    assert await asyncio.wait_for(inbox.recv(), 5) == b"alone"


async def test_the_end_is_reported_once_after_every_body_and_nothing_follows_it(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    got: list[bytes] = []
    ended: list[PhxqError] = []
    a.send(b"one")
    a.send(b"two")
    a.close()
    b.set_receiver(got.append, ended.append)  # after the bodies and the close arrived
    deadline = asyncio.get_running_loop().time() + 5
    while not ended:
        assert asyncio.get_running_loop().time() < deadline, "the end was never reported"
        await asyncio.sleep(0.001)
    assert got == [b"one", b"two"]
    b.close()
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(ended) == 1 and isinstance(ended[0], Unavailable)


async def test_our_own_close_ends_delivery(pair: tuple[Transport, Transport]) -> None:
    a, b = pair
    got: list[bytes] = []
    ended: list[PhxqError] = []
    b.set_receiver(got.append, ended.append)
    a.send(b"in flight")
    b.close()  # before the body is delivered: it never is
    for _ in range(50):
        await asyncio.sleep(0)
    assert got == []
    assert len(ended) == 1 and isinstance(ended[0], Unavailable)


async def test_receivers_are_not_called_from_inside_set_receiver_or_resume(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    got: list[bytes] = []
    a.send(b"early")
    for _ in range(20):
        await asyncio.sleep(0)  # it has arrived, undelivered
    b.set_receiver(got.append, lambda error: None)
    assert got == []
    for _ in range(20):
        await asyncio.sleep(0)
    assert got == [b"early"]
    b.pause_reading()
    a.send(b"while paused")
    for _ in range(20):
        await asyncio.sleep(0)
    assert got == [b"early"]
    b.resume_reading()
    assert got == [b"early"]
    for _ in range(20):
        await asyncio.sleep(0)
    assert got == [b"early", b"while paused"]


async def test_tcp_coalesces_the_bodies_of_one_loop_iteration_into_one_write() -> None:
    a, b, server = await tcp_pair()
    assert isinstance(a, TcpTransport)
    inbox = Inbox(b)
    a.send(b"lazy", flush=False)
    for i in range(10):
        a.send(b"%d" % i)
    assert [await asyncio.wait_for(inbox.recv(), 5) for _ in range(11)][-1] == b"lazy"
    assert a.writes == 1
    a.close()
    b.close()
    server.close()
    await server.wait_closed()


async def test_a_handshake_reads_one_body_then_hands_the_connection_over(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    for body in (b"hello-reply", b"first", b"second"):
        a.send(body)
    assert await asyncio.wait_for(receive_one(b), 5) == b"hello-reply"
    for _ in range(20):
        await asyncio.sleep(0)  # reading is paused: the rest waits for the next receiver
    inbox = Inbox(b)
    assert [await asyncio.wait_for(inbox.recv(), 5) for _ in range(2)] == [b"first", b"second"]
    a.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(inbox.recv(), 5)


async def test_a_handshake_on_a_connection_that_ends_raises_what_ended_it(
    pair: tuple[Transport, Transport],
) -> None:
    a, b = pair
    a.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(receive_one(b), 5)
