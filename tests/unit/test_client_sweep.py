"""The client's deadline sweep (:mod:`phxq.client.sweep`) on a virtual clock: each entry still
pending fires at its due time, whatever the lanes; done ones never fire; close stops it."""

from __future__ import annotations

import asyncio

from phxq.client import sweep
from tests.sim.runtime_sim_world import VirtualLoop


class Token:
    def __init__(self) -> None:
        self.finished = False

    def done(self) -> bool:
        return self.finished


async def _fired_at(plan: list[tuple[float, float, bool]]) -> dict[int, float]:
    """Add entry ``i`` at ``start`` with ``delay`` (``finish``: done before its due time);
    when each fired, by entry."""
    loop = asyncio.get_running_loop()
    fired: dict[int, float] = {}

    def fire(i: int, delay: float) -> None:
        assert i not in fired, "fired twice"
        fired[i] = loop.time()

    s: sweep.Sweep[int] = sweep.Sweep(fire)
    begin = loop.time()
    tokens = []
    for i, (start, delay, _) in enumerate(plan):
        await asyncio.sleep(max(0.0, begin + start - loop.time()))
        tokens.append(Token())
        s.add(loop, delay, tokens[-1], i)
    for i, (_, _, finish) in enumerate(plan):
        tokens[i].finished = finish
    await asyncio.sleep(max(start + delay for start, delay, _ in plan) + 1)
    assert not s.lanes and s.at == float("inf"), "an idle sweep keeps no lane and no timer"
    return {i: t - begin for i, t in fired.items()}


def test_entries_fire_at_their_due_time_across_lanes_and_done_ones_never() -> None:
    plan = [(0.0, 2.0, False), (0.1, 0.5, False), (0.2, 2.0, True), (0.3, 2.0, False)]
    plan += [(0.4 + i / 100, 1.0 + i, False) for i in range(sweep.MAX_LANES + 2)]  # overflow
    loop = VirtualLoop()
    try:
        fired = loop.run_until_complete(_fired_at(plan))
    finally:
        loop.close()
    expected = {i: start + delay for i, (start, delay, finish) in enumerate(plan) if not finish}
    assert fired.keys() == expected.keys()
    for i, at in expected.items():
        assert abs(fired[i] - at) < 1e-6, (i, fired[i], at)


def test_close_stops_the_timer() -> None:
    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        s: sweep.Sweep[int] = sweep.Sweep(lambda i, delay: fired.append(i))
        s.add(loop, 0.5, Token(), 1)
        assert s.entries() == [1]
        s.close()
        await asyncio.sleep(1.0)
        return fired

    loop = VirtualLoop()
    try:
        assert loop.run_until_complete(run()) == []
    finally:
        loop.close()
