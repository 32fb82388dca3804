"""The snapshot bytes of the store's state machine (:meth:`phxq.store.state.StoreState.snapshot`
and ``restore``): a canonical msgpack array, versioned (1 to 4 are read; 4 is written)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgpack

from phxq import validate
from phxq.errors import ProtocolError
from phxq.store.move_state import QueueMoves
from phxq.store.schedule import Schedule
from phxq.store.txn import TxnBook

if TYPE_CHECKING:
    from phxq.store.state import StoreState

__all__ = ["decode_state", "encode_state"]

# 2 added the schedule, 3 rolled messages, 4 transactions, 5 queue moves; 1 to 4 are still read
_SNAPSHOT_VERSION = 5


def encode_state(state: StoreState) -> bytes:
    """:meth:`StoreState.snapshot <phxq.store.state.StoreState.snapshot>`."""
    body = [
        _SNAPSHOT_VERSION,
        state.group,
        state.dedup_window,
        state.applied_up_to,
        state._dedup.latest_enqueued_at,
        [[*key, off, tok] for key, (off, tok) in sorted(state._cursors.items())],
        [[rid, off] for rid, off in state._replays.items()],
        state._dedup.rows(),
        [[*key, off] for key, off in sorted(state._end.items())],
        [[*key, n] for key, n in sorted(state._enqueued.items())],
        [[i, list(idx)] for i, idx in sorted(state._unindexed.items())],
        state._unindexed_floor,
        state.schedule.snapshot(),
        state.schedule.forwards(),
        state.txns.snapshot(),
        state.moves.snapshot(),
    ]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_state(cls: type[StoreState], data: bytes) -> StoreState:
    """:meth:`StoreState.restore <phxq.store.state.StoreState.restore>`: a ``cls`` from
    :func:`encode_state`'s bytes; ``ProtocolError`` if ``data`` is malformed."""
    try:
        body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"undecodable store snapshot: {type(exc).__name__}") from None
    if not (
        isinstance(body, list)
        and body
        and type(body[0]) is int
        and body[0] in (1, 2, 3, 4, _SNAPSHOT_VERSION)
        and len(body) == 11 + body[0]
    ):
        raise ProtocolError("not a version-1 to -5 store snapshot")
    (_, group, window_s, applied, latest, cursors, replays, window, ends, counts,
     unindexed, floor) = body[:12]  # fmt: skip
    if not isinstance(window_s, float) or not window_s >= 0:
        raise ProtocolError("snapshot: bad dedup_window")
    state = cls(_uint(group), dedup_window=window_s, applied_up_to=_uint(applied))
    if not isinstance(latest, float) or math.isnan(latest):
        raise ProtocolError("snapshot: bad latest enqueue time")
    state._dedup.latest_enqueued_at = latest
    for cg, topic, queue, off, tok in _rows(cursors, 5):
        state._cursors[(_text(cg), _text(topic), _uint(queue))] = (_uint(off), _uint(tok))
    for rid, off in _rows(replays, 2):
        state._replays[_text(rid)] = _uint(off)
    for at, topic, dedup_id, off in _rows(window, 4):
        if not isinstance(at, float) or not math.isfinite(at):
            raise ProtocolError("snapshot: bad dedup window time")
        state._dedup.restore_row(at, _text(topic), _text(dedup_id), _uint(off))
    for topic, queue, off in _rows(ends, 3):
        state._end[(_text(topic), _uint(queue))] = _uint(off)
    for topic, queue, n in _rows(counts, 3):
        state._enqueued[(_text(topic), _uint(queue))] = _uint(n)
    for instance, indexes in _rows(unindexed, 2):
        if not isinstance(indexes, list):
            raise ProtocolError("snapshot: bad unindexed positions")
        state._unindexed[_uint(instance)] = tuple(_uint(i) for i in indexes)
    state._unindexed_floor = _uint(floor)
    if len(body) >= 13:  # version 2: pending scheduled messages
        state.schedule = Schedule.restore(body[12])
    if len(body) >= 14:  # version 3: rolled ones
        state.schedule.restore_forwards(body[13])
    if len(body) >= 15:  # version 4: transactions
        state.txns = TxnBook.restore(body[14])
    if len(body) >= 16:  # version 5: queue moves
        state.moves = QueueMoves.restore(body[15])
    return state


def _uint(value: object) -> int:
    return validate.integer(value, "snapshot field", error=ProtocolError)


def _text(value: object) -> str:
    return validate.text(value, "snapshot field", error=ProtocolError)


def _rows(value: object, width: int) -> list[list[object]]:
    if not isinstance(value, list) or not all(
        isinstance(row, list) and len(row) == width for row in value
    ):
        raise ProtocolError(f"snapshot: expected an array of {width}-element arrays")
    return value
