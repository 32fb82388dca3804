"""Event loop selection: uvloop when it is installed, the standard asyncio loop otherwise.

Public API:

- ``run(main, *, debug=None)``: run the coroutine ``main`` to completion on a new event loop
  (uvloop if importable) and return its result, like ``asyncio.run``.
- ``loop_factory()``: a new event loop of the preferred kind (for ``asyncio.Runner``).
- ``uvloop_available() -> bool``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _uvloop_new_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
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
    with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
        return runner.run(main)
