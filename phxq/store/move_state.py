"""Queue moves inside one group's state machine: seals, adoptions and offset tenures (pure).

A queue move (``phxq admin queue move``, driven by :mod:`phxq.store.mover`) hands a queue
from a group of store set A to the group of the same number in set B. Each side records it
in its own log (:mod:`phxq.store.move_entries`) and :class:`QueueMoves` (part of
:class:`~phxq.store.state.StoreState` and of its snapshot) applies those entries:

- **Tenures.** Each stretch of time a queue lives in this group is a :class:`Tenure`:
  ``start`` (the first instance of it), ``delta`` (its offsets are
  ``make_offset(instance + delta, index)``) and, once the queue moved away, the instance
  and offset of its seal. A queue never moved has no entry and an implicit tenure
  ``(start 0, delta 0, open)``: nothing changes for it (no lookup on the hot path beyond one
  empty-dict check).
- **Seal** (on A, at instance I): the current tenure closes at ``sealed =
  make_offset(I + delta, MAX_INDEX)``, an offset above every message the queue has here
  (messages of the same instance before the seal item included). From then on enqueues,
  delayed and transactional messages into the queue are ``Rejected(QueueMoved)``; reads up to
  the seal and cursor commits still work. Sealing again with the same move id answers the
  same seal (the driver may retry, a re-proposed seal is harmless); another move id is
  refused; a cancelled move id is refused. A seal applied while the group holds pending
  delayed messages or undecided transaction parts is refused (``MoveBlocked``, naming their
  counts) and changes nothing: sealed, they would be released above the seal where no reader
  looks. The group's state does not record which queue a pending message belongs to, so the
  check counts every queue of the group; deciding it at apply time makes it the same on every
  replica, whatever the order of a schedule or prepare entry and the seal in the log.
- **Cancel** (on A): refused once the move is sealed (a sealed move only goes forward);
  otherwise remembers the move id so a later seal of it is refused.
- **Adopt** (on B, at instance I): opens a tenure ``start = I`` with ``delta = max(0,
  (sealed >> 20) + 1 - I)`` so every offset of it is above ``sealed``: offsets keep
  increasing across the move without pushing B's log forward with no-ops (a delta costs
  nothing; hundreds of thousands of no-op instances would take minutes). The adopt also
  carries the source's cursors (each kept if newer than this group's) and the dedup ids of
  the queue (remembered with their original offsets). Adopting the same move id again changes
  nothing.

Reads translate offsets to log positions with :meth:`QueueMoves.read_window`: the tenure
holding ``after``, the position to read after, and the last instance of that tenure (a read
never runs from one tenure into a later one: a queue moved away and back would otherwise skip
the other set's messages).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from phxq.errors import BadArgument, MoveBlocked, PhxqError, ProtocolError, QueueMoved
from phxq.routing import INDEX_BITS, MAX_MESSAGES_PER_INSTANCE
from phxq.store.move_entries import AdoptEntry, CancelMoveEntry, SealEntry
from phxq.store.schedule import HELD

if TYPE_CHECKING:
    from phxq.store.schedule import Released
    from phxq.store.state import StoreState

__all__ = [
    "Adopted",
    "MoveCancelled",
    "QueueMoves",
    "Sealed",
    "Tenure",
    "adopt_into",
    "seal_into",
    "shifted",
]

MAX_INDEX = MAX_MESSAGES_PER_INSTANCE - 1
CANCELLED_REMEMBERED = 1024

QueueKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Tenure:
    """One stretch of a queue's life in this group (see the module docstring)."""

    start: int
    delta: int
    move_id: str | None = None  # the move that opened it (None: the queue started here)
    sealed_instance: int | None = None
    sealed: int | None = None  # offset
    sealed_by: str | None = None
    target: int | None = None
    opened_after: int | None = None  # the seal offset of the move that opened it

    @property
    def first_offset(self) -> int:
        return (self.start + self.delta) << INDEX_BITS


@dataclass(frozen=True, slots=True)
class Sealed:
    """A seal applied (or found applied): the queue's offsets here end at ``sealed``."""

    sealed: int
    target: int


@dataclass(frozen=True, slots=True)
class MoveCancelled:
    """A cancel applied: the move's seal will be refused."""

    move_id: str


@dataclass(frozen=True, slots=True)
class Adopted:
    """An adopt applied (or found applied): this group's offsets of the queue are
    ``make_offset(instance + delta, index)`` from ``start``."""

    start: int
    delta: int


