"""The log entries of delayed and scheduled messages, and their msgpack codec.

Public API::

    ScheduleEntry(topic, queue, messages: tuple[Message, ...], enqueued_at: float,
                  due: tuple[float, ...])                  # one due time per message
    ReleaseEntry(topic, queue, released_at: float, ids: tuple[int, ...],
                 due: tuple[float, ...], messages: tuple[Message, ...])
    CancelEntry(scheduled_id: int, due: float)
    RollEntry(topic, queue, ids: tuple[int, ...], due: tuple[float, ...], messages)

    encode_schedule(topic, queue, enqueued_at, due, wire_messages) -> bytes
    encode_release(topic, queue, released_at, ids, due, wire_messages) -> bytes
    encode_cancel(scheduled_id, due) -> bytes
    encode_scheduled(entry: ScheduleEntry | ReleaseEntry | CancelEntry) -> bytes
    ScheduleHead / ReleaseHead                             # what apply needs; bodies stay packed
    instance_scheduled(items) -> list[tuple[ScheduleEntry, Message, float]]   # k -> message

Meanings:

- A ``ScheduleEntry`` holds messages that must not be readable before their ``due`` time
  (wall-clock seconds since the epoch). ``enqueued_at`` is the proposing master's wall clock,
  as in an enqueue entry (dedup is decided with it). The messages' *scheduled ids* are
  ``make_offset(instance, k)`` where ``k`` is their ordinal among every message of every
  decodable schedule entry of the instance (:func:`instance_scheduled`): a space of its own,
  apart from the offsets of readable messages.
- A ``ReleaseEntry`` makes scheduled messages readable in ``(topic, queue)``: the master copies
  each one's ``[payload, key, headers]`` from its schedule record, with its id and due time, and
  stamps ``released_at`` with its own wall clock. Its messages count among the instance's
  readable messages exactly like an enqueue entry's (:func:`phxq.store.entries.instance_messages`),
  whether applying them released them or was a no-op (already released, cancelled, or not due
  by ``released_at``).
- A ``RollEntry`` copies pending messages (their ``[payload, key, headers]``) to a later
  instance, so their old records may be truncated: each still pending moves to the id its
  ordinal here gives (counted with the schedule entries' messages: :func:`instance_scheduled`).
- A ``CancelEntry`` withdraws a pending scheduled message; ``due`` is the one in its record (the
  master reads it), so applying needs no lookup by id.

Wire forms (``msgpack``, ``use_bin_type``; body = bin ``msgpack([[payload, key, headers], ...])``
as in an enqueue entry)::

    [5, topic, queue, enqueued_at, [due, ...], [dedup_id, ...], body]
    [6, topic, queue, released_at, [id, ...], [due, ...], body]
    [7, scheduled_id, due]
    [8, topic, queue, [id, ...], [due, ...], body]

Decoding checks every type and range; no byte string makes it raise anything but
:class:`~phxq.errors.ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from phxq.errors import PhxqError, ProtocolError
from phxq.store.entries import EnqueueEntry, Message, _fields, _text, _uint
from phxq.store.entry_fields import (
    check_bin,
    check_dedup_ids,
    check_ids_per_due,
    corrupt_log,
    encode_released,
    finite_time,
    finite_times,
    messages_of,
    messages_with_ids,
    packed_bodies,
    released_fields,
    wire_of,
)

__all__ = [
    "TAG_CANCEL",
    "TAG_RELEASE",
    "TAG_ROLL",
    "TAG_SCHEDULE",
    "CancelEntry",
    "ReleaseEntry",
    "ReleaseHead",
    "RollEntry",
    "RollHead",
    "ScheduleEntry",
    "ScheduleHead",
    "encode_cancel",
    "encode_release",
    "encode_roll",
    "encode_schedule",
    "encode_scheduled",
    "instance_scheduled",
]

TAG_SCHEDULE: Final = 5
TAG_RELEASE: Final = 6
TAG_CANCEL: Final = 7
TAG_ROLL: Final = 8

_packb = msgpack.packb


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """Messages of one queue held back until their due times (one per message)."""

    topic: str
    queue: int
    messages: tuple[Message, ...]
    enqueued_at: float
    due: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ReleaseEntry:
    """Scheduled messages (by id, with their due times) made readable in one queue."""

    topic: str
    queue: int
    released_at: float
    ids: tuple[int, ...]
    due: tuple[float, ...]
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class CancelEntry:
    """Withdraw the pending scheduled message ``scheduled_id`` (due at ``due``)."""

    scheduled_id: int
    due: float


@dataclass(frozen=True, slots=True)
class RollEntry:
    """Pending messages (by id, with their due times) copied here so their old records may be
    truncated; their new ids are their ordinals among the instance's scheduled messages."""

    topic: str
    queue: int
    ids: tuple[int, ...]
    due: tuple[float, ...]
    messages: tuple[Message, ...]


