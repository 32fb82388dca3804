"""The store's log entries: the items of a chosen Paxos batch, and their msgpack codec.

Public API::

    Message(payload: bytes, key: str | None, headers: dict[str, str], dedup_id: str | None)
    EnqueueEntry(topic: str, queue: int, messages: tuple[Message, ...], enqueued_at: float)
    CommitEntry(consumer_group: str, topic: str, queue: int, offset: int, token: int,
                check: bool = False, expect: int | None = None)
    ReplayEntry(consumer_group: str, topic: str, queue: int, offset: int, replay_id: str)
    Entry = EnqueueEntry | CommitEntry | ReplayEntry

    encode_entry(entry: Entry) -> bytes
    decode_entry(data: bytes) -> Entry                # ProtocolError on anything malformed
    encode_enqueue(topic, queue, enqueued_at, wire_messages) -> bytes   # the service's fast path
    peek_entry(data: bytes) -> EnqueueHead | CommitEntry | ReplayEntry  # apply: bodies stay packed
    instance_messages(items: Sequence[bytes]) -> list[tuple[EnqueueEntry, Message]]

Meanings:

- ``EnqueueEntry.enqueued_at`` is the wall-clock time (seconds since the epoch) the master
  stamped when it proposed the entry; every replica uses this value, never its own clock
  (dedup windows and replay-by-time are decided from it).
- A cursor (``CommitEntry.offset``) is the offset of the *last processed* message; the next
  read is "after" it. ``token`` is the fencing token of the lock that owns the (group, queue).
  With ``check`` the commit is a compare-and-set: it applies only if the cursor is ``expect``
  (``None``: no cursor yet), so an owner never overwrites an admin replay it has not seen.
- ``ReplayEntry`` is an admin one-shot that sets the cursor anywhere (back included) regardless
  of tokens; it takes effect once per ``replay_id``.

Wire form: ``msgpack([tag, field, ...])`` with ``use_bin_type`` (payloads are bin, text is str).
Decoding checks every type and range, and no byte string makes it raise anything but
:class:`phxq.errors.ProtocolError` (fuzzed). An enqueue entry has two versions; both are read
forever (logs written before version 2 stay readable), only version 2 is written:

- version 1, tag 1: ``[1, topic, queue, [[payload, key, headers, dedup_id], ...], enqueued_at]``;
- version 2, tag 4: ``[4, topic, queue, enqueued_at, [dedup_id, ...], body]`` where ``body`` is
  bin: ``msgpack([[payload, key, headers], ...])``, one per dedup id, in order. Applying an entry
  needs only its head (topic, queue, time, dedup ids: :func:`peek_entry`), so replicas never
  unpack message bodies; readers unpack them when they read the instance.

``instance_messages(items)`` is the single definition of message ordinals inside a chosen
instance: every message of every *decodable* enqueue item, in item order, where a version-2
item counts by its head (one message per dedup id) whether or not its body unpacks: a head
that decodes with a body that does not is a corrupt log (its messages are unreadable:
``StorageError`` when read), never a shift of the ordinals. The ordinal in that list is the
``index`` of the message's offset (duplicates and rejected entries included, so readers need
no apply state to map an offset back to its message).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgpack

from phxq import validate
from phxq.errors import PhxqError, ProtocolError, StorageError

if TYPE_CHECKING:
    from phxq.store.move_entries import AdoptEntry, CancelMoveEntry, SealEntry
    from phxq.store.schedule_entries import CancelEntry, ReleaseHead, RollHead, ScheduleHead
    from phxq.store.txn_entries import DecideEntry, DiscardEntry, PrepareHead, TxnReleaseHead

__all__ = [
    "CommitEntry",
    "EnqueueEntry",
    "EnqueueHead",
    "Entry",
    "Message",
    "ReplayEntry",
    "decode_entry",
    "encode_enqueue",
    "encode_entry",
    "instance_messages",
    "peek_entry",
]

_TAG_ENQUEUE: Final = 1  # version 1: read, never written
_TAG_COMMIT: Final = 2
_TAG_REPLAY: Final = 3
_TAG_ENQUEUE_V2: Final = 4
_MAX_U64: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Message:
    """One message as stored: the producer's payload, routing key, headers and dedup id."""

    payload: bytes
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    dedup_id: str | None = None


@dataclass(frozen=True, slots=True)
class EnqueueEntry:
    """Messages appended to one queue of a topic, stamped by the master at proposal time."""

    topic: str
    queue: int
    messages: tuple[Message, ...]
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class CommitEntry:
    """A consumer's progress: ``offset`` is the last processed message, under lock ``token``."""

    consumer_group: str
    topic: str
    queue: int
    offset: int
    token: int
    check: bool = False
    expect: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayEntry:
    """An admin one-shot that moves a cursor to ``offset`` (back included), once per id."""

    consumer_group: str
    topic: str
    queue: int
    offset: int
    replay_id: str


