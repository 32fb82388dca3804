"""RpcServer + RpcPool, over the in-memory network and over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from phxq.errors import (
    BadArgument,
    MessageTooLarge,
    NotMaster,
    PhxqError,
    StaleToken,
    Unavailable,
)
from phxq.net.rpc import RpcPool, RpcServer
from phxq.net.transport import TcpTransport, connect_tcp
from phxq.testing.faults import Faults
from phxq.testing.memory import MemoryNetwork

MAX = 64 << 10


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


@dataclass
class Service:
    """The handler under test; records what it saw."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: int = 0
    notes: list[tuple[str, Any]] = field(default_factory=list)

    async def handle(self, method: str, params: Any) -> Any:
        if method == "echo":
            return params
        if method == "not_master":
            raise NotMaster(hint="127.0.0.1:7102")
        if method == "stale":
            raise StaleToken("token 3 < 5", {"current": 5})
        if method == "crash":
            raise RuntimeError("kaboom")
        if method == "unencodable":
            return object()
        if method == "big":
            return b"x" * params
        if method == "wait":
            self.entered += 1
            await self.gate.wait()
            return params
        raise BadArgument(f"unknown method {method!r}")

    def on_notify(self, method: str, params: Any) -> None:
        if method == "explode":
            raise ValueError("bad notify handler")
        self.notes.append((method, params))


@dataclass
class Rig:
    service: Service
    server: RpcServer
    pool: RpcPool
    addr: str
    restart: Callable[[], Any]  # stop the server and start a fresh one on the same address


