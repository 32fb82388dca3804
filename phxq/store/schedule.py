"""Pending scheduled messages of one group, ordered by (due time, id): pure, no I/O, no clock.

Part of the store's replicated state (:class:`phxq.store.state.StoreState` owns one and feeds it
the schedule, release and cancel entries of :mod:`phxq.store.schedule_entries` at apply time).
Every decision below depends only on the entries, so every replica decides the same.

Public API::

    Schedule()
    .add(scheduled_id: int, due: float) -> None            # a message became pending
    .remove(scheduled_id: int, due: float) -> bool         # True: it was pending (and is no more)
    .contains(scheduled_id: int, due: float) -> bool
    .due(now: float, limit: int) -> list[tuple[float, int]]  # pending with due <= now, by (due, id)
    .next_due() -> float | None                            # earliest pending due time
    .oldest_id() -> int | None                             # smallest pending id (retention floor)
    .count_at(due) -> int                                  # pending in due's bucket (half messages)
    .roll(scheduled_id, due, new_id) -> bool               # moved to a newer copy of its record
    .current_id(original_id) -> int;  .below(instance, limit) -> list[tuple[float, int]]
    len(schedule)                                          # pending messages
    .snapshot() -> list;  Schedule.restore(rows) -> Schedule   # ProtocolError if malformed

    release(schedule, instance, first_index, head, index_entries, unindexed) -> Released
    SCHEDULED_FLAG, is_scheduled_ref(ref), scheduled_ref(id), scheduled_id_of(ref)

**Release once, never early.** A release entry stamped ``released_at`` (the proposing master's
wall clock) releases a message only if it is pending with exactly that ``(id, due)`` and
``due <= released_at``; it then stops being pending, so any later release of it (a duplicate
proposal, an old master's release arriving after the new master's) and any cancel are no-ops.
A cancel of a message that is no longer pending is a no-op too.

**Rolls keep the log short.** A pending message's record may not be truncated; so that one
message due in 40 days does not pin 40 days of log, the master *rolls* the ones whose record is
below the floor retention wants: a roll entry copies the message further on and moves it to a
new id (if it is still pending; else it is a no-op). Its original id, the one its producer
holds, keeps naming it: cancels resolve it (:meth:`Schedule.current_id`) when they apply.

**Memory and time.** Ids and due times live in ``array`` buckets of ``BUCKET_SECONDS`` of due
time: 16 bytes a pending message plus about 0.3 KB a non-empty bucket (at most one per minute of due
time: 40 days of minutes is 57,600 buckets), never a Python object per message; payloads stay in
the log. Ids inside a bucket are kept sorted (they arrive in apply order, i.e. increasing), so
membership is a binary search; a removal only marks the entry (the bucket is compacted when
half of it is gone); ``due`` sorts a due bucket once and then walks it from the front.
The snapshot stores each bucket's arrays as raw little-endian bytes, so a million pending
messages checkpoint and restore in milliseconds plus validation.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, insort
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final

from phxq.errors import ProtocolError
from phxq.routing import INDEX_BITS

__all__ = [
    "BUCKET_SECONDS",
    "HELD",
    "SCHEDULED_FLAG",
    "Cancelled",
    "Released",
    "Schedule",
    "is_scheduled_ref",
    "release",
    "scheduled_id_of",
    "scheduled_ref",
]

BUCKET_SECONDS: Final = 60.0
# The due time of a transaction's half message (phxq.store.txn): never due, and never released
# by a release entry whatever its stamp; only its transaction's decision makes it readable.
HELD: Final = float(2**52)
# A dedup window entry (and an apply result) that refers to a scheduled id rather than an
# offset has this bit set (offsets and ids are instance << 20 | index, far below it).
SCHEDULED_FLAG: Final = 1 << 62


def scheduled_ref(scheduled_id: int) -> int:
    return scheduled_id | SCHEDULED_FLAG


def is_scheduled_ref(ref: int) -> bool:
    return bool(ref & SCHEDULED_FLAG)


def scheduled_id_of(ref: int) -> int:
    return ref & ~SCHEDULED_FLAG


@dataclass(frozen=True, slots=True)
class Released:
    """A release entry was applied: per message, its new offset, or None if applying it was a
    no-op (not pending: already released or cancelled; or not due by ``released_at``)."""

    offsets: tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A cancel entry was applied: ``done`` is False if the message was not pending."""

    done: bool


