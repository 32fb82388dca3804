"""The store's runtime for delayed and scheduled messages (the pure parts: ``schedule`` and
``schedule_entries``).

- :func:`split_scheduled` / :func:`scheduled_results`: the scheduled messages of an enqueue
  request (``[payload, key, headers, dedup_id, when]``, ``when`` = ``["delay", seconds]`` or
  ``["at", unix_time]``) become one schedule entry per queue, due at the master's
  ``enqueued_at + delay`` or at the given time; a message's answer is ``[None, duplicate,
  scheduled_id]`` (an ordinary one's ``[offset, duplicate]``).
- :func:`cancel_scheduled`: the ``cancel_scheduled`` RPC: reads the message's record for its due
  time and proposes a cancel entry; True if it was pending (now never released).
- :class:`Releaser`: on every group this node masters (``serving``), proposes release entries
  for the messages due by the master's wall clock, at most one release round per group at a
  time; it wakes at the earliest due time (or every ``POLL`` seconds). Each release entry
  carries the master's ``time.time()`` taken *after* choosing the due messages, so apply's
  "never early" check (due <= released_at) always holds for what it proposes.
- :func:`roll_below`: where retention wants to truncate past pending messages' records, the
  master copies them further on (roll entries) so that the log can go.
- :func:`status_of`: pending count, next due time and release lag of a group (``status``).

Clocks. Due times and release stamps are wall-clock times of the masters that proposed them
(a ``delay`` is added to the enqueuing master's clock; ``deliver_at`` is the caller's). A
message is released only once the releasing master's clock has reached its due time; with
masters' clocks within ``e`` of true time, it is never released more than ``e`` early in true
time, and a master whose clock is behind only releases late. Exactly once is decided at apply
(``phxq.store.schedule``), so a release proposed twice (an old and a new master, a retry
after a timeout) releases once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from phxq import metrics, validate
from phxq.errors import BadArgument, PhxqError, StorageError
from phxq.net.frames import shown
from phxq.net.server import LogLimiter
from phxq.paxos import decode_batch
from phxq.routing import INDEX_BITS, MAX_MESSAGES_PER_INSTANCE
from phxq.store import state as st
from phxq.store.schedule import Cancelled, Released, is_scheduled_ref, scheduled_id_of
from phxq.store.schedule_entries import (
    encode_cancel,
    encode_release,
    encode_roll,
    instance_scheduled,
)
from phxq.store.txn_entries import HELD
from phxq.tasks import TaskScope

if TYPE_CHECKING:
    from phxq.replication.replica import GroupReplica
    from phxq.store.node import StoreNode
    from phxq.store.state import StoreState

log = logging.getLogger("phxq.scheduler")

MAX_SCHEDULE_SECONDS: Final = 366 * 86400.0  # how far ahead a message may be scheduled
POLL: Final = 0.1  # seconds between looks at the groups' next due times, at most
RELEASE_MESSAGES: Final = 1024  # messages of one release round
ROLL_RATIO: Final = 4  # instances a roll must free per pending message it copies
RELEASE_BYTES: Final = 512 << 10  # payload bytes of one release round (a Paxos batch is 1 MiB)


# ------------------------------------------------------------------------------- enqueue


def due_time(when: Any, now: float) -> float:
    """The due time of a message's ``when`` (see the module docstring); ``BadArgument`` if
    malformed, negative, not finite, or more than ``MAX_SCHEDULE_SECONDS`` ahead."""
    if not (isinstance(when, list) and len(when) == 2 and when[0] in ("delay", "at")):
        raise BadArgument(
            f'when must be ["delay", seconds] or ["at", unix_time], got {shown(when)}'
        )
    kind, value = when
    value = validate.number(value, kind, unit="seconds" if kind == "delay" else "unix time")
    if kind == "delay":
        if not 0 <= value <= MAX_SCHEDULE_SECONDS:
            raise BadArgument(f"delay must be in [0, {MAX_SCHEDULE_SECONDS:.0f}] seconds")
        return now + float(value)
    if value > now + MAX_SCHEDULE_SECONDS:
        raise BadArgument(f"deliver_at is more than {MAX_SCHEDULE_SECONDS:.0f} s ahead")
    return float(value)


def split_scheduled(
    now: float, raw_messages: list[Any]
) -> tuple[list[Any], list[Any], list[float], list[int]]:
    """``(ordinary messages, scheduled messages' first four fields, their due times, their
    positions)`` of one batch of an enqueue request (the caller validates both lists as
    ordinary messages)."""
    for m in raw_messages:
        if type(m) is list and len(m) == 5:
            break
    else:  # the common case: no scheduled message, nothing copied
        return raw_messages, [], [], []
    plain: list[Any] = []
    scheduled: list[Any] = []
    dues: list[float] = []
    positions: list[int] = []
    for i, m in enumerate(raw_messages):
        if type(m) is list and len(m) == 5:
            dues.append(due_time(m[4], now))
            scheduled.append(m[:4])
            positions.append(i)
        else:
            plain.append(m)
    return plain, scheduled, dues, positions


def scheduled_results(result: Any) -> list[list[Any]]:
    """The per-message answers of a schedule entry's apply result."""
    if isinstance(result, st.Rejected):
        raise result.error
    if not isinstance(result, st.Scheduled):
        raise StorageError(f"unexpected apply result {result!r}")
    return [answer(ref, dup) for ref, dup in zip(result.refs, result.duplicates, strict=True)]


