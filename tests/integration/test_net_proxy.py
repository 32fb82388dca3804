"""FaultProxy between an RpcPool and an RpcServer on 127.0.0.1: each fault, then recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from phxq.errors import BadArgument, Unavailable
from phxq.net.rpc import RpcPool, RpcServer
from tools.fault.proxy import FaultProxy


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


@dataclass
class Target:
    calls: list[Any] = field(default_factory=list)
    notes: list[Any] = field(default_factory=list)

    async def handle(self, method: str, params: Any) -> Any:
        self.calls.append(params)
        return params

    def on_notify(self, method: str, params: Any) -> None:
        self.notes.append(params)


@dataclass
class Rig:
    target: Target
    server: RpcServer
    proxy: FaultProxy
    pool: RpcPool


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    target = Target()
    async with RpcServer(target.handle, notify_handler=target.on_notify) as server:
        await server.start("127.0.0.1", 0)
        async with FaultProxy("127.0.0.1:0", server.address, seed=5) as proxy, RpcPool() as pool:
            yield Rig(target, server, proxy, pool)


async def test_calls_and_notifies_pass_through(rig: Rig) -> None:
    assert await rig.pool.call(rig.proxy.address, "echo", b"x" * 200_000) == b"x" * 200_000
    rig.pool.notify(rig.proxy.address, "px", 1)
    await eventually(lambda: rig.target.notes == [1], "the notify")
    assert rig.proxy.connections == 1


async def test_a_partition_stalls_calls_and_healing_delivers_the_held_bytes(rig: Rig) -> None:
    addr = rig.proxy.address
    assert await rig.pool.call(addr, "echo", 0) == 0
    rig.proxy.partition("both")
    with pytest.raises(Unavailable, match="timed out"):
        await rig.pool.call(addr, "echo", 1, timeout=0.1)
    assert rig.target.calls == [0]  # the request is held, not delivered
    rig.proxy.heal()
    await eventually(lambda: rig.target.calls == [0, 1], "the held request")
    assert await rig.pool.call(addr, "echo", 2) == 2  # same connection, still in sync
    assert rig.pool.stats.connects == 1


async def test_one_way_partition_to_client_runs_requests_but_loses_their_replies(
    rig: Rig,
) -> None:
    addr = rig.proxy.address
    assert await rig.pool.call(addr, "echo", 0) == 0
    rig.proxy.partition("to_client")
    with pytest.raises(Unavailable, match="timed out"):
        await rig.pool.call(addr, "echo", 1, timeout=0.1)
    assert rig.target.calls == [0, 1]  # the request got through
    rig.proxy.heal()
    assert await rig.pool.call(addr, "echo", 2) == 2


async def test_one_way_partition_to_target_holds_notifies(rig: Rig) -> None:
    addr = rig.proxy.address
    assert await rig.pool.call(addr, "echo", 0) == 0
    rig.proxy.partition("to_target")
    rig.pool.notify(addr, "px", "held")
    for _ in range(50):
        await asyncio.sleep(0)
    assert rig.target.notes == []
    rig.proxy.heal()
    await eventually(lambda: rig.target.notes == ["held"], "the held notify")


async def test_latency_applies_to_both_directions(rig: Rig) -> None:
    addr = rig.proxy.address
    assert await rig.pool.call(addr, "echo", 0) == 0
    rig.proxy.set_latency(0.03, jitter=0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await rig.pool.call(addr, "echo", 1) == 1
    assert loop.time() - start >= 0.06  # a lower bound: the request and the reply each waited
    with pytest.raises(BadArgument):
        rig.proxy.set_latency(-1)


async def test_dropping_connections_fails_pending_calls_and_the_pool_reconnects(
    rig: Rig,
) -> None:
    addr = rig.proxy.address
    assert await rig.pool.call(addr, "echo", 0) == 0
    rig.proxy.partition("both")
    pending = asyncio.ensure_future(rig.pool.call(addr, "echo", 1))
    await eventually(lambda: rig.pool.stats.connects == 1 and not pending.done(), "the call")
    rig.proxy.drop_connections()
    with pytest.raises(Unavailable):
        await pending
    rig.proxy.heal()
    assert await rig.pool.call(addr, "echo", 2) == 2
    assert rig.pool.stats.connects == 2


async def test_refused_connections_and_a_dead_target_are_unavailable(rig: Rig) -> None:
    rig.proxy.refuse = True
    with pytest.raises(Unavailable):
        await rig.pool.call(rig.proxy.address, "echo", 1, timeout=2)
    rig.proxy.refuse = False
    assert await rig.pool.call(rig.proxy.address, "echo", 2) == 2
    await rig.server.close()
    await eventually(lambda: rig.proxy.connections == 0, "the proxy to close its side")
    with pytest.raises(Unavailable):
        await rig.pool.call(rig.proxy.address, "echo", 3, timeout=2)


async def test_bad_direction_is_refused(rig: Rig) -> None:
    with pytest.raises(BadArgument):
        rig.proxy.partition("sideways")  # type: ignore[arg-type]