_GONE: Final = math.inf  # the due time of a removed entry until its bucket is compacted


class _Bucket:
    """Ids (sorted) and due times of one bucket. A removal marks the entry ``_GONE`` (no
    memmove of a big array per release); the bucket is compacted once half of it is gone."""

    __slots__ = ("adds", "dues", "gone", "ids")

    def __init__(self) -> None:
        self.dues = array("d")
        self.ids = array("q")
        self.adds = 0  # additions so far (a release order built before one is stale)
        self.gone = 0  # entries marked _GONE

    def live(self) -> tuple[array[float], array[int]]:
        """(dues, ids) without the removed entries."""
        if not self.gone:
            return self.dues, self.ids
        keep = [i for i, d in enumerate(self.dues) if d != _GONE]
        return array("d", [self.dues[i] for i in keep]), array("q", [self.ids[i] for i in keep])

    def compact(self) -> None:
        self.dues, self.ids = self.live()
        self.gone = 0


class _ReleaseOrder:
    """A bucket's entries sorted by (due, id) as of ``adds`` additions, and how far from the
    front every entry is gone (released or cancelled). Removals never make it stale: removed
    entries are skipped. Only the master's releaser builds these (for the buckets that are
    due), so a bucket of a million due at once is sorted once, not once per release round."""

    __slots__ = ("adds", "dues", "ids", "pos")

    def __init__(self, bucket: _Bucket) -> None:
        dues, ids = bucket.live()
        order = sorted(range(len(ids)), key=lambda i: (dues[i], ids[i]))
        self.dues = array("d", [dues[i] for i in order])
        self.ids = array("q", [ids[i] for i in order])
        self.adds = bucket.adds
        self.pos = 0


def _key(due: float) -> int:
    return math.floor(due / BUCKET_SECONDS)


