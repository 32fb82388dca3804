"""The log entries of a queue move (``phxq admin queue move``; :mod:`phxq.store.move_state`).

Three entries, each a msgpack array led by its tag (the tags of :mod:`phxq.store.entries`,
``schedule_entries`` and ``txn_entries`` are 1 to 12; these take 13 to 15)::

    [13, topic, queue, move_id, target]                    SealEntry   (in the source set)
    [14, topic, queue, move_id]                            CancelMoveEntry (source set)
    [15, topic, queue, move_id, source, sealed, end,        AdoptEntry  (in the target set)
         [[consumer_group, offset, token], ...],
         [[enqueued_at, dedup_id, offset], ...]]

- A **seal** closes the queue on the source set for move ``move_id`` to set ``target``.
- A **cancel** withdraws ``move_id`` before its seal: once applied, that move's seal is refused;
  if the seal came first, the cancel is refused (a sealed move only goes forward).
- An **adopt** opens the queue on the target set: ``sealed`` is the seal's offset (every
  offset the queue will get here is above it), ``end`` the queue's last message offset at the
  seal (None: never had one), then the consumer cursors and the dedup window entries the
  source held for the queue.

``encode_move(entry)`` / ``decode_move(fields)``; decoding raises ``ProtocolError`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgpack

from phxq import validate
from phxq.errors import ProtocolError

__all__ = [
    "DECODERS",
    "TAG_ADOPT",
    "TAG_CANCEL_MOVE",
    "TAG_SEAL",
    "AdoptEntry",
    "CancelMoveEntry",
    "MoveEntry",
    "SealEntry",
    "encode_move",
]

TAG_SEAL: Final = 13
TAG_CANCEL_MOVE: Final = 14
TAG_ADOPT: Final = 15
MAX_MOVE_ID_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class SealEntry:
    """Close ``queue`` of ``topic`` on this set for move ``move_id`` to set ``target``."""

    topic: str
    queue: int
    move_id: str
    target: int


@dataclass(frozen=True, slots=True)
class CancelMoveEntry:
    """Withdraw move ``move_id`` of ``queue`` before it is sealed."""

    topic: str
    queue: int
    move_id: str


@dataclass(frozen=True, slots=True)
class AdoptEntry:
    """Open ``queue`` of ``topic`` on this set, moved from set ``source`` (see the module
    docstring)."""

    topic: str
    queue: int
    move_id: str
    source: int
    sealed: int
    end: int | None
    cursors: tuple[tuple[str, int, int], ...]  # (consumer_group, offset, token)
    dedup: tuple[tuple[float, str, int], ...]  # (enqueued_at, dedup_id, offset)


MoveEntry: TypeAlias = SealEntry | CancelMoveEntry | AdoptEntry


def encode_move(entry: MoveEntry) -> bytes:
    """The log bytes of ``entry``."""
    fields: list[Any]
    if isinstance(entry, SealEntry):
        fields = [TAG_SEAL, entry.topic, entry.queue, entry.move_id, entry.target]
    elif isinstance(entry, CancelMoveEntry):
        fields = [TAG_CANCEL_MOVE, entry.topic, entry.queue, entry.move_id]
    elif isinstance(entry, AdoptEntry):
        fields = [
            TAG_ADOPT,
            entry.topic,
            entry.queue,
            entry.move_id,
            entry.source,
            entry.sealed,
            entry.end,
            [list(c) for c in entry.cursors],
            [[float(at), d, off] for at, d, off in entry.dedup],
        ]
    else:
        raise TypeError(f"not a move entry: {entry!r}")
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def _text(value: Any, what: str) -> str:
    return validate.name(value, what, max_chars=None, error=ProtocolError)


def _uint(value: Any, what: str) -> int:
    return validate.integer(value, what, maximum=None, error=ProtocolError)


def _move_id(value: Any) -> str:
    return validate.name(value, "move id", max_chars=MAX_MOVE_ID_CHARS, error=ProtocolError)


def _seal(fields: list[Any]) -> SealEntry:
    if len(fields) != 5:
        raise ProtocolError(f"seal entry: expected 5 fields, got {len(fields)}")
    _, topic, queue, move_id, target = fields
    return SealEntry(
        _text(topic, "seal topic"),
        _uint(queue, "seal queue"),
        _move_id(move_id),
        _uint(target, "seal target"),
    )


def _cancel(fields: list[Any]) -> CancelMoveEntry:
    if len(fields) != 4:
        raise ProtocolError(f"cancel move entry: expected 4 fields, got {len(fields)}")
    _, topic, queue, move_id = fields
    return CancelMoveEntry(
        _text(topic, "move topic"), _uint(queue, "move queue"), _move_id(move_id)
    )


def _adopt(fields: list[Any]) -> AdoptEntry:
    if len(fields) != 9:
        raise ProtocolError(f"adopt entry: expected 9 fields, got {len(fields)}")
    _, topic, queue, move_id, source, sealed, end, cursors, dedup = fields
    if not isinstance(cursors, list) or not isinstance(dedup, list):
        raise ProtocolError("adopt entry: cursors and dedup must be arrays")
    rows = []
    for c in cursors:
        if not isinstance(c, list) or len(c) != 3:
            raise ProtocolError("adopt entry: a cursor is [consumer_group, offset, token]")
        rows.append(
            (_text(c[0], "adopt cursor group"), _uint(c[1], "offset"), _uint(c[2], "token"))
        )
    ids = []
    for d in dedup:
        if not isinstance(d, list) or len(d) != 3:
            raise ProtocolError("adopt entry: a dedup row is [enqueued_at, dedup_id, offset]")
        at = d[0]
        if type(at) is not float or not math.isfinite(at):
            raise ProtocolError("adopt entry: enqueued_at must be a finite float")
        ids.append((at, validate.text(d[1], "dedup id", error=ProtocolError), _uint(d[2], "ref")))
    return AdoptEntry(
        _text(topic, "adopt topic"),
        _uint(queue, "adopt queue"),
        _move_id(move_id),
        _uint(source, "adopt source"),
        _uint(sealed, "adopt sealed"),
        None if end is None else _uint(end, "adopt end"),
        tuple(rows),
        tuple(ids),
    )


# Decoded whole: the same function serves decode_entry and peek_entry.
DECODERS: Final[dict[int, Any]] = {TAG_SEAL: _seal, TAG_CANCEL_MOVE: _cancel, TAG_ADOPT: _adopt}
