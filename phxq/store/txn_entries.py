"""The log entries of transactional messages, and their msgpack codec.

Public API::

    PrepareEntry(txn, home, part, timeout, producer_group, topic, queue, prepared_at, messages,
                 expect: tuple[tuple[int, ...], ...] = (), home_set: int | None = None)
    DecideEntry(txn, commit: bool, decided_at: float, reason: str)
    TxnReleaseEntry(txn, topic, queue, released_at, ids, due, messages)
    DiscardEntry(txn, discarded_at: float)

    encode_prepare(txn, home, part, timeout, producer_group, topic, queue, prepared_at,
                   wire_messages, expect=(), home_set=None) -> bytes
    encode_decide(txn, commit, decided_at, reason) -> bytes
    encode_txn_release(txn, topic, queue, released_at, ids, due, wire_messages) -> bytes
    encode_discard(txn, discarded_at) -> bytes
    encode_txn(entry) -> bytes
    PrepareHead / TxnReleaseHead                           # what apply needs; bodies stay packed

Meanings (the protocol is in :mod:`phxq.store.txn`):

- A ``PrepareEntry`` holds *half messages* of transaction ``txn`` for one queue: durable once
  chosen, readable by nobody. They are scheduled messages (:mod:`phxq.store.schedule_entries`)
  whose due time is ``HELD`` (never due), so they take scheduled ids the same way (their
  ordinal among the instance's scheduled messages: :func:`instance_scheduled` counts prepare
  entries), retention keeps and rolls their records, and a snapshot carries them. ``home`` is
  the transaction's home group (where its decision is written), ``part`` numbers the client's
  prepare requests of the transaction (a retried one applies once), ``timeout`` is how long
  the producer may stay silent before the store asks its ``producer_group`` (or rolls back).
  ``expect`` (in the home group's entries) lists every ``(group, part)`` of the transaction:
  the home's master commits on a check-back answer only once all of them are prepared.
  **Across store sets** (DESIGN §7.1): ``home_set`` names the store set of the home group when
  it is not the set whose log holds the entry (None, and absent on the wire: the same set, as
  in every entry written before transactions spanned sets), and an expected part on another
  set than the home's is a triple ``(group, part, set)``.
- A ``DecideEntry`` (home group only) is the decision: the first one applied for ``txn``
  wins; any later one is a no-op answered with the first decision.
- A ``TxnReleaseEntry`` is a release entry (same fields and ordinals: its messages count among
  the instance's readable messages, :func:`phxq.store.entries.instance_messages`) that may only
  release half messages of ``txn``; a master proposes it after reading a commit decision.
- A ``DiscardEntry`` drops every pending half message of ``txn`` (after a rollback decision).

Wire forms (``msgpack``, ``use_bin_type``; body as in an enqueue entry)::

    [9,  topic, queue, prepared_at, [dedup_id, ...], body, txn, home, part, timeout, producer,
         [[group, part], ...]]                      # home on this log's own set
    [9,  ..., [[group, part] | [group, part, set], ...], home_set]   # home on another set
    [10, txn, commit, decided_at, reason]
    [11, topic, queue, released_at, [id, ...], [due, ...], body, txn]
    [12, txn, discarded_at]

Decoding checks every type and range; no byte string makes it raise anything but
:class:`~phxq.errors.ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from phxq.errors import ProtocolError
from phxq.store.entries import EnqueueEntry, Message, _text, _uint
from phxq.store.entry_fields import (
    check_bin,
    check_dedup_ids,
    corrupt_log,
    encode_released,
    finite_time,
    messages_of,
    messages_with_ids,
    packed_bodies,
    released_fields,
    wire_of,
)
from phxq.store.schedule import HELD

__all__ = [
    "HELD",
    "MAX_TXN_ID_CHARS",
    "TAG_DECIDE",
    "TAG_DISCARD",
    "TAG_PREPARE",
    "TAG_TXN_RELEASE",
    "DecideEntry",
    "DiscardEntry",
    "PrepareEntry",
    "PrepareHead",
    "TxnReleaseEntry",
    "TxnReleaseHead",
    "encode_decide",
    "encode_discard",
    "encode_prepare",
    "encode_txn",
    "encode_txn_release",
]

TAG_PREPARE: Final = 9
TAG_DECIDE: Final = 10
TAG_TXN_RELEASE: Final = 11
TAG_DISCARD: Final = 12

# HELD, the due time of a half message: never due (about 142 million years from the epoch),
# so the releaser of delayed messages never releases one, and an ordinary release entry never
# does either (phxq.store.schedule.release skips it). Only a TxnReleaseEntry of its
# transaction can.
MAX_TXN_ID_CHARS: Final = 128
MAX_TIMEOUT: Final = 86400.0

_packb = msgpack.packb


@dataclass(frozen=True, slots=True)
class PrepareEntry:
    """Half messages of transaction ``txn`` for one queue (see the module docstring)."""

    txn: str
    home: int
    part: int
    timeout: float
    producer_group: str | None
    topic: str
    queue: int
    prepared_at: float
    messages: tuple[Message, ...]
    expect: tuple[tuple[int, ...], ...] = ()
    home_set: int | None = None


@dataclass(frozen=True, slots=True)
class DecideEntry:
    """The decision of transaction ``txn`` (home group; the first applied wins)."""

    txn: str
    commit: bool
    decided_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class TxnReleaseEntry:
    """Half messages of ``txn`` (by scheduled id, due ``HELD``) made readable in one queue."""

    txn: str
    topic: str
    queue: int
    released_at: float
    ids: tuple[int, ...]
    due: tuple[float, ...]
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class DiscardEntry:
    """Drop every pending half message of ``txn`` (it was rolled back)."""

    txn: str
    discarded_at: float


class PrepareHead:
    """What applying a prepare entry needs (bodies stay packed). ``due`` is ``HELD`` per
    message, so it reads like a schedule entry's head."""

    __slots__ = (
        "dedup_ids",
        "due",
        "enqueued_at",
        "expect",
        "home",
        "home_set",
        "part",
        "producer_group",
        "queue",
        "timeout",
        "topic",
        "txn",
    )

    def __init__(self, fields: list[Any]) -> None:
        (_, topic, queue, at, dedup_ids, _body, txn, home, part, timeout, producer, expect) = (
            fields[:12]
        )
        self.topic: str = topic
        self.queue: int = queue
        self.enqueued_at: float = at
        self.dedup_ids: list[str | None] = dedup_ids
        self.due = [HELD] * len(dedup_ids)
        self.txn: str = txn
        self.home: int = home
        self.home_set: int | None = fields[12] if len(fields) > 12 else None
        self.part: int = part
        self.timeout: float = timeout
        self.producer_group: str | None = producer
        self.expect: list[tuple[int, ...]] = [tuple(e) for e in expect]


