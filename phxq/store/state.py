"""The store's replicated state machine for one Paxos group: pure, deterministic, no I/O.

Every replica of a group feeds every chosen instance, in instance order, to its
:class:`StoreState`; because the decisions below depend only on the log (never on a local
clock, randomness or arrival order), every replica reaches the same decisions and the same
state (DESIGN §3.1 "decisions inside the log are made at apply time").

Public API::

    StoreState(group: int, *, dedup_window: float, applied_up_to: int = 0)
    .apply(instance: int, items: Sequence[bytes]) -> list[ApplyResult]   # one result per item
    .index_entries(instance: int, items: Sequence[bytes]) -> list[IndexEntry]
    .cursor(consumer_group: str, topic: str, queue: int) -> int | None
    .cursors() -> dict[CursorKey, tuple[int, int]]          # (cg, topic, queue) -> (offset, token)
    .end_offset(topic: str, queue: int) -> int | None       # offset of the queue's last message
    .stats -> Mapping[QueueKey, int]                        # messages ever stored per (topic, queue)
    .applied_up_to: int                                     # last applied instance (0: none)
    .forget_below(instance: int) -> None                    # the log below was truncated
    .snapshot() -> bytes;  StoreState.restore(data: bytes) -> StoreState

    ApplyResult = Enqueued(offsets, duplicates) | Committed(offset) | Rejected(error)
    IndexEntry  = ((topic, queue), index, enqueued_at)

Rules applied to each item of an instance (``items`` = the decoded batch; a no-op has none):

- **Ordinals.** Messages get ``index`` = their ordinal among every message of every decodable
  ``EnqueueEntry`` of the instance (:func:`phxq.store.entries.instance_messages`), and offset
  ``make_offset(instance, index)``. An entry whose messages would reach index 2**20 is
  ``Rejected(BadArgument)`` and stores nothing (its ordinals are still consumed).
- **Dedup.** A message whose ``dedup_id`` (scoped per topic, within this group) was stored by
  an entry whose ``enqueued_at`` is at most ``dedup_window`` seconds before this entry's (or
  after it: master clocks may step back) is not stored again: its result carries the
  *original* offset with ``duplicate=True`` and it gets no index entry. Remembered ids expire
  by the entries' ``enqueued_at`` (the highest seen so far), never by a local clock. A
  ``dedup_window`` of 0 disables dedup.
- **Fencing.** A ``CommitEntry`` whose token is below the highest token applied for its
  ``(consumer_group, topic, queue)`` is ``Rejected(StaleToken)``. Otherwise it sets the cursor,
  except that it may not move the cursor backwards or past the queue's last stored message
  (``Rejected(BadArgument)``); committing the current cursor again is accepted. A commit with
  ``check`` whose ``expect`` is not the current cursor is ``Rejected(VersionMismatch)`` (an
  owner's compare-and-set, so it never overwrites a replay it has not seen).
- **Replay.** A ``ReplayEntry`` sets the cursor to its offset (back, forward, past the end),
  ignoring and keeping the token, once per ``replay_id``: applying the same id again changes
  nothing and answers ``Committed(<offset set the first time>)``. The last
  ``REPLAYS_REMEMBERED`` ids are remembered.
- **Scheduled messages** (rules in :mod:`phxq.store.schedule`). A ``ScheduleEntry`` makes
  its messages pending (``Scheduled``; dedup as for an enqueue) and readable by nobody; a
  ``ReleaseEntry`` gives each due one the instance's next ordinal and an offset (``Released``),
  a ``CancelEntry`` withdraws one (``Cancelled``), a ``RollEntry`` moves pending ones to new
  ids (``Rolled``) so old records may be truncated. ``schedule`` is part of the snapshot.
- **Transactions** (rules in :mod:`phxq.store.txn`). A prepare's half messages are scheduled
  messages due ``HELD`` (``TxnPrepared``); the first decide applied wins (``TxnDecided``); a
  transaction release releases them like a release entry, a discard drops them
  (``TxnDiscarded``). ``txns`` is part of the snapshot (version 4).
- **Queue moves** (rules in :mod:`phxq.store.move_state`). A seal closes a queue here
  (``Sealed``; ``MoveBlocked`` while the group has delayed or transactional messages
  pending), after which its enqueue, schedule and prepare entries are ``Rejected(QueueMoved)``
  (ordinals still consumed); a cancel withdraws an unsealed move; an adopt opens a moved queue
  (``Adopted``) with its cursors, end offset, dedup ids and offset delta. ``moves`` is part of
  the snapshot (version 5).
- **Bad items.** An undecodable item gives ``Rejected(ProtocolError)``: a bad item never
  stops the replica. Rejected items change nothing.

Only ``apply`` changes state. Applying an instance ``<= applied_up_to`` changes nothing and
answers ``Rejected(StorageError)`` for each item; skipping an instance raises ``StorageError``
(the state would silently miss history, e.g. cursors).

**Rebuilding the queue index without double-applying.** ``index_entries`` is a function of
the instance's items plus the positions apply decided *not* to index (duplicates, rejected
entries), which the state keeps per instance (rare, so small; in its snapshot) until
:meth:`forget_below`. Recovery restores the latest snapshot, then calls ``apply`` (a no-op for
instances it covers) and ``index_entries`` for each retained chosen instance in order, as
``phxq.replication.machine.apply_instance`` does live. Truncate only below a persisted snapshot.

Every replica of a group must run with the same ``dedup_window`` (it is cluster config); a
restored state keeps the window of its snapshot.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

from phxq.errors import (
    BadArgument,
    PhxqError,
    ProtocolError,
    StaleToken,
    StorageError,
    VersionMismatch,
)
from phxq.routing import INDEX_BITS
from phxq.store.apply_results import (
    ApplyResult,
    Committed,
    Enqueued,
    Rejected,
    Rolled,
    Scheduled,
    rejected_too_many,
)
from phxq.store.dedup import DedupWindow
from phxq.store.entries import CommitEntry, EnqueueHead, ReplayEntry, peek_entry
from phxq.store.move_entries import AdoptEntry, CancelMoveEntry, SealEntry
from phxq.store.move_state import QueueMoves, adopt_into, seal_into, shifted
from phxq.store.schedule import Cancelled, Released, Schedule, release, scheduled_ref
from phxq.store.schedule_entries import CancelEntry, ReleaseHead, RollHead, ScheduleHead
from phxq.store.state_snapshot import decode_state, encode_state
from phxq.store.txn import TxnBook
from phxq.store.txn_entries import HELD, DecideEntry, DiscardEntry, PrepareHead, TxnReleaseHead

__all__ = [
    "REPLAYS_REMEMBERED",
    "ApplyResult",
    "Committed",
    "CursorKey",
    "Enqueued",
    "IndexEntry",
    "QueueKey",
    "Rejected",
    "Rolled",
    "Scheduled",
    "StoreMachines",
    "StoreState",
]

REPLAYS_REMEMBERED = 4096

QueueKey: TypeAlias = tuple[str, int]
CursorKey: TypeAlias = tuple[str, str, int]
IndexEntry: TypeAlias = tuple[QueueKey, int, float]


class StoreState:
    """Cursors, dedup window and per-queue counters of one group (see the module docstring)."""

    def __init__(self, group: int, *, dedup_window: float, applied_up_to: int = 0) -> None:
        if not isinstance(dedup_window, (int, float)) or not dedup_window >= 0:
            raise BadArgument(f"dedup_window must be a number >= 0, got {dedup_window!r}")
        if applied_up_to < 0:
            raise BadArgument(f"applied_up_to must be >= 0, got {applied_up_to}")
        self.group = group
        self.dedup_window = float(dedup_window)
        self.applied_up_to = applied_up_to
        self._cursors: dict[CursorKey, tuple[int, int]] = {}
        self._replays: OrderedDict[str, int] = OrderedDict()
        self._dedup = DedupWindow(self.dedup_window)
        self._end: dict[QueueKey, int] = {}
        self._enqueued: dict[QueueKey, int] = {}
        # instance -> indexes of its messages that are not in the queue index
        self._unindexed: dict[int, tuple[int, ...]] = {}
        self._unindexed_floor = applied_up_to + 1
        self._last_index: tuple[int, list[IndexEntry]] | None = None
        self.schedule = Schedule()  # pending scheduled messages (phxq.store.schedule)
        self.txns = TxnBook()  # transactions (phxq.store.txn); half messages are in schedule
        self.moves = QueueMoves()  # queue moves (phxq.store.move_state)

    # ------------------------------------------------------------------------- queries

    def cursor(self, consumer_group: str, topic: str, queue: int) -> int | None:
        """The committed cursor (last processed offset), or ``None`` if never set."""
        entry = self._cursors.get((consumer_group, topic, queue))
        return None if entry is None else entry[0]

    def cursors(self) -> dict[CursorKey, tuple[int, int]]:
        """A copy of every cursor: ``(consumer_group, topic, queue) -> (offset, token)``."""
        return dict(self._cursors)

    def end_offset(self, topic: str, queue: int) -> int | None:
        """The offset of the last message stored in ``(topic, queue)``, or ``None``."""
        return self._end.get((topic, queue))

    @property
    def stats(self) -> Mapping[QueueKey, int]:
        """Messages ever stored (duplicates excluded) per ``(topic, queue)``; read-only view."""
        return MappingProxyType(self._enqueued)

    # --------------------------------------------------------------------------- apply

    def apply(self, instance: int, items: Sequence[bytes]) -> list[ApplyResult]:
        """Apply chosen ``instance`` (the next one, exactly once); one result per item."""
        if instance <= self.applied_up_to:
            error = StorageError(f"group {self.group}: instance {instance} already applied")
            return [Rejected(error) for _ in items]
        if instance != self.applied_up_to + 1:
            raise StorageError(
                f"group {self.group}: instance {instance} applied after {self.applied_up_to}; "
                "the instances in between are missing"
            )
        results: list[ApplyResult] = []
        index_entries: list[IndexEntry] = []
        unindexed: list[int] = []
        next_index = 0
        next_scheduled = 0  # ordinals of scheduled messages (their ids): a space of their own
        for item in items:
            try:
                entry = peek_entry(item)
            except ProtocolError as exc:
                results.append(Rejected(exc))
                continue
            if type(entry) is EnqueueHead:
                count = len(entry.dedup_ids)
                moved = self.moves.sealed and self.moves.blocked((entry.topic, entry.queue))
                if moved:
                    unindexed.extend(range(next_index, next_index + count))
                    results.append(Rejected(moved))
                elif not rejected_too_many(instance, next_index, count, results, unindexed):
                    results.append(
                        self._enqueue(instance, next_index, entry, index_entries, unindexed)
                    )
                next_index += count
            elif type(entry) is CommitEntry:
                results.append(self._commit(entry))
            elif type(entry) is ReplayEntry:
                results.append(self._replay(entry))
            elif type(entry) is ScheduleHead:
                count = len(entry.due)
                moved = self.moves.sealed and self.moves.blocked((entry.topic, entry.queue))
                if moved:
                    results.append(Rejected(moved))
                elif not rejected_too_many(instance, next_scheduled, count, results, None):
                    results.append(self._schedule(instance, next_scheduled, entry))
                next_scheduled += count
            elif type(entry) is ReleaseHead:
                count = len(entry.ids)
                if not rejected_too_many(instance, next_index, count, results, unindexed):
                    done = release(
                        self.schedule, instance, next_index, entry, index_entries, unindexed
                    )
                    done = shifted(self.moves, entry, done)
                    self._count_released(entry, done)
                    results.append(done)
                next_index += count
            elif type(entry) is RollHead:
                count = len(entry.ids)
                if not rejected_too_many(instance, next_scheduled, count, results, None):
                    results.append(self._roll(instance, next_scheduled, entry))
                next_scheduled += count
            elif type(entry) is PrepareHead:
                count = len(entry.dedup_ids)
                moved = self.moves.sealed and self.moves.blocked((entry.topic, entry.queue))
                if moved:
                    results.append(Rejected(moved))
                elif not rejected_too_many(instance, next_scheduled, count, results, None):
                    results.append(
                        self.txns.prepare(instance, next_scheduled, entry, self.schedule)
                    )
                next_scheduled += count
            elif type(entry) is TxnReleaseHead:
                count = len(entry.ids)
                if not rejected_too_many(instance, next_index, count, results, unindexed):
                    done = self.txns.release(
                        instance, next_index, entry, self.schedule, index_entries, unindexed
                    )
                    done = shifted(self.moves, entry, done)
                    self._count_released(entry, done)
                    results.append(done)
                next_index += count
            elif type(entry) is DecideEntry:
                results.append(self.txns.decide(entry))
            elif type(entry) is DiscardEntry:
                results.append(self.txns.discard(entry, self.schedule))
            elif type(entry) is SealEntry:
                results.append(_result(seal_into(self, entry, instance)))
            elif type(entry) is CancelMoveEntry:
                results.append(_result(self.moves.cancel(entry)))
            elif type(entry) is AdoptEntry:
                results.append(_result(adopt_into(self, entry, instance)))
            else:
                assert type(entry) is CancelEntry
                sid = self.schedule.current_id(entry.scheduled_id)  # rolled meanwhile?
                # A half message (due HELD) is never cancelled: only its transaction decides.
                held = entry.due == HELD
                results.append(Cancelled(not held and self.schedule.remove(sid, entry.due)))
        self.applied_up_to = instance
        if unindexed:
            self._unindexed[instance] = tuple(unindexed)
        self._last_index = (instance, index_entries)
        return results

    def _enqueue(
        self,
        instance: int,
        first_index: int,
        head: EnqueueHead,
        index_entries: list[IndexEntry],
        unindexed: list[int],
    ) -> Enqueued:
        # One pass per entry: offsets are first + i; only dedup ids cost a step per message.
        topic = head.topic
        queue_key = (topic, head.queue)
        at = head.enqueued_at
        ids = head.dedup_ids
        count = len(ids)
        first = (instance << INDEX_BITS) | first_index
        if self.moves.shift:  # a queue moved here: its offsets continue above the seal
            first += self.moves.shift.get(queue_key, 0) << INDEX_BITS
        duplicates = self._dedup.remember(topic, at, first, ids)
        if duplicates is None:
            stored = count
            index_entries.extend(
                [(queue_key, i, at) for i in range(first_index, first_index + count)]
            )
            self._end[queue_key] = first + count - 1
            result = Enqueued(tuple(range(first, first + count)), (False,) * count)
        else:
            stored = count - len(duplicates)
            offsets: list[int] = []
            flags: list[bool] = []
            last = None
            for i in range(count):
                prior = duplicates.get(i)
                if prior is None:
                    last = first + i
                    offsets.append(last)
                    flags.append(False)
                    index_entries.append((queue_key, first_index + i, at))
                else:
                    offsets.append(prior)
                    flags.append(True)
                    unindexed.append(first_index + i)
            if last is not None:
                self._end[queue_key] = last
            result = Enqueued(tuple(offsets), tuple(flags))
        if stored:
            self._enqueued[queue_key] = self._enqueued.get(queue_key, 0) + stored
        self._dedup.expire(at)
        return result

    def _schedule(self, instance: int, first_index: int, head: ScheduleHead) -> Scheduled:
        # Scheduled ids are instance << 20 | ordinal among the instance's scheduled messages.
        first = scheduled_ref((instance << INDEX_BITS) | first_index)
        duplicates = self._dedup.remember(head.topic, head.enqueued_at, first, head.dedup_ids) or {}
        refs: list[int] = []
        add = self.schedule.add
        for i, due in enumerate(head.due):
            prior = duplicates.get(i)
            if prior is None:
                refs.append(first + i)
                add((instance << INDEX_BITS) | (first_index + i), due)
            else:
                refs.append(prior)
        self._dedup.expire(head.enqueued_at)
        return Scheduled(tuple(refs), tuple(i in duplicates for i in range(len(refs))))

    def _roll(self, instance: int, first_index: int, head: RollHead) -> Rolled:
        base = (instance << INDEX_BITS) | first_index
        moved = [
            self.schedule.roll(sid, due, base + i)
            for i, (sid, due) in enumerate(zip(head.ids, head.due, strict=True))
        ]
        return Rolled(tuple(moved))

    def _count_released(self, head: ReleaseHead | TxnReleaseHead, done: Released) -> None:
        released = [o for o in done.offsets if o is not None]
        if released:
            key = (head.topic, head.queue)
            self._end[key] = released[-1]
            self._enqueued[key] = self._enqueued.get(key, 0) + len(released)

    def _commit(self, entry: CommitEntry) -> ApplyResult:
        key = (entry.consumer_group, entry.topic, entry.queue)
        current = self._cursors.get(key)
        where = f"{entry.consumer_group}/{entry.topic}/{entry.queue}"
        if current is not None and entry.token < current[1]:
            return Rejected(
                StaleToken(
                    f"{where}: token {entry.token} is older than {current[1]}",
                    {"token": entry.token, "current": current[1]},
                )
            )
        if entry.check and (None if current is None else current[0]) != entry.expect:
            return Rejected(
                VersionMismatch(
                    f"{where}: cursor is {None if current is None else current[0]}, "
                    f"not {entry.expect} (moved by a replay?)",
                    {"cursor": None if current is None else current[0]},
                )
            )
        if current is not None and entry.offset < current[0]:
            return Rejected(
                BadArgument(
                    f"{where}: commit {entry.offset} would move the cursor back from "
                    f"{current[0]} (use a replay)",
                    {"cursor": current[0]},
                )
            )
        moves = current is None or entry.offset != current[0]
        end = self._end.get((entry.topic, entry.queue))
        if moves and (end is None or entry.offset > end):
            return Rejected(
                BadArgument(
                    f"{where}: commit {entry.offset} is past the queue's last message {end}",
                    {"end": end},
                )
            )
        self._cursors[key] = (entry.offset, entry.token)
        return Committed(entry.offset)

    def _replay(self, entry: ReplayEntry) -> ApplyResult:
        done = self._replays.get(entry.replay_id)
        if done is not None:
            return Committed(done)
        key = (entry.consumer_group, entry.topic, entry.queue)
        current = self._cursors.get(key)
        self._cursors[key] = (entry.offset, 0 if current is None else current[1])
        self._replays[entry.replay_id] = entry.offset
        if len(self._replays) > REPLAYS_REMEMBERED:
            self._replays.popitem(last=False)
        return Committed(entry.offset)

    # -------------------------------------------------------------------- queue index

    def index_entries(self, instance: int, items: Sequence[bytes]) -> list[IndexEntry]:
        """``((topic, queue), index, enqueued_at)`` of every message of applied ``instance``
        that was stored (duplicates and rejected entries excluded), in index order.

        Exact for any instance in ``[forget_below bound, applied_up_to]`` given that
        instance's items; raises ``StorageError`` outside that range."""
        last = self._last_index
        if last is not None and last[0] == instance:
            return list(last[1])
        if not self._unindexed_floor <= instance <= self.applied_up_to:
            raise StorageError(
                f"group {self.group}: cannot index instance {instance}: state covers "
                f"[{self._unindexed_floor}, {self.applied_up_to}]"
            )
        skip = set(self._unindexed.get(instance, ()))
        out: list[IndexEntry] = []
        index = 0
        for item in items:
            try:
                head = peek_entry(item)
            except ProtocolError:
                continue
            if type(head) is EnqueueHead:
                at, count = head.enqueued_at, len(head.dedup_ids)
            elif type(head) is ReleaseHead or type(head) is TxnReleaseHead:
                at, count = head.released_at, len(head.ids)
            else:
                continue
            queue_key = (head.topic, head.queue)
            for i in range(index, index + count):
                if i not in skip:
                    out.append((queue_key, i, at))
            index += count
        return out

    def forget_below(self, instance: int) -> None:
        """The log below ``instance`` is gone: drop what only indexing it needed."""
        if instance <= self._unindexed_floor:
            return
        self._unindexed_floor = instance
        for old in [i for i in self._unindexed if i < instance]:
            del self._unindexed[old]

    # ----------------------------------------------------------------------- snapshot

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state (cursors, dedup window, replay ids, counters,
        unindexed positions, ``applied_up_to``): states that will make the same decisions
        give equal bytes, whichever way they were reached (:mod:`phxq.store.state_snapshot`)."""
        return encode_state(self)

    @classmethod
    def restore(cls, data: bytes) -> StoreState:
        """The state :meth:`snapshot` captured. ``ProtocolError`` if ``data`` is malformed
        (it may come from a peer)."""
        return decode_state(cls, data)


def _result(outcome: Any) -> Any:
    """A move_state outcome as an apply result (an error is ``Rejected``)."""
    return Rejected(outcome) if isinstance(outcome, PhxqError) else outcome


@dataclass(frozen=True, slots=True)
class StoreMachines:
    """Makes every group's ``StoreState`` (the replication runtime's ``Machines``)."""

    dedup_window: float

    def fresh(self, group: int) -> StoreState:
        return StoreState(group, dedup_window=self.dedup_window)

    def restore(self, group: int, data: bytes) -> StoreState:
        return StoreState.restore(data)
