"""An owner for asyncio tasks that are not all meant to live and die together.

``asyncio.TaskGroup`` is the owner for tasks that succeed or fail as one (a daemon's loops).
Clients need a looser owner: a failed enqueue batch must not cancel its siblings, and a stream's
read-ahead lives exactly as long as the stream. :class:`TaskScope` is that owner::

    async with TaskScope("client") as scope:      # or scope = TaskScope(...); await scope.aclose()
        task = scope.spawn(coro, name="send orders/3")
        watched = scope.spawn(read(), name="read q3", watched=True)
        ...                                        # the owner awaits `watched` itself

Promises:

- every task it spawns is cancelled and awaited by :meth:`aclose` (or leaving the ``async
  with``); ``spawn`` after ``aclose`` raises ``RuntimeError`` (no task outlives its owner);
- the exception of an unwatched task is logged with its traceback when the task ends (nobody
  else reads it); a ``watched`` task's outcome belongs to the owner, who reads it. ``aclose``
  waits without retrieving outcomes, so a watched failure the owner never read is still
  reported by asyncio ("Task exception was never retrieved"), never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("phxq.tasks")


class TaskScope:
    """Owns the tasks it spawns (see the module docstring)."""

    def __init__(self, name: str, logger: logging.Logger | None = None) -> None:
        self.name = name
        self._log = logger or log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None, watched: bool = False
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned by this scope."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name}: closed, cannot start {name or coro!r}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        # One done callback (each is a loop callback of its own): a task per request is common.
        task.add_done_callback(self._tasks.discard if watched else self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        """An unwatched task ended: forget it and log its failure (nobody else reads it)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s: task %s failed", self.name, task.get_name(), exc_info=exc)

    async def aclose(self) -> None:
        """Cancel every task still running and wait until all have ended. Idempotent."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # asyncio.wait, not gather(return_exceptions=True): it does not retrieve outcomes,
            # so an unread failure is still reported (see the module docstring).
            await asyncio.wait(tasks)

    async def __aenter__(self) -> TaskScope:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