Entry: TypeAlias = EnqueueEntry | CommitEntry | ReplayEntry


class EnqueueHead:
    """What applying an enqueue entry needs: its queue, time and one dedup id (or None) per
    message; the message bodies stay packed (see the module docstring)."""

    __slots__ = ("dedup_ids", "enqueued_at", "queue", "topic")

    def __init__(
        self, topic: str, queue: int, enqueued_at: float, dedup_ids: list[str | None]
    ) -> None:
        self.topic = topic
        self.queue = queue
        self.enqueued_at = enqueued_at
        self.dedup_ids = dedup_ids

    def __repr__(self) -> str:
        return (
            f"EnqueueHead({self.topic!r}, {self.queue}, {self.enqueued_at}, "
            f"{len(self.dedup_ids)} messages)"
        )


# ----------------------------------------------------------------------------------- encode


def encode_entry(entry: Entry) -> bytes:
    """The wire bytes of ``entry`` (see the module docstring)."""
    fields: list[Any]
    if isinstance(entry, EnqueueEntry):
        return encode_enqueue(
            entry.topic,
            entry.queue,
            entry.enqueued_at,
            [[m.payload, m.key, m.headers, m.dedup_id] for m in entry.messages],
        )
    elif isinstance(entry, CommitEntry):
        fields = [
            _TAG_COMMIT,
            entry.consumer_group,
            entry.topic,
            entry.queue,
            entry.offset,
            entry.token,
        ]
        if entry.check:
            fields.append([entry.expect])
    elif isinstance(entry, ReplayEntry):
        fields = [
            _TAG_REPLAY,
            entry.consumer_group,
            entry.topic,
            entry.queue,
            entry.offset,
            entry.replay_id,
        ]
    else:
        raise TypeError(f"not a store log entry: {entry!r}")
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def encode_enqueue(
    topic: str, queue: int, enqueued_at: float, wire_messages: Sequence[Sequence[Any]]
) -> bytes:
    """A version-2 enqueue entry of ``[payload, key, headers, dedup_id]`` messages that the
    caller has validated (the store's enqueue handler does, per message)."""
    body = _packb([m[:3] for m in wire_messages], use_bin_type=True)
    dedup_ids = [m[3] for m in wire_messages]
    packed: bytes = _packb(
        [_TAG_ENQUEUE_V2, topic, queue, float(enqueued_at), dedup_ids, body], use_bin_type=True
    )
    return packed


_packb = msgpack.packb


def encode_enqueue_v1(entry: EnqueueEntry) -> bytes:
    """The version-1 form of ``entry`` (no longer written by the store; for tests of logs
    written before version 2)."""
    fields = [
        _TAG_ENQUEUE,
        entry.topic,
        entry.queue,
        [[m.payload, m.key, m.headers, m.dedup_id] for m in entry.messages],
        float(entry.enqueued_at),
    ]
    packed: bytes = _packb(fields, use_bin_type=True)
    return packed


# ----------------------------------------------------------------------------------- decode


def _text(value: Any, what: str) -> str:
    if type(value) is str and value:  # (one test when valid)
        return value
    return validate.name(value, what, max_chars=None, error=ProtocolError)


def _opt_text(value: Any, what: str) -> str | None:
    return None if value is None else validate.text(value, what, error=ProtocolError)


def _uint(value: Any, what: str) -> int:
    if type(value) is int and 0 <= value <= validate.MAX_U64:  # (one test when valid)
        return value
    return validate.integer(value, what, error=ProtocolError)


def _message(raw: Any, position: int) -> Message:
    # Every replica decodes every message it applies: the well-formed case is checked inline
    # (no per-message f-strings for error texts that are almost never needed).
    if type(raw) is list and len(raw) == 4:
        payload, key, headers, dedup_id = raw
        if (
            type(payload) is bytes
            and (key is None or type(key) is str)
            and (dedup_id is None or type(dedup_id) is str)
            and type(headers) is dict
            and (not headers or all(type(k) is str and type(v) is str for k, v in headers.items()))
        ):
            return Message(payload, key, headers, dedup_id)
    if not isinstance(raw, list) or len(raw) != 4:
        raise ProtocolError(f"message {position}: expected [payload, key, headers, dedup_id]")
    payload, key, headers, dedup_id = raw
    if not isinstance(payload, bytes):
        raise ProtocolError(f"message {position}: payload must be bin")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ProtocolError(f"message {position}: headers must map strings to strings")
    return Message(
        payload=payload,
        key=_opt_text(key, f"message {position} key"),
        headers=headers,
        dedup_id=_opt_text(dedup_id, f"message {position} dedup_id"),
    )


