"""What the store's state machine answers per applied item
(:meth:`phxq.store.state.StoreState.apply`; re-exported by :mod:`phxq.store.state`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from phxq.errors import BadArgument, PhxqError
from phxq.routing import MAX_MESSAGES_PER_INSTANCE
from phxq.store.move_state import Adopted, MoveCancelled, Sealed
from phxq.store.schedule import Cancelled, Released
from phxq.store.txn import TxnDecided, TxnDiscarded, TxnPrepared

__all__ = ["ApplyResult", "Committed", "Enqueued", "Rejected", "Rolled", "Scheduled"]


@dataclass(frozen=True, slots=True)
class Enqueued:
    """An ``EnqueueEntry`` was applied: per message, its offset (the original one for a
    duplicate) and whether it was a duplicate (not stored again)."""

    offsets: tuple[int, ...]
    duplicates: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class Committed:
    """A commit or replay was applied; ``offset`` is the cursor it set."""

    offset: int


@dataclass(frozen=True, slots=True, eq=False)
class Rejected:
    """The item was not applied and changed nothing; ``error`` is what the proposer raises.

    Two rejections are equal when their errors have the same class, message and data (so
    results of two replicas compare equal)."""

    error: PhxqError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rejected):
            return NotImplemented
        a, b = self.error, other.error
        return type(a) is type(b) and a.message == b.message and a.data == b.data

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A schedule entry was applied: per message, its scheduled id as a ref
    (``schedule.scheduled_ref``), or for a duplicate the original's ref (a scheduled id, or an
    offset if the dedup id was first used by an ordinary enqueue), and whether it was one."""

    refs: tuple[int, ...]
    duplicates: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class Rolled:
    """A roll entry was applied: per message, whether it moved (it was still pending)."""

    moved: tuple[bool, ...]


ApplyResult: TypeAlias = (
    Enqueued
    | Committed
    | Rejected
    | Scheduled
    | Released
    | Cancelled
    | Rolled
    | TxnPrepared
    | TxnDecided
    | TxnDiscarded
    | Sealed
    | MoveCancelled
    | Adopted
)


def rejected_too_many(
    instance: int,
    first: int,
    count: int,
    results: list[ApplyResult],
    unindexed: list[int] | None,
) -> bool:
    """Whether an item's ``count`` ordinals from ``first`` overflow the instance's index space
    (``MAX_MESSAGES_PER_INSTANCE``); if so, it is answered ``Rejected(BadArgument)`` and, for
    readable messages (``unindexed`` given), its ordinals are recorded as never indexed. The
    caller still consumes the ordinals either way."""
    if first + count <= MAX_MESSAGES_PER_INSTANCE:
        return False
    if unindexed is not None:
        unindexed.extend(range(first, first + count))
    space = "messages" if unindexed is not None else "scheduled messages"
    text = f"instance {instance} holds more than {MAX_MESSAGES_PER_INSTANCE} {space}"
    results.append(Rejected(BadArgument(text)))
    return True
