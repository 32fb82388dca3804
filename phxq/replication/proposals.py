"""The one waiter table of a replica's own proposals.

Every proposal is a batch: :meth:`Proposals.open` registers ``count`` items under consecutive
proposal ids and returns one future for all their results (a single proposal is a batch of
one). The replica resolves items from ``Learned`` (:meth:`resolve`, with the results its state
machine's apply produced) and fails them from ``ProposalFailed`` or a storage failure
(:meth:`fail`, :meth:`fail_all`).

Promises:

- the future gets every item's result, in order, once *all* of them were applied here; it
  fails as soon as one item fails (the outcome of the others is then unknown: retry with the
  same dedup id);
- it fails with ``Unavailable`` after ``timeout`` seconds (outcome unknown) -- one timer per
  batch, no task;
- cancelling it only stops waiting (the proposal may still be chosen); a failed future's
  exception is always retrieved, so nothing is logged for a caller that stopped waiting.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Sequence
from typing import Any, final

from phxq.errors import Unavailable

__all__ = ["Proposals"]


@final
class _Batch:
    __slots__ = ("future", "left", "results")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.results: list[Any] = [None] * count
        self.left = count


@final
class Proposals:
    """Waiting proposals of one group's replica (see the module docstring)."""

    def __init__(self, group: int, timeout: float) -> None:
        self.group = group
        self.timeout = timeout
        self._waiting: dict[int, tuple[_Batch, int]] = {}
        self._next_pid = 1

    def __len__(self) -> int:
        return len(self._waiting)

    def open(self, count: int) -> tuple[tuple[int, ...], asyncio.Future[list[Any]]]:
        """Register ``count`` items: their proposal ids and the future of their results."""
        loop = asyncio.get_running_loop()
        batch = _Batch(loop.create_future(), count)
        pids = tuple(range(self._next_pid, self._next_pid + count))
        self._next_pid += count
        if not count:
            batch.future.set_result([])
            return pids, batch.future
        for index, pid in enumerate(pids):
            self._waiting[pid] = (batch, index)
        timer = loop.call_later(self.timeout, self._expire, batch.future)
        batch.future.add_done_callback(functools.partial(self._closed, pids, timer))
        return pids, batch.future

    def resolve(self, pids: Sequence[int], results: Sequence[Any]) -> None:
        """Items ``pids`` were applied here with ``results`` (aligned; extra pids are ignored:
        an instance the state already covered produced no results)."""
        for pid, result in zip(pids, results, strict=False):
            waiting = self._waiting.get(pid)
            if waiting is None:
                continue
            batch, index = waiting
            if batch.future.done():
                continue
            batch.results[index] = result
            batch.left -= 1
            if not batch.left:
                batch.future.set_result(batch.results)

    def fail(self, pids: Iterable[int], error: BaseException) -> None:
        for pid in pids:
            waiting = self._waiting.get(pid)
            if waiting is not None and not waiting[0].future.done():
                waiting[0].future.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        self.fail(list(self._waiting), error)

    def _expire(self, future: asyncio.Future[list[Any]]) -> None:
        if not future.done():
            future.set_exception(
                Unavailable(
                    f"group {self.group}: not chosen within {self.timeout}s (outcome "
                    "unknown; retry with the same dedup id)"
                )
            )

    def _closed(
        self,
        pids: tuple[int, ...],
        timer: asyncio.TimerHandle,
        future: asyncio.Future[list[Any]],
    ) -> None:
        timer.cancel()
        for pid in pids:
            self._waiting.pop(pid, None)
        if not future.cancelled():
            future.exception()  # retrieved here: nobody may be awaiting a failed proposal