class Schedule:
    """The pending scheduled messages of one group (see the module docstring)."""

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._orders: dict[int, _ReleaseOrder] = {}  # see _ReleaseOrder (not replicated state)
        self._keys: list[int] = []  # sorted keys of the non-empty buckets
        self._count = 0
        self._next_due: float | None = None  # cache of next_due(); None: recompute
        # Rolled messages (see roll): original id -> current id, and back.
        self._forward: dict[int, int] = {}
        self._origin: dict[int, int] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, scheduled_id: int, due: float) -> None:
        """Make ``scheduled_id`` pending until ``due`` (ids are unique; callers add them in
        increasing order, which keeps this O(1))."""
        key = _key(due)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
            insort(self._keys, key)
        bucket.adds += 1
        ids = bucket.ids
        if not ids or scheduled_id > ids[-1]:
            ids.append(scheduled_id)
            bucket.dues.append(due)
        else:
            at = bisect_left(ids, scheduled_id)
            if at < len(ids) and ids[at] == scheduled_id:
                raise ValueError(f"scheduled id {scheduled_id} is already pending")
            ids.insert(at, scheduled_id)
            bucket.dues.insert(at, due)
        self._count += 1
        if self._next_due is not None and due < self._next_due:
            self._next_due = due

    def _find(self, scheduled_id: int, due: float) -> tuple[int, _Bucket, int] | None:
        key = _key(due)
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        at = bisect_left(bucket.ids, scheduled_id)
        if at == len(bucket.ids) or bucket.ids[at] != scheduled_id or bucket.dues[at] != due:
            return None
        return key, bucket, at

    def contains(self, scheduled_id: int, due: float) -> bool:
        return self._find(scheduled_id, due) is not None

    def remove(self, scheduled_id: int, due: float) -> bool:
        """Stop ``scheduled_id`` being pending; False (and nothing changes) if it was not
        pending with this due time."""
        found = self._find(scheduled_id, due)
        if found is None:
            return False
        key, bucket, at = found
        bucket.dues[at] = _GONE
        bucket.gone += 1
        if bucket.gone == len(bucket.ids):
            del self._buckets[key]
            self._orders.pop(key, None)
            del self._keys[bisect_left(self._keys, key)]
        elif bucket.gone * 2 > len(bucket.ids):
            bucket.compact()
        self._count -= 1
        if self._next_due is not None and due <= self._next_due:
            self._next_due = None
        original = self._origin.pop(scheduled_id, None)
        if original is not None:
            del self._forward[original]
        return True

    def roll(self, scheduled_id: int, due: float, new_id: int) -> bool:
        """Move pending ``scheduled_id`` to ``new_id`` (a copy of its record further on in the
        log, so the old one may be truncated); False (nothing changes) if it was not pending.
        Its original id keeps naming it (:meth:`current_id`)."""
        original = self._origin.get(scheduled_id, scheduled_id)
        if not self.remove(scheduled_id, due):
            return False
        self.add(new_id, due)
        self._forward[original] = new_id
        self._origin[new_id] = original
        return True

    def current_id(self, scheduled_id: int) -> int:
        """The id a (client-visible, original) scheduled id has now, after any rolls."""
        return self._forward.get(scheduled_id, scheduled_id)

    def below(self, instance_bound: int, limit: int) -> list[tuple[float, int]]:
        """Up to ``limit`` pending ``(due, id)`` whose record is below ``instance_bound``."""
        bound = instance_bound << INDEX_BITS
        out: list[tuple[float, int]] = []
        for key in self._keys:
            bucket = self._buckets[key]
            for at in range(bisect_left(bucket.ids, bound)):
                if bucket.dues[at] != _GONE:
                    out.append((bucket.dues[at], bucket.ids[at]))
                    if len(out) >= limit:
                        return out
        return out

    def count_at(self, due: float) -> int:
        """Pending messages in the bucket of ``due`` (with ``txn_entries.HELD``: exactly the
        held half messages of transactions, as nothing else may be due that far ahead)."""
        bucket = self._buckets.get(_key(due))
        return 0 if bucket is None else len(bucket.ids) - bucket.gone

    def next_due(self) -> float | None:
        if self._next_due is None and self._keys:
            self._next_due = min(self._buckets[self._keys[0]].dues)
        return self._next_due

    def due(self, now: float, limit: int) -> list[tuple[float, int]]:
        """Up to ``limit`` pending ``(due, id)`` with ``due <= now``, in (due, id) order. Each
        due bucket is sorted once (until something is added to it), so a release round costs
        O(limit log n), not a scan of the bucket."""
        out: list[tuple[float, int]] = []
        for key in self._keys:
            if key * BUCKET_SECONDS > now or len(out) >= limit:
                break
            bucket = self._buckets[key]
            order = self._orders.get(key)
            if order is None or order.adds != bucket.adds:
                order = self._orders[key] = _ReleaseOrder(bucket)
            dues, ids, count = order.dues, order.ids, len(order.ids)
            i = order.pos
            gone_so_far = True  # every entry between pos and i is gone
            while i < count and len(out) < limit:
                d = dues[i]
                if d > now:
                    break
                sid = ids[i]
                at = bisect_left(bucket.ids, sid)
                if at < len(bucket.ids) and bucket.ids[at] == sid and bucket.dues[at] == d:
                    out.append((d, sid))
                    gone_so_far = False
                elif gone_so_far:
                    order.pos = i + 1
                i += 1
        return out

    def oldest_id(self) -> int | None:
        """The smallest pending id (its record's instance bounds log truncation)."""
        return min((_first_live(b) for b in self._buckets.values()), default=None)

    # ----------------------------------------------------------------------- snapshot

    def forwards(self) -> list[bytes]:
        """Canonical ``[originals, currents]`` (little-endian int64) of the rolled messages."""
        pairs = sorted(self._forward.items())
        return [_le(array("q", [o for o, _ in pairs])), _le(array("q", [c for _, c in pairs]))]

    def restore_forwards(self, value: object) -> None:
        """Set the rolled messages from :meth:`forwards` (``ProtocolError`` if malformed)."""
        if not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, bytes) and len(v) % 8 == 0 for v in value)
            and len(value[0]) == len(value[1])
        ):
            raise ProtocolError("snapshot: bad rolled scheduled messages")
        originals, currents = array("q"), array("q")
        originals.frombytes(value[0])
        currents.frombytes(value[1])
        if sys.byteorder != "little":
            originals.byteswap()
            currents.byteswap()
        self._forward = dict(zip(originals, currents, strict=True))
        self._origin = dict(zip(currents, originals, strict=True))
        if len(self._forward) != len(originals) or len(self._origin) != len(currents):
            raise ProtocolError("snapshot: rolled scheduled messages repeat an id")

    def snapshot(self) -> list[list[Any]]:
        """Canonical rows ``[key, dues bytes, ids bytes]`` (little-endian), by key."""
        rows = []
        for key in self._keys:
            dues, ids = self._buckets[key].live()
            rows.append([key, _le(dues), _le(ids)])
        return rows

    @classmethod
    def restore(cls, rows: object) -> Schedule:
        """The schedule :meth:`snapshot` captured (``ProtocolError`` if malformed)."""
        if not isinstance(rows, list):
            raise ProtocolError("snapshot: schedule must be an array")
        schedule = cls()
        previous: int | None = None
        for row in rows:
            if not (
                isinstance(row, list)
                and len(row) == 3
                and type(row[0]) is int
                and isinstance(row[1], bytes)
                and isinstance(row[2], bytes)
                and len(row[1]) == len(row[2])
                and row[1]
                and len(row[1]) % 8 == 0
            ):
                raise ProtocolError("snapshot: bad schedule bucket")
            key = row[0]
            if previous is not None and key <= previous:
                raise ProtocolError("snapshot: schedule buckets out of order")
            previous = key
            bucket = _Bucket()
            bucket.dues.frombytes(row[1])
            bucket.ids.frombytes(row[2])
            if sys.byteorder != "little":
                bucket.dues.byteswap()
                bucket.ids.byteswap()
            # Checked at C speed (a million entries restore in well under a second): finite
            # due times inside the bucket, ids strictly increasing and not negative.
            dues, ids = bucket.dues, bucket.ids
            ordered = sorted(ids)
            if (
                not math.isfinite(math.fsum(dues))
                or _key(min(dues)) != key
                or _key(max(dues)) != key
                or ordered[0] < 0
                or ids.tolist() != ordered
                or len(set(ordered)) != len(ordered)
            ):
                raise ProtocolError("snapshot: bad schedule entry")
            schedule._buckets[key] = bucket
            schedule._keys.append(key)
            schedule._count += len(bucket.ids)
        return schedule


def _first_live(bucket: _Bucket) -> int:
    for sid, due in zip(bucket.ids, bucket.dues, strict=True):
        if due != _GONE:
            return sid
    raise AssertionError("an empty bucket is deleted")


def _le(values: array[Any]) -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def release(
    schedule: Schedule,
    instance: int,
    first_index: int,
    head: Any,
    index_entries: list[tuple[tuple[Hashable, int], int, float]] | list[Any],
    unindexed: list[int],
) -> Released:
    """Apply a release entry's ``head`` (a ``ReleaseHead``) whose messages have indexes
    ``first_index...`` in ``instance``: each pending one due by ``released_at`` is released
    (removed from ``schedule``, its index entry appended); the others go to ``unindexed``."""
    at = head.released_at
    queue_key = (head.topic, head.queue)
    base = instance << INDEX_BITS
    offsets: list[int | None] = []
    for i, (sid, due) in enumerate(zip(head.ids, head.due, strict=True)):
        index = first_index + i
        if due <= at and due != HELD and schedule.remove(sid, due):
            offsets.append(base | index)
            index_entries.append((queue_key, index, at))
        else:
            offsets.append(None)
            unindexed.append(index)
    return Released(tuple(offsets))