def answer(ref: int, duplicate: bool) -> list[Any]:
    """``[offset, duplicate]``, or ``[None, duplicate, scheduled_id]`` for a scheduled ref."""
    if is_scheduled_ref(ref):
        return [None, duplicate, scheduled_id_of(ref)]
    return [ref, duplicate]


def merge_results(
    count: int, plain: list[list[Any]], scheduled: list[list[Any]], positions: Sequence[int]
) -> list[list[Any]]:
    """The answers of one batch in message order."""
    out: list[list[Any]] = [[]] * count
    for p, a in zip(positions, scheduled, strict=True):
        out[p] = a
    it = iter(plain)
    taken = set(positions)
    for i in range(count):
        if i not in taken:
            out[i] = next(it)
    return out


# -------------------------------------------------------------------------------- cancel


async def cancel_scheduled(node: StoreNode, params: dict[str, Any]) -> bool:
    """``{topic, queue, id}`` -> True if the message was pending and is now cancelled, False
    if it is not pending (released, cancelled, or no such message)."""
    topic = params.get("topic")
    queue = params.get("queue")
    sid = params.get("id")
    sid = validate.integer(sid, "id", maximum=(1 << 62) - 1)
    replica = node.master_replica(topic, queue)  # type: ignore[arg-type]
    original = sid
    sid = replica.state.schedule.current_id(sid)  # it may have been rolled
    instance, k = sid >> INDEX_BITS, sid & (MAX_MESSAGES_PER_INSTANCE - 1)
    glog = replica.glog
    if not glog.first_instance <= instance <= glog.chosen_up_to:
        return False  # a pending message's record is never truncated (see node.keep_from)
    found = instance_scheduled(decode_batch(await glog.read_value(instance)))
    if k >= len(found):
        return False
    entry, _, due = found[k]
    if (entry.topic, entry.queue) != (topic, queue):
        return False
    result = await replica.propose_one(encode_cancel(original, due))  # resolved again at apply
    if isinstance(result, st.Rejected):
        raise result.error
    if not isinstance(result, Cancelled):
        raise StorageError(f"unexpected apply result {result!r}")
    return result.done


# -------------------------------------------------------------------------------- status


def status_of(replica: GroupReplica[StoreState], now: float) -> dict[str, Any]:
    """Pending scheduled messages of a group: count, next due time and release lag (seconds
    the earliest pending message is overdue; meaningful on the group's master)."""
    schedule = replica.state.schedule
    nxt = schedule.next_due()
    held = schedule.count_at(HELD)  # transactions' half messages: never due (phxq.store.txn)
    if nxt is not None and nxt >= HELD:
        nxt = None
    return {
        "pending": len(schedule) - held,
        "next_due": nxt,
        "release_lag": 0.0 if nxt is None else max(0.0, now - nxt),
    }


# ------------------------------------------------------------------------------- release