# The heads: what applying an entry needs (bodies stay packed). Compared by identity, as
# the entries they come from are not values of their own.


@dataclass(slots=True, eq=False)
class RollHead:
    """What applying a roll entry needs."""

    topic: str
    queue: int
    ids: list[int]
    due: list[float]


@dataclass(slots=True, eq=False)
class ScheduleHead:
    """What applying a schedule entry needs."""

    topic: str
    queue: int
    enqueued_at: float
    due: list[float]
    dedup_ids: list[str | None]


@dataclass(slots=True, eq=False)
class ReleaseHead:
    """What applying a release entry needs."""

    topic: str
    queue: int
    released_at: float
    ids: list[int]
    due: list[float]


# ----------------------------------------------------------------------------------- encode


def encode_schedule(
    topic: str,
    queue: int,
    enqueued_at: float,
    due: Sequence[float],
    wire_messages: Sequence[Sequence[Any]],
) -> bytes:
    """A schedule entry of validated ``[payload, key, headers, dedup_id, ...]`` messages."""
    body = packed_bodies(wire_messages)
    packed: bytes = _packb(
        [
            TAG_SCHEDULE,
            topic,
            queue,
            float(enqueued_at),
            [float(d) for d in due],
            [m[3] for m in wire_messages],
            body,
        ],
        use_bin_type=True,
    )
    return packed


def encode_release(
    topic: str,
    queue: int,
    released_at: float,
    ids: Sequence[int],
    due: Sequence[float],
    wire_messages: Sequence[Sequence[Any]],
) -> bytes:
    """A release entry of ``[payload, key, headers]`` messages read from their records."""
    return encode_released(TAG_RELEASE, topic, queue, released_at, ids, due, wire_messages)


def encode_roll(
    topic: str,
    queue: int,
    ids: Sequence[int],
    due: Sequence[float],
    wire_messages: Sequence[Sequence[Any]],
) -> bytes:
    """A roll entry of ``[payload, key, headers]`` messages read from their records."""
    body = packed_bodies(wire_messages)
    packed: bytes = _packb(
        [TAG_ROLL, topic, queue, list(ids), [float(d) for d in due], body], use_bin_type=True
    )
    return packed


def encode_cancel(scheduled_id: int, due: float) -> bytes:
    packed: bytes = _packb([TAG_CANCEL, scheduled_id, float(due)], use_bin_type=True)
    return packed


def encode_scheduled(entry: ScheduleEntry | ReleaseEntry | CancelEntry | RollEntry) -> bytes:
    """The wire bytes of any entry of this module."""
    if isinstance(entry, ScheduleEntry):
        wire = wire_of(entry.messages, dedup=True)
        return encode_schedule(entry.topic, entry.queue, entry.enqueued_at, entry.due, wire)
    if isinstance(entry, ReleaseEntry):
        wire = wire_of(entry.messages, dedup=False)
        return encode_release(
            entry.topic, entry.queue, entry.released_at, entry.ids, entry.due, wire
        )
    if isinstance(entry, CancelEntry):
        return encode_cancel(entry.scheduled_id, entry.due)
    if isinstance(entry, RollEntry):
        wire = wire_of(entry.messages, dedup=False)
        return encode_roll(entry.topic, entry.queue, entry.ids, entry.due, wire)
    raise TypeError(f"not a scheduling log entry: {entry!r}")


# ----------------------------------------------------------------------------------- decode


def _schedule_head(fields: list[Any]) -> ScheduleHead:
    if len(fields) != 7:
        raise ProtocolError(f"schedule entry: expected 7 fields, got {len(fields)}")
    _, topic, queue, enqueued_at, due, dedup_ids, body = fields
    finite_times(due, "schedule entry due")
    check_dedup_ids(dedup_ids, len(due), "schedule entry")
    check_bin(body, "schedule entry")
    return ScheduleHead(
        _text(topic, "schedule entry topic"),
        _uint(queue, "schedule entry queue"),
        finite_time(enqueued_at, "schedule entry enqueued_at"),
        due,
        dedup_ids,
    )


def _release_head(fields: list[Any]) -> ReleaseHead:
    return ReleaseHead(*released_fields(fields, 7, "release entry"))