@dataclass(slots=True, eq=False)
class TxnReleaseHead:
    """What applying a transaction's release entry needs (bodies stay packed)."""

    topic: str
    queue: int
    released_at: float
    ids: list[int]
    due: list[float]
    txn: str


# ----------------------------------------------------------------------------------- encode


def encode_prepare(
    txn: str,
    home: int,
    part: int,
    timeout: float,
    producer_group: str | None,
    topic: str,
    queue: int,
    prepared_at: float,
    wire_messages: Sequence[Sequence[Any]],
    expect: Sequence[Sequence[int]] = (),
    home_set: int | None = None,
) -> bytes:
    """A prepare entry of validated ``[payload, key, headers, dedup_id]`` messages
    (``home_set`` None: the home is on this log's set; the entry is then 12 fields, as ever)."""
    body = packed_bodies(wire_messages)
    fields = [
        TAG_PREPARE,
        topic,
        queue,
        float(prepared_at),
        [m[3] for m in wire_messages],
        body,
        txn,
        home,
        part,
        float(timeout),
        producer_group,
        [list(e) for e in expect],
    ]
    if home_set is not None:
        fields.append(home_set)
    packed: bytes = _packb(fields, use_bin_type=True)
    return packed


def encode_decide(txn: str, commit: bool, decided_at: float, reason: str) -> bytes:
    packed: bytes = _packb(
        [TAG_DECIDE, txn, bool(commit), float(decided_at), reason], use_bin_type=True
    )
    return packed


def encode_txn_release(
    txn: str,
    topic: str,
    queue: int,
    released_at: float,
    ids: Sequence[int],
    due: Sequence[float],
    wire_messages: Sequence[Sequence[Any]],
) -> bytes:
    """A transaction's release entry of ``[payload, key, headers]`` read from the records."""
    return encode_released(TAG_TXN_RELEASE, topic, queue, released_at, ids, due, wire_messages, txn)


def encode_discard(txn: str, discarded_at: float) -> bytes:
    packed: bytes = _packb([TAG_DISCARD, txn, float(discarded_at)], use_bin_type=True)
    return packed


def encode_txn(entry: PrepareEntry | DecideEntry | TxnReleaseEntry | DiscardEntry) -> bytes:
    """The wire bytes of any entry of this module."""
    if isinstance(entry, PrepareEntry):
        wire = wire_of(entry.messages, dedup=True)
        return encode_prepare(
            entry.txn,
            entry.home,
            entry.part,
            entry.timeout,
            entry.producer_group,
            entry.topic,
            entry.queue,
            entry.prepared_at,
            wire,
            entry.expect,
            entry.home_set,
        )
    if isinstance(entry, DecideEntry):
        return encode_decide(entry.txn, entry.commit, entry.decided_at, entry.reason)
    if isinstance(entry, TxnReleaseEntry):
        wire = wire_of(entry.messages, dedup=False)
        return encode_txn_release(
            entry.txn, entry.topic, entry.queue, entry.released_at, entry.ids, entry.due, wire
        )
    if isinstance(entry, DiscardEntry):
        return encode_discard(entry.txn, entry.discarded_at)
    raise TypeError(f"not a transaction log entry: {entry!r}")


# ----------------------------------------------------------------------------------- decode