class QueueMoves:
    """The seals and tenures of one group (see the module docstring)."""

    def __init__(self) -> None:
        self.tenures: dict[QueueKey, list[Tenure]] = {}
        self.cancelled: OrderedDict[str, None] = OrderedDict()
        self.shift: dict[QueueKey, int] = {}  # open tenures with a delta: live offsets
        self.sealed: dict[QueueKey, Tenure] = {}  # queues whose last tenure is sealed

    # --------------------------------------------------------------------------- queries

    def blocked(self, key: QueueKey) -> QueueMoved | None:
        """Why an enqueue into ``key`` is refused here (None: it is not)."""
        t = self.sealed.get(key)
        if t is None:
            return None
        return QueueMoved(
            f"queue {key[1]} of topic {key[0]!r} moved to store set {t.target} (sealed at "
            f"offset {t.sealed}, move {t.sealed_by})",
            {"set": t.target, "sealed": t.sealed, "move": t.sealed_by},
        )

    def adopted(self, key: QueueKey, move_id: str) -> Tenure | None:
        """The tenure move ``move_id`` opened here, if it was adopted."""
        for t in self.tenures.get(key, ()):
            if t.move_id == move_id:
                return t
        return None

    def seal_of(self, key: QueueKey, move_id: str) -> Tenure | None:
        """The tenure move ``move_id`` sealed here, if it did."""
        for t in self.tenures.get(key, ()):
            if t.sealed_by == move_id:
                return t
        return None

    def is_open(self, key: QueueKey) -> bool:
        """Whether the queue was adopted here and not sealed since (it lives here)."""
        ts = self.tenures.get(key)
        return ts is not None and ts[-1].sealed is None and ts[-1].move_id is not None

    def offset(self, key: QueueKey, instance: int, index: int) -> int:
        """The offset of the message at ``(instance, index)`` of queue ``key``."""
        ts = self.tenures.get(key)
        delta = 0
        if ts:
            for t in reversed(ts):
                if instance >= t.start:
                    delta = t.delta
                    break
        return ((instance + delta) << INDEX_BITS) | index

    def read_window(
        self, key: QueueKey, after: int | None
    ) -> tuple[tuple[int, int] | None, int | None, Tenure | None]:
        """Where a read of messages after offset ``after`` starts: ``(position to read after
        (None: from the start), last instance it may read (None: no limit), the tenure)``."""
        ts = self.tenures.get(key)
        if not ts:
            if after is None:
                return None, None, None
            return (after >> INDEX_BITS, after & MAX_INDEX), None, None
        for t in ts:
            if t.sealed is not None and after is not None and after >= t.sealed:
                continue  # past this tenure
            if after is None or after < t.first_offset:
                pos = (t.start - 1, MAX_INDEX) if t.start > 0 else None
            else:
                pos = ((after >> INDEX_BITS) - t.delta, after & MAX_INDEX)
            return pos, t.sealed_instance, t
        last = ts[-1]  # after every tenure of this group: nothing more here
        return (last.sealed_instance or 0, MAX_INDEX), last.sealed_instance, last

    def position_after(self, key: QueueKey, offset: int | None) -> tuple[int, int] | None:
        """The log position a read of the messages after ``offset`` starts after (lag and
        retention count from there)."""
        if key not in self.tenures:
            return None if offset is None else (offset >> INDEX_BITS, offset & MAX_INDEX)
        return self.read_window(key, offset)[0]

    # ----------------------------------------------------------------------------- apply

    def seal(
        self, entry: SealEntry, instance: int, pending: tuple[int, int] = (0, 0)
    ) -> Sealed | BadArgument | MoveBlocked:
        """``pending``: the group's pending (delayed, transactional) messages."""
        key = (entry.topic, entry.queue)
        done = self.seal_of(key, entry.move_id)
        if done is not None:
            assert done.sealed is not None and done.target is not None
            return Sealed(done.sealed, done.target)
        if entry.move_id in self.cancelled:
            return BadArgument(f"move {entry.move_id} was cancelled", {"move": entry.move_id})
        current = self.sealed.get(key)
        if current is not None:
            return BadArgument(
                f"queue {entry.queue} of topic {entry.topic!r} is sealed by move "
                f"{current.sealed_by}",
                {"move": current.sealed_by},
            )
        if any(pending):
            return _blocked(entry, *pending)
        ts = self.tenures.setdefault(key, [Tenure(0, 0)])
        t = ts[-1]
        sealed = ((instance + t.delta) << INDEX_BITS) | MAX_INDEX
        ts[-1] = replace(
            t,
            sealed_instance=instance,
            sealed=sealed,
            sealed_by=entry.move_id,
            target=entry.target,
        )
        self.sealed[key] = ts[-1]
        self.shift.pop(key, None)
        return Sealed(sealed, entry.target)

    def cancel(self, entry: CancelMoveEntry) -> MoveCancelled | BadArgument:
        if self.seal_of((entry.topic, entry.queue), entry.move_id) is not None:
            return BadArgument(
                f"move {entry.move_id} is sealed already: it completes, it cannot be cancelled",
                {"move": entry.move_id},
            )
        self.cancelled[entry.move_id] = None
        if len(self.cancelled) > CANCELLED_REMEMBERED:
            self.cancelled.popitem(last=False)
        return MoveCancelled(entry.move_id)

    def adopt(self, entry: AdoptEntry, instance: int) -> Adopted | BadArgument:
        key = (entry.topic, entry.queue)
        done = self.adopted(key, entry.move_id)
        if done is not None:
            return Adopted(done.start, done.delta)
        ts = self.tenures.get(key)
        if ts and ts[-1].sealed is None:
            return BadArgument(
                f"queue {entry.queue} of topic {entry.topic!r} is open here already",
                {"move": entry.move_id},
            )
        if ts and entry.sealed <= (ts[-1].sealed or 0):
            return BadArgument(f"move {entry.move_id}: its seal is older than this group's")
        delta = max(0, (entry.sealed >> INDEX_BITS) + 1 - instance)
        tenure = Tenure(instance, delta, entry.move_id, opened_after=entry.sealed)
        self.tenures.setdefault(key, []).append(tenure)
        self.sealed.pop(key, None)
        if delta:
            self.shift[key] = delta
        return Adopted(instance, delta)

    # -------------------------------------------------------------------------- snapshot

    def snapshot(self) -> list[Any]:
        return [
            [
                [topic, queue, [list(_tenure_row(t)) for t in ts]]
                for (topic, queue), ts in sorted(self.tenures.items())
            ],
            list(self.cancelled),
        ]

    @classmethod
    def restore(cls, value: Any) -> QueueMoves:
        """``ProtocolError`` if ``value`` is not what :meth:`snapshot` made."""
        out = cls()
        try:
            rows, cancelled = value
            for topic, queue, ts in rows:
                if not isinstance(topic, str) or type(queue) is not int:
                    raise ValueError("bad queue")
                tenures = [_tenure(r) for r in ts]
                if not tenures:
                    raise ValueError("no tenure")
                key = (topic, queue)
                out.tenures[key] = tenures
                last = tenures[-1]
                if last.sealed is not None:
                    out.sealed[key] = last
                elif last.delta:
                    out.shift[key] = last.delta
            for move_id in cancelled:
                if not isinstance(move_id, str):
                    raise ValueError("bad move id")
                out.cancelled[move_id] = None
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"snapshot: bad queue moves: {exc}") from None
        return out