def _enqueue(fields: list[Any]) -> EnqueueEntry:
    if len(fields) != 5:
        raise ProtocolError(f"enqueue entry: expected 5 fields, got {len(fields)}")
    _, topic, queue, raw_messages, enqueued_at = fields
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ProtocolError("enqueue entry: messages must be a non-empty array")
    validate.number(enqueued_at, "enqueue entry enqueued_at", error=ProtocolError)
    return EnqueueEntry(
        topic=_text(topic, "enqueue entry topic"),
        queue=_uint(queue, "enqueue entry queue"),
        messages=tuple(_message(m, i) for i, m in enumerate(raw_messages)),
        enqueued_at=float(enqueued_at),
    )


def _head_v2(fields: list[Any]) -> EnqueueHead:
    if len(fields) != 6:
        raise ProtocolError(f"enqueue entry: expected 6 fields, got {len(fields)}")
    _, topic, queue, enqueued_at, dedup_ids, body = fields
    if type(enqueued_at) is not float or not math.isfinite(enqueued_at):
        raise ProtocolError(f"enqueue entry: enqueued_at must be a finite float: {enqueued_at!r}")
    if type(dedup_ids) is not list or not dedup_ids:
        raise ProtocolError("enqueue entry: dedup ids must be a non-empty array")
    for d in dedup_ids:
        if d is not None and type(d) is not str:
            raise ProtocolError("enqueue entry: a dedup id must be a string or nil")
    if type(body) is not bytes:
        raise ProtocolError("enqueue entry: body must be bin")
    return EnqueueHead(
        _text(topic, "enqueue entry topic"),
        _uint(queue, "enqueue entry queue"),
        enqueued_at,
        dedup_ids,
    )


def _enqueue_v2(fields: list[Any]) -> EnqueueEntry:
    head = _head_v2(fields)
    return EnqueueEntry(head.topic, head.queue, _body(head, fields[5]), head.enqueued_at)


def _body(head: EnqueueHead, body: bytes) -> tuple[Message, ...]:
    try:
        raw = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"undecodable enqueue body: {type(exc).__name__}: {exc}") from None
    ids = head.dedup_ids
    if type(raw) is not list or len(raw) != len(ids):
        raise ProtocolError(f"enqueue body: expected an array of {len(ids)} messages")
    out = []
    for i, (m, d) in enumerate(zip(raw, ids, strict=True)):
        if type(m) is not list or len(m) != 3:
            raise ProtocolError(f"message {i}: expected [payload, key, headers]")
        m.append(d)
        out.append(_message(m, i))
    return tuple(out)


def _commit(fields: list[Any]) -> CommitEntry:
    if len(fields) not in (6, 7):
        raise ProtocolError(f"commit entry: expected 6 or 7 fields, got {len(fields)}")
    _, group, topic, queue, offset, token = fields[:6]
    check = len(fields) == 7
    expect: int | None = None
    if check:
        cas = fields[6]
        if not isinstance(cas, list) or len(cas) != 1:
            raise ProtocolError(f"commit entry: expect must be a 1-element array: {cas!r}")
        expect = None if cas[0] is None else _uint(cas[0], "commit entry expect")
    return CommitEntry(
        consumer_group=_text(group, "commit entry consumer_group"),
        topic=_text(topic, "commit entry topic"),
        queue=_uint(queue, "commit entry queue"),
        offset=_uint(offset, "commit entry offset"),
        token=_uint(token, "commit entry token"),
        check=check,
        expect=expect,
    )


def _replay(fields: list[Any]) -> ReplayEntry:
    if len(fields) != 6:
        raise ProtocolError(f"replay entry: expected 6 fields, got {len(fields)}")
    _, group, topic, queue, offset, replay_id = fields
    return ReplayEntry(
        consumer_group=_text(group, "replay entry consumer_group"),
        topic=_text(topic, "replay entry topic"),
        queue=_uint(queue, "replay entry queue"),
        offset=_uint(offset, "replay entry offset"),
        replay_id=_text(replay_id, "replay entry replay_id"),
    )


def _head_v1(fields: list[Any]) -> EnqueueHead:
    entry = _enqueue(fields)
    return EnqueueHead(
        entry.topic, entry.queue, entry.enqueued_at, [m.dedup_id for m in entry.messages]
    )


