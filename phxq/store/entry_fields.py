"""Field codecs shared by the scheduled-message entries (:mod:`phxq.store.schedule_entries`)
and the transaction entries built on them (:mod:`phxq.store.txn_entries`): times, ids per due
time, dedup ids, the packed message bodies, and the release form both modules write (a
transaction's release entry is a release entry with its transaction id appended). Each check
raises only :class:`~phxq.errors.ProtocolError`, naming the field (``what``) or the entry
(``entry``); :func:`corrupt_log` turns a body that does not decode under a good head into the
``StorageError`` of a corrupt log."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgpack

from phxq.errors import ProtocolError, StorageError
from phxq.store.entries import EnqueueHead, Message, _body, _text, _uint

__all__ = [
    "check_bin",
    "check_dedup_ids",
    "check_ids_per_due",
    "corrupt_log",
    "encode_released",
    "finite_time",
    "finite_times",
    "messages_of",
    "messages_with_ids",
    "packed_bodies",
    "released_fields",
    "wire_of",
]


def finite_time(value: Any, what: str) -> float:
    if type(value) is not float or not math.isfinite(value):
        raise ProtocolError(f"{what}: expected a finite float, got {value!r:.40}")
    return value


def finite_times(value: Any, what: str) -> list[float]:
    """A non-empty array of finite floats."""
    if type(value) is not list or not value:
        raise ProtocolError(f"{what}: expected a non-empty array of times")
    for v in value:
        finite_time(v, what)
    return value


def check_ids_per_due(ids: Any, due: Any, entry: str) -> None:
    """``due``: a non-empty array of times; ``ids``: one unsigned id per due time."""
    finite_times(due, f"{entry} due")
    if type(ids) is not list or len(ids) != len(due):
        raise ProtocolError(f"{entry}: one id per due time")
    for i in ids:
        _uint(i, f"{entry} id")


def check_dedup_ids(dedup_ids: Any, count: int | None, entry: str) -> None:
    """One dedup id (a string or nil) per message: ``count`` of them, or any non-empty array."""
    if type(dedup_ids) is not list or (
        len(dedup_ids) != count if count is not None else not dedup_ids
    ):
        raise ProtocolError(f"{entry}: one dedup id (or nil) per message")
    for d in dedup_ids:
        if d is not None and type(d) is not str:
            raise ProtocolError(f"{entry}: a dedup id must be a string or nil")


def check_bin(body: Any, entry: str) -> None:
    if type(body) is not bytes:
        raise ProtocolError(f"{entry}: body must be bin")


def wire_of(messages: Sequence[Message], *, dedup: bool) -> list[list[Any]]:
    """The ``[payload, key, headers]`` (``dedup``: ``+ [dedup_id]``) wire form of messages."""
    if dedup:
        return [[m.payload, m.key, m.headers, m.dedup_id] for m in messages]
    return [[m.payload, m.key, m.headers] for m in messages]


def packed_bodies(wire_messages: Sequence[Sequence[Any]]) -> bytes:
    """The packed ``[payload, key, headers]`` of each wire message (the enqueue body codec)."""
    packed: bytes = msgpack.packb([list(m[:3]) for m in wire_messages], use_bin_type=True)
    return packed


def messages_with_ids(dedup_ids: list[str | None], body: bytes) -> tuple[Message, ...]:
    """The messages of a packed body, one per dedup id, each given its id."""
    return _body(EnqueueHead("", 0, 0.0, dedup_ids), body)


def messages_of(count: int, body: bytes) -> tuple[Message, ...]:
    """The ``count`` messages of a packed body (the enqueue entry's body codec, no dedup ids)."""
    return messages_with_ids([None] * count, body)


@contextmanager
def corrupt_log(entry: str) -> Iterator[None]:
    """Raise a ``ProtocolError`` of the block as ``StorageError("corrupt <entry> body: ...")``:
    for bodies read under a head that decoded (the head's messages already took ordinals, so
    an unreadable body is a corrupt log, never a malformed request)."""
    try:
        yield
    except ProtocolError as exc:
        raise StorageError(f"corrupt {entry} body: {exc.message}") from None


# ------------------------------------------------------------------------- release form
# [tag, topic, queue, released_at, [id, ...], [due, ...], body, *trailer]


def encode_released(
    tag: int,
    topic: str,
    queue: int,
    released_at: float,
    ids: Sequence[int],
    due: Sequence[float],
    wire_messages: Sequence[Sequence[Any]],
    *trailer: Any,
) -> bytes:
    """A release-form entry of ``[payload, key, headers]`` messages, then ``trailer``."""
    body = packed_bodies(wire_messages)
    fields = [tag, topic, queue, float(released_at), list(ids), [float(d) for d in due], body]
    packed: bytes = msgpack.packb([*fields, *trailer], use_bin_type=True)
    return packed


def released_fields(
    fields: list[Any], count: int, entry: str
) -> tuple[str, int, float, list[int], list[float]]:
    """``(topic, queue, released_at, ids, due)`` of a release-form entry of ``count`` fields,
    checked (the body only for being bin; ``fields[7:]`` not at all)."""
    if len(fields) != count:
        raise ProtocolError(f"{entry}: expected {count} fields, got {len(fields)}")
    _, topic, queue, released_at, ids, due, body = fields[:7]
    check_ids_per_due(ids, due, entry)
    check_bin(body, entry)
    return (
        _text(topic, f"{entry} topic"),
        _uint(queue, f"{entry} queue"),
        finite_time(released_at, f"{entry} released_at"),
        ids,
        due,
    )
