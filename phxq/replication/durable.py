"""The persists of one replica that wait for durability, reported to its core in order.

A replica appends a persist's records and registers the last one's future with the token its
core gave (:meth:`Durability.add`). The core learns of it (``on_persisted``) from whichever
comes first:

- :meth:`Durability.drain`, which the host runs in the loop callback where the storage resolved
  a batch (``Storage.on_durable``): no loop turn through future callbacks, and the replies it
  causes for every group leave bundled;
- the future's done callback, a loop turn later (a no-op once drained), which also covers a
  storage that reports nothing, and a future resolved out of submission order.

Every token is reported exactly once, in submission order while the log resolves in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import final

__all__ = ["Durability"]

Report = Callable[[int, "asyncio.Future[None]"], None]  # (token, the done future)


@final
class Durability:
    def __init__(self, report: Report) -> None:
        self._report = report
        self._waiting: deque[tuple[asyncio.Future[None], int]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, future: asyncio.Future[None], token: int) -> None:
        self._waiting.append((future, token))
        future.add_done_callback(self._later)

    def drain(self) -> None:
        """Report every done persist at the front, in order (the first pending one stops)."""
        waiting = self._waiting
        while waiting and waiting[0][0].done():
            future, token = waiting.popleft()
            self._report(token, future)

    def _later(self, future: asyncio.Future[None]) -> None:
        if not self._waiting:
            return  # (the common case: the host's drain reported it already)
        self.drain()
        if any(f is future for f, _ in self._waiting):  # resolved out of order: not held up
            done = [entry for entry in self._waiting if entry[0].done()]
            self._waiting = deque(entry for entry in self._waiting if not entry[0].done())
            for done_future, token in done:
                self._report(token, done_future)
