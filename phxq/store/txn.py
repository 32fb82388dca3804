"""Transactional messages: the protocol, and the pure per-group transaction book.

The protocol (RocketMQ-style half messages, atomic over queues and groups; DESIGN §7.1)
------------------------------------------------------------------------------------

- **Ids and home.** A transaction has a random id (128 bits, the client's) and a *home group*:
  the group of the queue of its first message, named by ``(store set, group)``. Its
  *participants* are the groups holding any of its messages, on any store sets; the home is
  always one of them. A prepare record names its home by group alone when the home is on the
  record's own set (``home_set`` None: every record written before transactions spanned sets),
  and by set and group otherwise; the home's expected parts likewise (``(group, part)`` on the
  home's set, ``(group, part, set)`` elsewhere).
- **Prepare.** The client sends the home group's half messages first (``txn_prepare``), then
  the other participants' in parallel. Each is a prepare entry (:mod:`phxq.store.txn_entries`)
  in that participant's log: when ``prepare`` returns, every half message is chosen (durable
  on a majority) and readable by nobody. Half messages are *scheduled messages that are never
  due* (due ``HELD``): the machinery of delayed messages holds them (ids, retention never
  truncating a pending record, rolls, snapshots). Each prepare request carries a part number;
  a retried one applies once. Because the home is prepared first, any participant holding
  half messages of a transaction implies a prepare record in the home group (so the home's
  master will decide it, below).
- **Decide.** The decision is ONE entry in the home group: the first decide entry applied for
  the id wins (decided at apply, identically on every replica: DESIGN §3.1); every later
  decide entry -- a duplicate, a retry after a home master failover, a check-back racing
  the producer, a timeout racing a late commit -- is a no-op answered with the first
  decision. So a commit after a rollback, or the reverse, cannot exist. Who proposes one: the
  producer (commit / rollback), the home master's check-back (the producer group's handler
  answered), the home master at the timeout (no handler) or at the maximum age (the handler
  never answered), an operator (``admin txn resolve``).
- **Apply the decision, exactly once per participant.** A participant's master proposes a
  release (commit) or discard (rollback) entry for the transaction only after reading the
  decision from the home group's applied state: its own replica of the home group when the
  home is on its set (every store of a set holds every group of the set), else the home
  group's master on the home's set, asked over RPC (``txn_peek``, a member-only method;
  :mod:`phxq.store.txn_remote`). A decision read from any replica is final (first wins), so
  a stale or unreachable answer only delays the participant, never contradicts the home. The client forwards the decision
  (``txn_resolve``) so that it applies at once; the participant masters also look at their
  open transactions every tick and apply any decision that became known, so a producer crash
  right after deciding delays nothing beyond a tick. At apply: a release makes each of the
  listed half messages that is still pending readable, with an offset of the releasing
  instance (so each queue's offset is assigned at commit); a discard drops all of them; the
  first of the two kinds applied fixes the participant's outcome and the other kind is then
  a no-op (a belt under the braces above). A release or discard of a message no longer pending
  is a no-op, so duplicated and reordered decision messages are harmless.
- **Atomicity argument.** A half message becomes readable only by a release of its
  transaction, which is proposed only after a commit decision was applied in the home group;
  it is dropped only by a discard, proposed only after a rollback decision. The home group
  applies exactly one decision per transaction (first wins), and every participant reads that
  one, so no participant releases while another discards: readers see all of a transaction's
  messages (each once: a release of a message no longer pending is a no-op) or none, and
  until every participant has applied the commit, some may be visible earlier than others
  (as in Kafka's read-committed, per partition). Liveness: the home master decides every
  prepared transaction at the latest at its maximum age; participants apply the decision on
  their next tick; retention never drops a pending half message (its group's log keeps or
  rolls its record).
- **Forgetting.** A group remembers decisions and finished transactions for ``REMEMBER``
  seconds of log time (stamps of the entries, never a local clock), so a late duplicate prepare
  of a finished transaction is refused (``Rejected(TransactionAborted)``: closed) instead of
  opening it again. A participant that cannot apply its home's decision for longer than that
  (its group without a majority for an hour) keeps its half messages held (listed by ``admin
  txn list``); the home refuses an operator's decision for a transaction it no longer knows,
  so nothing can contradict the forgotten one: documented limit.

The book (pure, deterministic; part of :class:`phxq.store.state.StoreState`)
-------------------------------------------------------------------------

::

    TxnBook()
    .prepare(instance, first_k, head, schedule) -> TxnPrepared | Rejected-worthy PhxqError
    .decide(entry) -> TxnDecided                   # home group: first decision wins
    .release(instance, first_index, head, schedule, index_entries, unindexed) -> Released
    .discard(entry, schedule) -> TxnDiscarded
    .open -> Mapping[str, OpenTxn];  .decision(txn) -> bool | None;  .outcome(txn) -> ...
    .snapshot() -> list;  TxnBook.restore(value) -> TxnBook
    all_prepared(txn, home_book, book_of, remote={}) -> bool   # may a check-back commit?
    remote_groups(txn, home_book) -> set[(set, group)]         # parts on other store sets
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from phxq import validate
from phxq.errors import ProtocolError
from phxq.routing import INDEX_BITS
from phxq.store.schedule import Released, Schedule
from phxq.store.txn_entries import HELD, DecideEntry, DiscardEntry, PrepareHead, TxnReleaseHead

__all__ = [
    "REMEMBER",
    "OpenTxn",
    "TxnBook",
    "TxnDecided",
    "TxnDiscarded",
    "TxnPrepared",
    "all_prepared",
    "remote_groups",
]

# Seconds of log time decisions and finished transactions are kept: long past any retry of a
# prepare, and a participant applies a decision within a tick; bounded so that memory is too
# (100 transactions/s: 360,000 entries, tens of MB).
REMEMBER: Final = 3600.0


@dataclass(frozen=True, slots=True)
class TxnPrepared:
    """A prepare entry was applied: the half messages' scheduled ids (empty for a retried part
    already applied), ``closed`` if the transaction was already finished here (nothing held)."""

    ids: tuple[int, ...]
    duplicate: bool = False
    closed: bool = False


@dataclass(frozen=True, slots=True)
class TxnDecided:
    """A decide entry was applied: the transaction's decision (the first one), and whether
    this entry made it."""

    commit: bool
    first: bool
    reason: str


@dataclass(frozen=True, slots=True)
class TxnDiscarded:
    """A discard entry was applied: how many half messages it dropped (0 if none pending, or
    the participant had already released the transaction)."""

    dropped: int


@dataclass(slots=True)
class OpenTxn:
    """A transaction with half messages in this group, not yet finished here."""

    home: int
    producer_group: str | None
    prepared_at: float  # the first prepare applied here (the proposing master's clock)
    timeout: float
    parts: set[int] = field(default_factory=set)
    ids: list[int] = field(default_factory=list)  # original scheduled ids of its half messages
    # home: every (group, part) on its own set, (group, part, set) on another
    expect: set[tuple[int, ...]] = field(default_factory=set)
    outcome: bool | None = None  # set by the first release (True) or discard (False) applied
    home_set: int | None = None  # the home's store set; None: this group's own set

    def is_home(self, group: int) -> bool:
        """Is ``group`` (of this book's set) the transaction's home?"""
        return self.home_set is None and self.home == group


class TxnBook:
    """The transactions of one group (see the module docstring)."""

    def __init__(self) -> None:
        self.open: dict[str, OpenTxn] = {}
        # home decisions and finished transactions: txn -> (commit, log time), in apply order
        self._decided: OrderedDict[str, tuple[bool, float, str]] = OrderedDict()
        self._finished: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._latest = 0.0  # highest log time seen (expiry of the two maps above)

    # ----------------------------------------------------------------------------- queries

    def decision(self, txn: str) -> bool | None:
        """The home group's decision of ``txn`` (None: undecided or forgotten)."""
        found = self._decided.get(txn)
        return None if found is None else found[0]

    def decided(self) -> int:
        return len(self._decided)

    def finished(self, txn: str) -> bool | None:
        """The outcome of a transaction finished in this group (None: open or unknown)."""
        found = self._finished.get(txn)
        return None if found is None else found[0]

    def pending_ids(self, txn: str, schedule: Schedule) -> list[int]:
        """Current scheduled ids of ``txn``'s half messages still pending here."""
        record = self.open.get(txn)
        if record is None:
            return []
        out = []
        for original in record.ids:
            sid = schedule.current_id(original)
            if schedule.contains(sid, HELD):
                out.append(sid)
        return out

    # ------------------------------------------------------------------------------ apply

    def prepare(
        self, instance: int, first_k: int, head: PrepareHead, schedule: Schedule
    ) -> TxnPrepared:
        """Hold ``head``'s half messages (scheduled ids ``instance << 20 | first_k + i``)."""
        self._tick(head.enqueued_at)
        if head.txn in self._finished:
            return TxnPrepared((), closed=True)
        record = self.open.get(head.txn)
        if record is None:
            record = self.open[head.txn] = OpenTxn(
                head.home, head.producer_group, head.enqueued_at, head.timeout
            )
            record.home_set = head.home_set
        elif head.part in record.parts:
            return TxnPrepared((), duplicate=True)
        if record.outcome is not None:
            # Already being released or discarded here: holding more would leave them behind.
            return TxnPrepared((), closed=True)
        record.parts.add(head.part)
        record.expect.update(head.expect)
        base = (instance << INDEX_BITS) | first_k
        ids = tuple(range(base, base + len(head.dedup_ids)))
        for sid in ids:
            schedule.add(sid, HELD)
        record.ids.extend(ids)
        return TxnPrepared(ids)

    def decide(self, entry: DecideEntry) -> TxnDecided:
        self._tick(entry.decided_at)
        found = self._decided.get(entry.txn)
        if found is not None:
            return TxnDecided(found[0], False, found[2])
        self._decided[entry.txn] = (entry.commit, entry.decided_at, entry.reason)
        return TxnDecided(entry.commit, True, entry.reason)

    def release(
        self,
        instance: int,
        first_index: int,
        head: TxnReleaseHead,
        schedule: Schedule,
        index_entries: list[Any],
        unindexed: list[int],
    ) -> Released:
        """Each listed id that is a pending half message of ``head.txn`` becomes readable (the
        next ordinals of the instance); the others are no-ops, as is all of it once the
        transaction was discarded here."""
        self._tick(head.released_at)
        record = self.open.get(head.txn)
        mine: set[int] = set()
        if record is not None and record.outcome is not False:
            mine = {schedule.current_id(o) for o in record.ids}
        queue_key = (head.topic, head.queue)
        base = instance << INDEX_BITS
        offsets: list[int | None] = []
        for i, sid in enumerate(head.ids):
            index = first_index + i
            if sid in mine and schedule.remove(sid, HELD):
                offsets.append(base | index)
                index_entries.append((queue_key, index, head.released_at))
            else:
                offsets.append(None)
                unindexed.append(index)
        if record is not None and record.outcome is None and any(o is not None for o in offsets):
            record.outcome = True
        self._maybe_finish(head.txn, schedule)
        return Released(tuple(offsets))

    def discard(self, entry: DiscardEntry, schedule: Schedule) -> TxnDiscarded:
        self._tick(entry.discarded_at)
        record = self.open.get(entry.txn)
        if record is None or record.outcome is True:
            return TxnDiscarded(0)
        record.outcome = False
        dropped = sum(schedule.remove(sid, HELD) for sid in self.pending_ids(entry.txn, schedule))
        self._maybe_finish(entry.txn, schedule)
        return TxnDiscarded(dropped)

    def _maybe_finish(self, txn: str, schedule: Schedule) -> None:
        record = self.open.get(txn)
        if record is None or record.outcome is None or self.pending_ids(txn, schedule):
            return
        del self.open[txn]
        self._finished[txn] = (record.outcome, self._latest)

    def _tick(self, at: float) -> None:
        if at > self._latest:
            self._latest = at
        horizon = self._latest - REMEMBER
        maps: tuple[OrderedDict[str, Any], ...] = (self._decided, self._finished)
        for remembered in maps:
            while remembered:
                txn, value = next(iter(remembered.items()))
                if value[1] >= horizon:  # (commit, log time, ...)
                    break
                del remembered[txn]

    # ----------------------------------------------------------------------------- snapshot

    def snapshot(self) -> list[Any]:
        """Canonical rows of the whole book."""
        return [
            self._latest,
            [
                [
                    txn,
                    r.home,
                    r.producer_group,
                    r.prepared_at,
                    r.timeout,
                    sorted(r.parts),
                    r.ids,
                    r.outcome,
                    [list(e) for e in sorted(r.expect)],
                ]
                + ([] if r.home_set is None else [r.home_set])
                for txn, r in sorted(self.open.items())
            ],
            [[txn, c, at, why] for txn, (c, at, why) in self._decided.items()],
            [[txn, c, at] for txn, (c, at) in self._finished.items()],
        ]

    @classmethod
    def restore(cls, value: object) -> TxnBook:
        """The book :meth:`snapshot` captured (``ProtocolError`` if malformed)."""
        if not (isinstance(value, list) and len(value) == 4 and type(value[0]) is float):
            raise ProtocolError("snapshot: bad transaction book")
        book = cls()
        book._latest = value[0]
        try:
            for row in _rows(value[1], 9, 10):
                txn, home, producer, at, timeout, parts, ids, outcome, expect = row[:9]
                if producer is not None:
                    _text(producer)
                if outcome not in (None, True, False) or type(at) is not float:
                    raise ProtocolError("snapshot: bad open transaction")
                if type(timeout) is not float or not isinstance(parts, list):
                    raise ProtocolError("snapshot: bad open transaction")
                if not isinstance(ids, list):
                    raise ProtocolError("snapshot: bad open transaction")
                record = OpenTxn(_uint(home), producer, at, timeout)
                record.parts = {_uint(p) for p in parts}
                record.ids = [_uint(i) for i in ids]
                record.outcome = outcome
                record.expect = {tuple(_uint(x) for x in e) for e in _rows(expect, 2, 3)}
                record.home_set = _uint(row[9]) if len(row) == 10 else None
                book.open[_text(txn)] = record
            for txn, commit, at, why in _rows(value[2], 4):
                if type(commit) is not bool or type(at) is not float or type(why) is not str:
                    raise ProtocolError("snapshot: bad transaction decision")
                book._decided[_text(txn)] = (commit, at, why)
            for txn, commit, at in _rows(value[3], 3):
                if type(commit) is not bool or type(at) is not float:
                    raise ProtocolError("snapshot: bad finished transaction")
                book._finished[_text(txn)] = (commit, at)
        except ValueError:
            raise ProtocolError("snapshot: bad transaction book") from None
        return book


def all_prepared(
    txn: str,
    home: TxnBook,
    book_of: Callable[[int], TxnBook | None],
    remote: Mapping[tuple[int, int], Collection[int] | None] | None = None,
) -> bool:
    """True when every ``(group, part)`` the home's prepare record of ``txn`` expects is held
    in that group (``book_of(group)``: its applied state, possibly behind; None: unknown), and
    every ``(group, part, set)`` on another store set is among ``remote[(set, group)]`` (the
    parts that group holds, as its master answered; missing or None: unknown).
    The home's master commits on a check-back answer only then: a producer that crashed
    mid-prepare has a participant without its half messages, and a commit would be partial."""
    record = home.open.get(txn)
    if record is None or not record.expect:
        return False
    for want in record.expect:
        group, part = want[0], want[1]
        if len(want) == 3:
            parts = (remote or {}).get((want[2], group))
            if parts is None or part not in parts:
                return False
            continue
        book = book_of(group)
        held = None if book is None else book.open.get(txn)
        if held is None or part not in held.parts:
            return False
    return True


def remote_groups(txn: str, home: TxnBook) -> set[tuple[int, int]]:
    """``(set, group)`` of each participant of ``txn`` on another store set than its home
    (from the home's prepare record; empty if it has none)."""
    record = home.open.get(txn)
    if record is None:
        return set()
    return {(e[2], e[0]) for e in record.expect if len(e) == 3}


def _uint(value: object) -> int:
    return validate.integer(value, "snapshot field", error=ProtocolError)


def _text(value: object) -> str:
    return validate.text(value, "snapshot field", error=ProtocolError)


def _rows(value: object, width: int, widest: int | None = None) -> list[list[Any]]:
    widths = range(width, (widest or width) + 1)
    if not isinstance(value, list) or not all(
        isinstance(row, list) and len(row) in widths for row in value
    ):
        raise ProtocolError(f"snapshot: expected an array of {width}-element arrays")
    return value
