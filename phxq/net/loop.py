"""Event loop selection: uvloop when it is installed, the standard asyncio loop otherwise.

``PHXQ_LOOP=asyncio`` in the environment forces the standard loop (for comparisons).

Public API:

- ``run(main, *, debug=None)``: run the coroutine ``main`` to completion on a new event loop
  (uvloop if importable) and return its result, like ``asyncio.run``.
- ``loop_factory()``: a new event loop of the preferred kind (for ``asyncio.Runner``).
- ``uvloop_available() -> bool``.

Profiling hook: with ``PHXQ_CPROFILE=PATH`` in the environment, ``run`` profiles the loop thread
with cProfile and writes the stats to ``PATH.<pid>`` when ``main`` returns (e.g. on SIGTERM of a
daemon); read them with ``python -m pstats``. The clock is wall time (cheap): the time the loop
waits in its poll shows up as the own time of ``Runner.run``. ``PHXQ_CPROFILE_CLOCK=cpu`` uses
the thread's CPU clock instead, which is exact but costs a system call per event here.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _uvloop_new_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("PHXQ_LOOP") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def uvloop_available() -> bool:
    return _uvloop_new_loop() is not None


def loop_factory() -> asyncio.AbstractEventLoop:
    new_loop = _uvloop_new_loop()
    return new_loop() if new_loop is not None else asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    profile_path = os.environ.get("PHXQ_CPROFILE")
    with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
        if not profile_path:
            return runner.run(main)
        import cProfile

        cpu = os.environ.get("PHXQ_CPROFILE_CLOCK") == "cpu"
        profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        profiler.enable()
        try:
            return runner.run(main)
        finally:
            profiler.disable()
            profiler.dump_stats(f"{profile_path}.{os.getpid()}")