@pytest.fixture(params=["memory", "faulty-memory", "tcp", "faulty-tcp"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    service = Service()
    servers: list[RpcServer] = []

    def new_server() -> RpcServer:
        server = RpcServer(service.handle, notify_handler=service.on_notify, max_frame=MAX)
        servers.append(server)
        return server

    faults = Faults(seed=1) if request.param.startswith("faulty") else None  # with no fault set
    if request.param.endswith("memory"):
        net = MemoryNetwork(MAX)
        addr = "node1:7101"
        server = new_server()
        net.listen(addr, server.accept)
        factory = faults.factory(net.connect) if faults else net.connect
        pool = RpcPool(max_frame=MAX, transport_factory=factory)

        async def restart() -> None:
            await servers[-1].close()
            net.listen(addr, new_server().accept)

    else:
        server = new_server()
        await server.start("127.0.0.1", 0)
        addr = server.address
        tcp = functools.partial(connect_tcp, max_frame=MAX)
        pool = RpcPool(max_frame=MAX, transport_factory=faults.factory(tcp) if faults else None)

        async def restart() -> None:
            await servers[-1].close()
            await new_server().start("127.0.0.1", server.port)

    yield Rig(service, server, pool, addr, restart)
    service.gate.set()
    await pool.close()
    for s in servers:
        await s.close()


async def test_call_returns_the_handler_result(rig: Rig) -> None:
    params = {"payload": b"\x00\x01", "n": [1, 2.5, None, True], "s": "é"}
    assert await rig.pool.call(rig.addr, "echo", params) == params


async def test_handler_errors_are_raised_as_the_same_class_with_their_data(rig: Rig) -> None:
    with pytest.raises(NotMaster) as info:
        await rig.pool.call(rig.addr, "not_master", {})
    assert info.value.hint == "127.0.0.1:7102"
    with pytest.raises(StaleToken) as stale:
        await rig.pool.call(rig.addr, "stale", {})
    assert stale.value.data == {"current": 5}
    with pytest.raises(BadArgument, match="unknown method 'nope'"):
        await rig.pool.call(rig.addr, "nope", {})


async def test_an_unexpected_handler_exception_is_an_internal_error_and_serving_goes_on(
    rig: Rig,
) -> None:
    with pytest.raises(PhxqError, match="internal error in crash") as info:
        await rig.pool.call(rig.addr, "crash", {})
    assert type(info.value) is PhxqError
    with pytest.raises(PhxqError, match="unencodable result"):
        await rig.pool.call(rig.addr, "unencodable", {})
    assert await rig.pool.call(rig.addr, "echo", 1) == 1


async def test_a_response_above_the_frame_limit_becomes_message_too_large(rig: Rig) -> None:
    with pytest.raises(MessageTooLarge):
        await rig.pool.call(rig.addr, "big", MAX)
    assert await rig.pool.call(rig.addr, "big", 10) == b"x" * 10


async def test_bad_requests_are_refused_locally(rig: Rig) -> None:
    with pytest.raises(BadArgument):
        await rig.pool.call(rig.addr, "echo", object())
    with pytest.raises(MessageTooLarge):
        await rig.pool.call(rig.addr, "echo", b"x" * MAX)
    assert rig.pool.stats.connects == 0  # neither touched the network


async def test_a_call_without_reply_times_out_as_unavailable_and_the_late_reply_is_ignored(
    rig: Rig,
) -> None:
    with pytest.raises(Unavailable, match="timed out"):
        await rig.pool.call(rig.addr, "wait", "slow", timeout=0.05)
    rig.service.gate.set()  # the late reply now arrives and must be discarded
    assert await rig.pool.call(rig.addr, "echo", "next") == "next"
    assert rig.pool.stats.connects == 1


async def test_responses_may_overtake_slower_requests_on_one_connection(rig: Rig) -> None:
    slow = asyncio.ensure_future(rig.pool.call(rig.addr, "wait", "slow"))
    await eventually(lambda: rig.service.entered == 1, "the slow handler to start")
    assert await rig.pool.call(rig.addr, "echo", "fast") == "fast"
    assert not slow.done()
    rig.service.gate.set()
    assert await slow == "slow"


async def test_concurrent_calls_share_one_connection(rig: Rig) -> None:
    results = await asyncio.gather(*(rig.pool.call(rig.addr, "echo", i) for i in range(200)))
    assert results == list(range(200))
    assert rig.pool.stats.connects == 1
    assert rig.server.connections == 1


async def test_pending_calls_fail_unavailable_when_the_server_goes_away_then_it_reconnects(
    rig: Rig,
) -> None:
    pending = asyncio.ensure_future(rig.pool.call(rig.addr, "wait", "x"))
    await eventually(lambda: rig.service.entered == 1, "the handler to start")
    await rig.restart()
    with pytest.raises(Unavailable):
        await pending
    assert await rig.pool.call(rig.addr, "echo", "again") == "again"
    assert rig.pool.stats.connects == 2


async def test_connect_failure_is_unavailable() -> None:
    net = MemoryNetwork()
    async with RpcPool(transport_factory=net.connect) as pool:
        with pytest.raises(Unavailable, match="cannot connect"):
            await pool.call("nowhere:1", "echo", 1)
    server = RpcServer(Service().handle)
    await server.start("127.0.0.1", 0)
    port = server.port
    await server.close()  # the port is now closed
    async with RpcPool(connect_timeout=1.0) as pool:
        with pytest.raises(Unavailable, match="cannot connect"):
            await pool.call(f"127.0.0.1:{port}", "echo", 1)


async def test_connect_timeout_is_unavailable() -> None:
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hanging_connect(addr: str) -> Any:
        return await never

    async with RpcPool(connect_timeout=0.05, transport_factory=hanging_connect) as pool:
        with pytest.raises(Unavailable, match="timed out"):
            await pool.call("slow:1", "echo", 1)


async def test_close_fails_pending_calls_and_later_calls() -> None:
    service = Service()
    net = MemoryNetwork()
    async with RpcServer(service.handle) as server:
        net.listen("n:1", server.accept)
        pool = RpcPool(transport_factory=net.connect)
        pending = asyncio.ensure_future(pool.call("n:1", "wait", 1))
        await eventually(lambda: service.entered == 1, "the handler to start")
        await pool.close()
        with pytest.raises(Unavailable):
            await pending
        with pytest.raises(Unavailable):
            await pool.call("n:1", "echo", 1)
        pool.notify("n:1", "px", b"")  # never raises, even when closed


@pytest.mark.parametrize("kind", ["memory", "faulty-memory", "tcp"])
async def test_requests_beyond_max_inflight_wait_for_a_free_slot(kind: str) -> None:
    service = Service()
    net = MemoryNetwork()
    factory = Faults(seed=1).factory(net.connect) if kind == "faulty-memory" else net.connect
    async with (
        RpcServer(service.handle, max_inflight=2) as server,
        RpcPool(transport_factory=None if kind == "tcp" else factory) as pool,
    ):
        if kind == "tcp":
            await server.start("127.0.0.1", 0)
            addr = server.address
        else:
            addr = "n:1"
            net.listen(addr, server.accept)
        calls = [asyncio.ensure_future(pool.call(addr, "wait", i)) for i in range(5)]
        await eventually(lambda: service.entered == 2, "two handlers to start")
        for _ in range(50):
            await asyncio.sleep(0)  # give the server every chance to start a third
        assert service.entered == 2
        service.gate.set()
        assert await asyncio.gather(*calls) == list(range(5))


async def test_notifies_reach_the_notify_handler_in_order(rig: Rig) -> None:
    for i in range(500):
        rig.pool.notify(rig.addr, "px", i)
    await eventually(lambda: len(rig.service.notes) == 500, "500 notifies")
    assert rig.service.notes == [("px", i) for i in range(500)]
    assert rig.pool.stats.notifies_sent == 500
    assert rig.pool.stats.notifies_dropped == 0


async def test_a_failing_notify_handler_does_not_hurt_the_connection(rig: Rig) -> None:
    rig.pool.notify(rig.addr, "explode", None)
    rig.pool.notify(rig.addr, "px", "after")
    await eventually(lambda: rig.service.notes == [("px", "after")], "the second notify")
    assert await rig.pool.call(rig.addr, "echo", 1) == 1


async def test_unencodable_or_oversized_notifies_are_dropped_not_raised(rig: Rig) -> None:
    rig.pool.notify(rig.addr, "px", object())
    rig.pool.notify(rig.addr, "px", b"x" * MAX)
    assert rig.pool.stats.notifies_dropped == 2


async def test_notifies_to_an_unreachable_address_are_dropped_with_backoff() -> None:
    net = MemoryNetwork()
    attempts = 0

    async def counting_connect(addr: str) -> Any:
        nonlocal attempts
        attempts += 1
        return await net.connect(addr)

    async with RpcPool(transport_factory=counting_connect) as pool:
        pool.notify("down:1", "px", 1)
        await eventually(lambda: pool.stats.notifies_dropped == 1, "the failed connect")
        for i in range(100):
            pool.notify("down:1", "px", i)
        assert pool.stats.notifies_dropped == 101
        assert attempts == 1  # in backoff: no connect storm


async def test_notifies_reach_a_peer_once_it_comes_up() -> None:
    service = Service()
    net = MemoryNetwork()
    async with (
        RpcPool(transport_factory=net.connect) as pool,
        RpcServer(service.handle, notify_handler=service.on_notify) as server,
    ):
        pool.notify("late:1", "px", 0)
        await eventually(lambda: pool.stats.notifies_dropped == 1, "the failed connect")
        net.listen("late:1", server.accept)

        def delivered() -> bool:
            pool.notify("late:1", "px", 1)  # keeps trying, as a Paxos node resends
            return bool(service.notes)

        await eventually(delivered, "a notify after the peer came up")


async def test_notifies_issued_in_one_loop_iteration_go_out_in_one_write() -> None:
    service = Service()
    async with RpcServer(service.handle, notify_handler=service.on_notify) as server:
        await server.start("127.0.0.1", 0)
        transports: list[TcpTransport] = []

        async def connect(addr: str) -> TcpTransport:
            transports.append(await connect_tcp(addr))
            return transports[-1]

        async with RpcPool(transport_factory=connect) as pool:
            await pool.call(server.address, "echo", 0)  # connected
            before = transports[0].writes
            for i in range(100):
                pool.notify(server.address, "px", i)
            await eventually(lambda: len(service.notes) == 100, "100 notifies")
            assert transports[0].writes == before + 1


async def test_notifies_beyond_the_send_buffer_are_dropped_and_counted() -> None:
    service = Service()
    net = MemoryNetwork()
    faults = Faults(seed=1)
    async with (
        RpcServer(service.handle, notify_handler=service.on_notify) as server,
        RpcPool(transport_factory=faults.factory(net.connect), notify_buffer=10_000) as pool,
    ):
        net.listen("n:1", server.accept)
        await pool.call("n:1", "echo", 0)
        faults.stall()  # nothing leaves: everything sent stays in the send buffer
        for _ in range(100):
            pool.notify("n:1", "px", b"x" * 1000)
        assert pool.stats.notifies_sent < 10
        assert pool.stats.notifies_sent + pool.stats.notifies_dropped == 100
        faults.unstall()
        sent = pool.stats.notifies_sent
        await eventually(lambda: len(service.notes) == sent, "the buffered notifies")


async def test_a_call_waiting_for_a_connection_fails_unavailable_when_the_pool_closes() -> None:
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hanging_connect(addr: str) -> Any:
        return await never

    pool = RpcPool(connect_timeout=10, transport_factory=hanging_connect)
    call = asyncio.ensure_future(pool.call("slow:1", "echo", 1))
    for _ in range(5):
        await asyncio.sleep(0)
    await pool.close()
    with pytest.raises(Unavailable, match="closed"):
        await call
