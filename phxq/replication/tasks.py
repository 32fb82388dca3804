"""Ownership of the background tasks of one runtime part (structured concurrency).

Every task the replication runtime and the daemons start belongs to a :class:`TaskSet`: it is
started with :meth:`TaskSet.spawn`, and :meth:`TaskSet.close` cancels every task still running
and waits for all of them, so nothing outlives its owner. Unlike ``asyncio.TaskGroup`` one
failed task does not cancel its siblings (a failed catch-up read must not stop the tick loop):
its exception is logged with the owner's name and never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, final

__all__ = ["TaskSet"]


@final
class TaskSet:
    """The running tasks of one owner (``what`` names it in logs)."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this set (``RuntimeError`` after :meth:`close`)."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._what}: closed, cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._what}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task and wait until all have finished."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