def shifted(moves: QueueMoves, head: Any, done: Released) -> Released:
    """A release's ``done`` with the offsets of a queue moved here (its tenure's delta)."""
    delta = moves.shift.get((head.topic, head.queue), 0) if moves.shift else 0
    if not delta:
        return done
    offsets = tuple(None if o is None else o + (delta << INDEX_BITS) for o in done.offsets)
    return replace(done, offsets=offsets)


def seal_into(state: StoreState, entry: SealEntry, instance: int) -> Sealed | PhxqError:
    """Apply a seal entry to ``state``: refused while the group holds pending delayed messages
    or undecided transaction parts (see the module docstring)."""
    held = state.schedule.count_at(HELD)
    return state.moves.seal(entry, instance, (len(state.schedule) - held, held))


def _blocked(entry: SealEntry, scheduled: int, transactional: int) -> MoveBlocked:
    return MoveBlocked(
        f"queue {entry.topic}/{entry.queue} cannot be sealed yet: its group has {scheduled} "
        f"scheduled and {transactional} transactional messages pending (of any of its queues); "
        "the move waits until they are released, cancelled or decided",
        {"move": entry.move_id, "scheduled": scheduled, "transactional": transactional},
    )


def adopt_into(state: StoreState, entry: AdoptEntry, instance: int) -> Adopted | BadArgument:
    """Apply an adopt entry to ``state``: the tenure, then (the first time only) the source's
    cursors (each kept if newer than ours; the higher token stays), its end offset and its
    dedup ids (remembered with their original offsets)."""
    key = (entry.topic, entry.queue)
    fresh = state.moves.adopted(key, entry.move_id) is None
    result = state.moves.adopt(entry, instance)
    if isinstance(result, BadArgument) or not fresh:
        return result
    cursors = state._cursors
    for cg, offset, token in entry.cursors:
        current = cursors.get((cg, *key))
        if current is None or current[0] < offset:
            cursors[(cg, *key)] = (offset, token if current is None else max(token, current[1]))
    if entry.end is not None and state._end.get(key, -1) < entry.end:
        state._end[key] = entry.end
    for at, dedup_id, ref in entry.dedup:
        state._dedup.remember(entry.topic, at, ref, [dedup_id])
    return result


def _tenure_row(t: Tenure) -> tuple[Any, ...]:
    return (
        t.start,
        t.delta,
        t.move_id,
        t.sealed_instance,
        t.sealed,
        t.sealed_by,
        t.target,
        t.opened_after,
    )


def _tenure(row: Any) -> Tenure:
    start, delta, move_id, sealed_instance, sealed, sealed_by, target, opened_after = row
    for v in (start, delta):
        if type(v) is not int or v < 0:
            raise ValueError("bad tenure")
    for v in (sealed_instance, sealed, target, opened_after):
        if v is not None and (type(v) is not int or v < 0):
            raise ValueError("bad tenure seal")
    for v in (move_id, sealed_by):
        if v is not None and not isinstance(v, str):
            raise ValueError("bad tenure move id")
    return Tenure(start, delta, move_id, sealed_instance, sealed, sealed_by, target, opened_after)