_DECODERS: dict[int, Callable[[list[Any]], Entry]] = {
    _TAG_ENQUEUE: _enqueue,
    _TAG_COMMIT: _commit,
    _TAG_REPLAY: _replay,
    _TAG_ENQUEUE_V2: _enqueue_v2,
}

_PEEKERS: dict[int, Callable[[list[Any]], EnqueueHead | CommitEntry | ReplayEntry]] = {
    _TAG_ENQUEUE: _head_v1,
    _TAG_COMMIT: _commit,
    _TAG_REPLAY: _replay,
    _TAG_ENQUEUE_V2: _head_v2,
}


def _fields(data: bytes) -> list[Any]:
    if type(data) is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"log entry must be bytes, got {type(data).__name__}")
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"undecodable log entry: {type(exc).__name__}: {exc}") from None
    if type(fields) is not list or not fields:
        raise ProtocolError("log entry must be a non-empty array")
    return fields


def _decoder(table: dict[int, Any], tag: Any) -> Any:
    decoder = table.get(tag) if type(tag) is int else None
    if decoder is None and type(tag) is int:
        # Delayed-message entries (tags 5-7): phxq.store.schedule_entries.
        decoder = (_schedule.PEEKERS if table is _PEEKERS else _schedule.DECODERS).get(tag)
    if decoder is None and type(tag) is int:
        # Transaction entries (tags 9-12): phxq.store.txn_entries.
        decoder = (_txn.PEEKERS if table is _PEEKERS else _txn.DECODERS).get(tag)
    if decoder is None and type(tag) is int:
        # Queue move entries (tags 13-15): phxq.store.move_entries.
        decoder = _move.DECODERS.get(tag)
    if decoder is None:
        raise ProtocolError(f"unknown log entry tag {tag!r:.40}")
    return decoder


def decode_entry(data: bytes) -> Entry:
    """The entry encoded in ``data``, message bodies included. Raises :class:`ProtocolError`
    (only) if malformed."""
    fields = _fields(data)
    result: Entry = _decoder(_DECODERS, fields[0])(fields)
    return result


# What ``peek_entry`` returns (the heads of ``schedule_entries`` and ``txn_entries`` too).
Peeked: TypeAlias = (
    "EnqueueHead | CommitEntry | ReplayEntry | ScheduleHead | ReleaseHead | CancelEntry"
    " | RollHead | PrepareHead | TxnReleaseHead | DecideEntry | DiscardEntry"
    " | SealEntry | CancelMoveEntry | AdoptEntry"
)


def peek_entry(data: bytes) -> Peeked:
    """What applying ``data`` needs: an enqueue's head (bodies stay packed), or the commit or
    replay entry. Raises :class:`ProtocolError` (only) if that much is malformed."""
    fields = _fields(data)
    result: Peeked = _decoder(_PEEKERS, fields[0])(fields)
    return result


def instance_messages(items: Sequence[bytes]) -> list[tuple[EnqueueEntry, Message]]:
    """Every message of a chosen instance with its entry; list position = offset index.

    Undecodable items and entries without readable messages contribute nothing; every
    message of every decodable enqueue or release entry (:mod:`phxq.store.schedule_entries`)
    counts (see the module docstring: a version-2 or release entry whose head decodes but
    whose body does not raises ``StorageError``)."""
    out: list[tuple[EnqueueEntry, Message]] = []
    for item in items:
        try:
            fields = _fields(item)
            tag = fields[0] if type(fields[0]) is int else None
            if tag == _TAG_ENQUEUE:
                entry = _enqueue(fields)
            elif tag == _TAG_ENQUEUE_V2:
                head = _head_v2(fields)
            elif tag == _schedule.TAG_RELEASE:
                _schedule.PEEKERS[tag](fields)  # the head only: a bad body is a corrupt log
            elif tag == _txn.TAG_TXN_RELEASE:
                _txn.PEEKERS[tag](fields)
            else:
                continue
        except PhxqError:
            continue
        if tag == _schedule.TAG_RELEASE:
            entry = _schedule.release_as_enqueue(fields)
        elif tag == _txn.TAG_TXN_RELEASE:
            entry = _txn.release_as_enqueue(fields)
        if tag == _TAG_ENQUEUE_V2:
            try:
                entry = EnqueueEntry(
                    head.topic, head.queue, _body(head, fields[5]), head.enqueued_at
                )
            except ProtocolError as exc:
                raise StorageError(f"corrupt enqueue entry body: {exc.message}") from None
        out.extend((entry, m) for m in entry.messages)
    return out


# Last: that module builds on the helpers above (and is only used at call time here).
from phxq.store import move_entries as _move  # noqa: E402
from phxq.store import schedule_entries as _schedule  # noqa: E402
from phxq.store import txn_entries as _txn  # noqa: E402