class Releaser:
    """Proposes the release of due scheduled messages on the groups this node masters."""

    def __init__(self, node: StoreNode) -> None:
        self._node = node
        self._busy: set[int] = set()  # groups with a release round in flight
        self._rounds = TaskScope("release rounds", log)
        self._log = LogLimiter()
        self._gauges: dict[int, tuple[Any, Any]] = {}  # per group: pending, release lag
        self._reported: dict[int, tuple[int, float]] = {}  # the values they were last set to

    async def run(self) -> None:
        """Until cancelled (then the rounds in flight are cancelled too)."""
        async with self._rounds:
            while True:
                await asyncio.sleep(self._tick())

    def _report(self, group: int, pending: int, lag: float) -> None:
        """Set the group's gauges, only when a value changed (``labels()`` costs a lock and a
        lookup, and this runs for every group ten times a second)."""
        last = self._reported.get(group)
        if last is not None and last[0] == pending and last[1] == lag:
            return
        if group not in self._gauges:
            label = str(group)
            self._gauges[group] = (
                metrics.SCHEDULED_PENDING.labels(label),
                metrics.RELEASE_LAG.labels(label),
            )
        gauge_pending, gauge_lag = self._gauges[group]
        gauge_pending.set(pending)
        gauge_lag.set(lag)
        self._reported[group] = (pending, lag)

    def _tick(self) -> float:
        """Start the rounds that are due; the seconds to sleep until the next look."""
        now = time.time()
        sleep = POLL
        for group, replica in self._node.replicas.items():
            schedule = replica.state.schedule
            serving = replica.serving
            pending = len(schedule) - schedule.count_at(HELD) if serving else 0
            nxt = schedule.next_due() if pending else None
            self._report(group, pending, 0.0 if nxt is None else max(0.0, now - nxt))
            if nxt is None:
                continue
            if nxt > now:
                sleep = min(sleep, nxt - now)
            elif group not in self._busy:
                self._busy.add(group)
                self._rounds.spawn(self._round(group, replica), name=f"release group {group}")
        return max(sleep, 0.001)

    async def _round(self, group: int, replica: GroupReplica[StoreState]) -> None:
        try:
            await self.release_due(replica)
        except PhxqError as exc:  # NotMaster, Unavailable, a storage problem: the next tick retries
            suppressed = self._log.allow()
            if suppressed is not None:
                log.warning("group %d: release round failed: %s (%d more)", group, exc, suppressed)
        except Exception:  # a bug must not stop releasing on the other groups; logged loudly
            log.exception("group %d: release round failed", group)
        finally:
            self._busy.discard(group)

    async def release_due(self, replica: GroupReplica[StoreState]) -> int:
        """One round: propose the release of up to ``RELEASE_MESSAGES`` due messages of the
        group (by due time, then id); returns how many it released."""
        due = replica.state.schedule.due(time.time(), RELEASE_MESSAGES)
        if not due:
            return 0
        by_queue = await _read_records(replica, due)
        stamp = time.time()  # after choosing them: never below their due times
        items = [
            encode_release(topic, queue, stamp, ids, dues, wire)
            for (topic, queue), (ids, dues, wire) in by_queue.items()
        ]
        results = await replica.propose(items)
        released = 0
        for (_, (_, dues, _)), result in zip(by_queue.items(), results, strict=True):
            if isinstance(result, st.Rejected):
                raise result.error
            assert isinstance(result, Released)
            for d, offset in zip(dues, result.offsets, strict=True):
                if offset is not None:
                    released += 1
                    metrics.RELEASE_LATENESS.observe(max(0.0, stamp - d))
        return released


async def maybe_roll(replica: GroupReplica[StoreState], floor: int) -> int:
    """Retention wants to truncate below ``floor`` but pending records hold it: on the master,
    roll the pending messages below what could go now (whole sealed segments) when that is
    worth it: at most one pending message per ``ROLL_RATIO`` instances the roll frees (else
    copying them would cost about what truncating saves). Returns how many moved."""
    if not replica.serving:
        return 0
    glog = replica.glog
    point = glog.truncation_point(floor)
    pending = replica.state.schedule.below(point, RELEASE_MESSAGES)
    if not pending or len(pending) * ROLL_RATIO > point - glog.first_instance:
        return 0
    return await roll_below(replica, point)


async def roll_below(replica: GroupReplica[StoreState], floor: int) -> int:
    """Propose a roll of up to ``RELEASE_MESSAGES`` pending messages whose records are below
    instance ``floor`` (where retention wants to truncate), on the group's master; returns
    how many moved. Their records then no longer hold the log (``node.apply_retention``)."""
    if not replica.serving:
        return 0
    pending = replica.state.schedule.below(floor, RELEASE_MESSAGES)
    if not pending:
        return 0
    by_queue = await _read_records(replica, pending)
    items = [
        encode_roll(topic, queue, ids, dues, wire)
        for (topic, queue), (ids, dues, wire) in by_queue.items()
    ]
    results = await replica.propose(items)
    moved = 0
    for result in results:
        if isinstance(result, st.Rejected):
            raise result.error
        assert isinstance(result, st.Rolled)
        moved += sum(result.moved)
    metrics.SCHEDULED_ROLLED.inc(moved)
    return moved


async def _read_records(
    replica: GroupReplica[StoreState], chosen: list[tuple[float, int]]
) -> dict[tuple[str, int], tuple[list[int], list[float], list[Any]]]:
    """The ``[payload, key, headers]`` of scheduled messages ``(due, id)`` read from their
    records, grouped by queue (ids, due times, messages), up to ``RELEASE_BYTES``."""
    records: dict[int, list[Any]] = {}
    by_queue: dict[tuple[str, int], tuple[list[int], list[float], list[Any]]] = {}
    size = 0
    for d, sid in chosen:
        instance, k = sid >> INDEX_BITS, sid & (MAX_MESSAGES_PER_INSTANCE - 1)
        found = records.get(instance)
        if found is None:
            value = await replica.glog.read_value(instance)
            found = records[instance] = instance_scheduled(decode_batch(value))
        if k >= len(found):
            raise StorageError(f"scheduled id {sid}: no such message in its record")
        entry, msg, _ = found[k]
        ids, dues, wire = by_queue.setdefault((entry.topic, entry.queue), ([], [], []))
        ids.append(sid)
        dues.append(d)
        wire.append([msg.payload, msg.key, msg.headers])
        size += len(msg.payload) + 64
        if size >= RELEASE_BYTES:
            break
    return by_queue
