"""A pair's ownership as an explicit state machine (STYLE.md §2), and who waits on its commits.

::

UNOWNED --run()--> ACQUIRING --lock granted--> OWNED --drain()--> DRAINING --> RELEASED
                       |  (granted after drain()) ------------------^
                       +--drain() / error--------+--lease lost / fenced / error--> RELEASED
"""

from __future__ import annotations

import asyncio
import enum


class Ownership(enum.Enum):
    UNOWNED = "unowned"
    ACQUIRING = "acquiring"
    OWNED = "owned"
    DRAINING = "draining"
    RELEASED = "released"


_TRANSITIONS: dict[Ownership, frozenset[Ownership]] = {
    Ownership.UNOWNED: frozenset({Ownership.ACQUIRING, Ownership.RELEASED}),
    # Straight to DRAINING when the lock is granted after drain() was called.
    Ownership.ACQUIRING: frozenset({Ownership.OWNED, Ownership.DRAINING, Ownership.RELEASED}),
    Ownership.OWNED: frozenset({Ownership.DRAINING, Ownership.RELEASED}),
    Ownership.DRAINING: frozenset({Ownership.RELEASED}),
    Ownership.RELEASED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: the worker tried an ownership transition the table does not allow."""


def check_transition(name: str, current: Ownership, new: Ownership) -> None:
    """Raise :class:`IllegalTransition` unless the table allows ``current -> new``."""
    if new not in _TRANSITIONS[current]:
        raise IllegalTransition(f"{name}: {current.value} -> {new.value}")


class CommitWaiters:
    """Callers of ``PairWorker.committed_past``: each waits until the owner's cursor reaches its
    offset (:meth:`wake`), or fails when the owner releases the pair first (:meth:`fail`)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    async def wait(self, offset: int) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((offset, waiter))
        await waiter

    def wake(self, committed: int | None) -> None:
        """The cursor is now ``committed``: release everyone waiting for it or less."""
        if committed is None:
            return
        still = []
        for offset, waiter in self._waiting:
            if waiter.done():
                continue
            if offset <= committed:
                waiter.set_result(None)
            else:
                still.append((offset, waiter))
        self._waiting = still

    def fail(self, exc: BaseException) -> None:
        """The owner released the pair: nobody's offset will be committed by it."""
        for _offset, waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiting = []
