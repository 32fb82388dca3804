"""Loopback RPC figures, printed (run with ``-s``), never asserted: sequential call latency,
concurrent call throughput and notify throughput, on uvloop (when installed) and asyncio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from phxq.net.loop import loop_factory
from phxq.net.rpc import RpcPool, RpcServer

CALLS = 5000
NOTIFIES = 200_000


async def measure() -> dict[str, float]:
    received = 0

    async def handle(method: str, params: Any) -> Any:
        return params

    def on_notify(method: str, params: Any) -> None:
        nonlocal received
        received += 1

    async with RpcServer(handle, notify_handler=on_notify) as server:
        await server.start("127.0.0.1", 0)
        async with RpcPool() as pool:
            addr = server.address
            for i in range(500):  # warm up
                await pool.call(addr, "echo", i)
            latencies = []
            for i in range(CALLS):
                start = time.perf_counter()
                await pool.call(addr, "echo", i)
                latencies.append(time.perf_counter() - start)
            latencies.sort()

            start = time.perf_counter()
            for _ in range(CALLS // 100):
                await asyncio.gather(*(pool.call(addr, "echo", b"x" * 100) for _ in range(100)))
            calls_per_s = CALLS / (time.perf_counter() - start)

            payload = b"p" * 100
            start = time.perf_counter()
            for i in range(NOTIFIES):
                pool.notify(addr, "px", payload)
                if i % 100 == 99:
                    await asyncio.sleep(0)  # as a node would: a burst of sends per iteration
            deadline = time.monotonic() + 30
            while received < NOTIFIES - pool.stats.notifies_dropped:
                assert time.monotonic() < deadline, "notifies never arrived"
                await asyncio.sleep(0.001)
            notifies_per_s = received / (time.perf_counter() - start)
            return {
                "p50_us": latencies[len(latencies) // 2] * 1e6,
                "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
                "calls_per_s": calls_per_s,
                "notifies_per_s": notifies_per_s,
                "dropped": pool.stats.notifies_dropped,
            }


@pytest.mark.parametrize("loop_kind", ["preferred", "asyncio"])
def test_print_loopback_rpc_figures(loop_kind: str) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        loop_factory if loop_kind == "preferred" else asyncio.new_event_loop
    )
    with asyncio.Runner(loop_factory=factory) as runner:
        loop_name = type(runner.get_loop()).__module__.split(".")[0]
        figures = runner.run(measure())
    print(
        f"\n[net perf, {loop_name}] sequential call p50 {figures['p50_us']:.0f} us, "
        f"p99 {figures['p99_us']:.0f} us; 100 outstanding: {figures['calls_per_s']:.0f} calls/s; "
        f"notifies {figures['notifies_per_s']:.0f}/s (dropped {figures['dropped']:.0f})"
    )
    assert figures["p50_us"] > 0