def _roll_head(fields: list[Any]) -> RollHead:
    if len(fields) != 6:
        raise ProtocolError(f"roll entry: expected 6 fields, got {len(fields)}")
    _, topic, queue, ids, due, body = fields
    check_ids_per_due(ids, due, "roll entry")
    check_bin(body, "roll entry")
    return RollHead(_text(topic, "roll entry topic"), _uint(queue, "roll entry queue"), ids, due)


def _roll(fields: list[Any]) -> RollEntry:
    head = _roll_head(fields)
    messages = messages_of(len(head.ids), fields[5])
    return RollEntry(head.topic, head.queue, tuple(head.ids), tuple(head.due), messages)


def _cancel(fields: list[Any]) -> CancelEntry:
    if len(fields) != 3:
        raise ProtocolError(f"cancel entry: expected 3 fields, got {len(fields)}")
    return CancelEntry(
        _uint(fields[1], "cancel entry id"), finite_time(fields[2], "cancel entry due")
    )


def _schedule(fields: list[Any]) -> ScheduleEntry:
    head = _schedule_head(fields)
    messages = messages_with_ids(head.dedup_ids, fields[6])
    return ScheduleEntry(head.topic, head.queue, messages, head.enqueued_at, tuple(head.due))


def _release(fields: list[Any]) -> ReleaseEntry:
    head = _release_head(fields)
    messages = messages_of(len(head.ids), fields[6])
    return ReleaseEntry(
        head.topic, head.queue, head.released_at, tuple(head.ids), tuple(head.due), messages
    )


# Looked up by phxq.store.entries for these tags (see its decode_entry / peek_entry).
DECODERS: Final[dict[int, Any]] = {
    TAG_SCHEDULE: _schedule,
    TAG_RELEASE: _release,
    TAG_CANCEL: _cancel,
    TAG_ROLL: _roll,
}
PEEKERS: Final[dict[int, Any]] = {
    TAG_SCHEDULE: _schedule_head,
    TAG_RELEASE: _release_head,
    TAG_CANCEL: _cancel,
    TAG_ROLL: _roll_head,
}


def release_as_enqueue(fields: list[Any]) -> EnqueueEntry:
    """A release entry's readable messages as an enqueue entry stamped ``released_at`` (for
    :func:`phxq.store.entries.instance_messages`). ``ProtocolError`` if its head is malformed;
    ``StorageError`` if only its body is (a corrupt log)."""
    head = _release_head(fields)
    with corrupt_log("release entry"):
        messages = messages_of(len(head.ids), fields[6])
    return EnqueueEntry(head.topic, head.queue, messages, head.released_at)


def instance_scheduled(items: Sequence[bytes]) -> list[tuple[ScheduleEntry, Message, float]]:
    """Every scheduled message of a chosen instance (of schedule and roll entries), with its
    entry (a roll entry's as a ``ScheduleEntry`` with ``enqueued_at`` 0; a transaction's
    prepare entry's half messages with due ``HELD``: :mod:`phxq.store.txn_entries`) and due time; the
    list position is ``k`` of its scheduled id. Undecodable items and other entries contribute
    nothing; a decodable head with an undecodable body raises ``StorageError``."""
    out: list[tuple[ScheduleEntry, Message, float]] = []
    for item in items:
        try:
            fields = _fields(item)
            tag = fields[0] if type(fields[0]) is int else None
            if tag == TAG_SCHEDULE:
                _schedule_head(fields)
            elif tag == TAG_ROLL:
                _roll_head(fields)
            elif tag == _txn.TAG_PREPARE:  # half messages: scheduled, due HELD
                _txn.PEEKERS[tag](fields)
            else:
                continue
        except PhxqError:
            continue
        with corrupt_log("scheduled entry"):
            if tag == _txn.TAG_PREPARE:
                topic, queue, half, at = _txn.prepare_as_scheduled(fields)
                entry = ScheduleEntry(topic, queue, half, at, (_txn.HELD,) * len(half))
            elif tag == TAG_SCHEDULE:
                entry = _schedule(fields)
            else:
                rolled = _roll(fields)
                entry = ScheduleEntry(rolled.topic, rolled.queue, rolled.messages, 0.0, rolled.due)
        out.extend(zip([entry] * len(entry.messages), entry.messages, entry.due, strict=True))
    return out


# Last: that module builds on phxq.store.entries (and is only used at call time here).
from phxq.store import txn_entries as _txn  # noqa: E402
