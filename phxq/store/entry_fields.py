"""Field codecs shared by the scheduled-message entries (:mod:`phxq.store.schedule_entries`)
and the transaction entries built on them (:mod:`phxq.store.txn_entries`): times, ids per due
time, dedup ids and the packed message bodies. Each check raises only
:class:`~phxq.errors.ProtocolError`, naming the field (``what``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgpack

from phxq.errors import ProtocolError
from phxq.store.entries import EnqueueHead, Message, _body, _uint

__all__ = [
    "check_bin",
    "check_dedup_ids",
    "check_ids_per_due",
    "finite_time",
    "finite_times",
    "messages_of",
    "packed_bodies",
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


def packed_bodies(wire_messages: Sequence[Sequence[Any]]) -> bytes:
    """The packed ``[payload, key, headers]`` of each wire message (the enqueue body codec)."""
    packed: bytes = msgpack.packb([list(m[:3]) for m in wire_messages], use_bin_type=True)
    return packed


def messages_of(count: int, body: bytes) -> tuple[Message, ...]:
    """The ``count`` messages of a packed body (the enqueue entry's body codec, no dedup ids)."""
    return _body(EnqueueHead("", 0, 0.0, [None] * count), body)