def _txn(value: Any) -> str:
    txn = _text(value, "transaction id")
    if len(txn) > MAX_TXN_ID_CHARS:
        raise ProtocolError(f"transaction id longer than {MAX_TXN_ID_CHARS} characters")
    return txn


def _prepare_head(fields: list[Any]) -> PrepareHead:
    if len(fields) not in (12, 13):
        want = 12 if len(fields) < 12 else 13
        raise ProtocolError(f"prepare entry: expected {want} fields, got {len(fields)}")
    _, topic, queue, at, dedup_ids, body, txn, home, part, timeout, producer, expect = fields[:12]
    if len(fields) == 13:
        _uint(fields[12], "prepare entry home set")
    _text(topic, "prepare entry topic")
    _uint(queue, "prepare entry queue")
    finite_time(at, "prepare entry prepared_at")
    check_dedup_ids(dedup_ids, None, "prepare entry")
    check_bin(body, "prepare entry")
    _txn(txn)
    _uint(home, "prepare entry home")
    _uint(part, "prepare entry part")
    if not 0 < finite_time(timeout, "prepare entry timeout") <= MAX_TIMEOUT:
        raise ProtocolError("prepare entry: timeout out of range")
    if producer is not None:
        _text(producer, "prepare entry producer group")
    if type(expect) is not list or len(expect) > 1 << 16:
        raise ProtocolError("prepare entry: expect must be an array of [group, part]")
    for pair in expect:
        if type(pair) is not list or len(pair) not in (2, 3):
            raise ProtocolError("prepare entry: expect must be an array of [group, part]")
        _uint(pair[0], "prepare entry expected group")
        _uint(pair[1], "prepare entry expected part")
        if len(pair) == 3:
            _uint(pair[2], "prepare entry expected set")
    return PrepareHead(fields)


def _prepare(fields: list[Any]) -> PrepareEntry:
    head = _prepare_head(fields)
    messages = messages_with_ids(head.dedup_ids, fields[5])
    return PrepareEntry(
        head.txn,
        head.home,
        head.part,
        head.timeout,
        head.producer_group,
        head.topic,
        head.queue,
        head.enqueued_at,
        messages,
        tuple(head.expect),
        head.home_set,
    )


def _decide(fields: list[Any]) -> DecideEntry:
    if len(fields) != 5:
        raise ProtocolError(f"decide entry: expected 5 fields, got {len(fields)}")
    _, txn, commit, at, reason = fields
    if type(commit) is not bool:
        raise ProtocolError("decide entry: commit must be a boolean")
    if type(reason) is not str:
        raise ProtocolError("decide entry: reason must be a string")
    return DecideEntry(_txn(txn), commit, finite_time(at, "decide entry decided_at"), reason)


def _release_head(fields: list[Any]) -> TxnReleaseHead:
    released = released_fields(fields, 8, "transaction release entry")
    return TxnReleaseHead(*released, _txn(fields[7]))


def _release(fields: list[Any]) -> TxnReleaseEntry:
    head = _release_head(fields)
    messages = messages_of(len(head.ids), fields[6])
    return TxnReleaseEntry(
        head.txn,
        head.topic,
        head.queue,
        head.released_at,
        tuple(head.ids),
        tuple(head.due),
        messages,
    )


def _discard(fields: list[Any]) -> DiscardEntry:
    if len(fields) != 3:
        raise ProtocolError(f"discard entry: expected 3 fields, got {len(fields)}")
    return DiscardEntry(_txn(fields[1]), finite_time(fields[2], "discard entry discarded_at"))


# Looked up by phxq.store.entries for these tags (see its decode_entry / peek_entry).
DECODERS: Final[dict[int, Any]] = {
    TAG_PREPARE: _prepare,
    TAG_DECIDE: _decide,
    TAG_TXN_RELEASE: _release,
    TAG_DISCARD: _discard,
}
PEEKERS: Final[dict[int, Any]] = {
    TAG_PREPARE: _prepare_head,
    TAG_DECIDE: _decide,
    TAG_TXN_RELEASE: _release_head,
    TAG_DISCARD: _discard,
}


def release_as_enqueue(fields: list[Any]) -> EnqueueEntry:
    """A transaction release entry's readable messages as an enqueue entry stamped
    ``released_at`` (for :func:`phxq.store.entries.instance_messages`). ``ProtocolError`` if
    its head is malformed; ``StorageError`` if only its body is (a corrupt log)."""
    head = _release_head(fields)
    with corrupt_log("transaction release entry"):
        messages = messages_of(len(head.ids), fields[6])
    return EnqueueEntry(head.topic, head.queue, messages, head.released_at)


def prepare_as_scheduled(fields: list[Any]) -> tuple[str, int, tuple[Message, ...], float]:
    """``(topic, queue, messages, prepared_at)`` of a prepare entry (for
    :func:`phxq.store.schedule_entries.instance_scheduled`); ``ProtocolError`` if its head is
    malformed, ``StorageError`` if only its body is."""
    head = _prepare_head(fields)
    with corrupt_log("prepare entry"):
        messages = messages_with_ids(head.dedup_ids, fields[5])
    return head.topic, head.queue, messages, head.enqueued_at
