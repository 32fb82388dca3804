"""The store RPCs of a queue move (:mod:`phxq.store.mover` drives them; DESIGN §5.1)::

    move_seal    {topic, queue, move, target} -> {sealed, end, cursors, dedup}   (member)
    move_cancel  {topic, queue, move} -> True                                   (admin)
    queue_end    {topic, queue} -> offset of the queue's last message | None    (consume:T)

``move_seal`` runs on the source set's group master: it proposes a
:class:`~phxq.store.move_entries.SealEntry` (idempotent: sealing again answers the same seal)
and answers what the target needs to adopt the queue, read from the applied state right
after the seal: the seal offset, the queue's last offset, every consumer group's cursor and
token, and the dedup window entries of the queue's own messages (the window is per topic and
group; ids of the topic's other queues in the group stay), newest first up to ``DEDUP_BYTES``
(4 MiB of ids, about 100,000: a producer retrying an older id after the move may store it
twice; the log says when ids were left out). ``move_cancel`` proposes a
:class:`~phxq.store.move_entries.CancelMoveEntry`: ``BadArgument`` if the move is sealed
already (it then only goes forward).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from phxq import validate
from phxq.errors import BadArgument, StorageError
from phxq.store import state as st
from phxq.store.move_entries import (
    MAX_MOVE_ID_CHARS,
    CancelMoveEntry,
    SealEntry,
    encode_move,
)
from phxq.store.move_state import Sealed
from phxq.store.schedule import SCHEDULED_FLAG

if TYPE_CHECKING:
    from phxq.store.node import StoreNode

DEDUP_ROWS_LIMIT = 1_000_000  # positions scanned to find the queue's own dedup ids
# The dedup ids a move carries, newest first, fit in this many bytes: the seal's answer and the
# adopt entry travel in frames of at most 16 MiB (MAX_FRAME_DEFAULT).
DEDUP_BYTES = 4 << 20

log = logging.getLogger("phxq.store.mover")


def _params(params: dict[str, Any]) -> tuple[str, int, str]:
    topic = validate.name(params.get("topic"), "topic", max_chars=256)
    queue = validate.integer(params.get("queue"), "queue")
    move_id = validate.name(params.get("move"), "move", max_chars=MAX_MOVE_ID_CHARS)
    return topic, queue, move_id


async def move_seal(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    topic, queue, move_id = _params(params)
    target = validate.integer(params.get("target"), "target", minimum=1)
    if target == node.set:
        raise BadArgument(f"queue {queue} cannot move to its own set {target}")
    replica = node.master_replica(topic, queue)
    result = await replica.propose_one(encode_move(SealEntry(topic, queue, move_id, target)))
    if isinstance(result, st.Rejected):
        raise result.error
    if not isinstance(result, Sealed):
        raise StorageError(f"unexpected apply result {result!r}")
    state = replica.state
    key = (topic, queue)
    cursors = [
        [cg, offset, token]
        for (cg, t, q), (offset, token) in sorted(state.cursors().items())
        if (t, q) == key
    ]
    return {
        "sealed": result.sealed,
        "target": result.target,
        "end": state.end_offset(topic, queue),
        "cursors": cursors,
        "dedup": _dedup_rows(replica, key, result.sealed),
    }


def _dedup_rows(replica: Any, key: tuple[str, int], sealed: int) -> list[list[Any]]:
    """``[enqueued_at, dedup_id, offset]`` of every remembered dedup id of the queue's own
    messages (not of scheduled ones: those stay pending here)."""
    topic = key[0]
    rows = [
        (at, dedup_id, ref)
        for at, t, dedup_id, ref in replica.state._dedup.rows()
        if t == topic and ref < SCHEDULED_FLAG and ref <= sealed
    ]
    if not rows:
        return []
    moves = replica.state.moves
    lowest = min(ref for _, _, ref in rows)
    start, last, _ = moves.read_window(key, lowest - 1 if lowest else None)
    positions = replica.glog.positions(key, start, DEDUP_ROWS_LIMIT)
    mine = {
        moves.offset(key, instance, index)
        for instance, index in positions
        if last is None or instance <= last
    }
    out: list[list[Any]] = []
    budget = DEDUP_BYTES
    for at, d, ref in reversed(rows):  # newest first: the ones a producer may still retry
        if ref not in mine:
            continue
        budget -= len(d) + 24
        if budget < 0:
            log.warning(
                "queue %s/%d: the move carries only the newest %d dedup ids (of the window)",
                key[0],
                key[1],
                len(out),
            )
            break
        out.append([float(at), d, ref])
    out.reverse()
    return out


async def move_cancel(node: StoreNode, params: dict[str, Any]) -> bool:
    topic, queue, move_id = _params(params)
    replica = node.master_replica(topic, queue)
    result = await replica.propose_one(encode_move(CancelMoveEntry(topic, queue, move_id)))
    if isinstance(result, st.Rejected):
        raise result.error
    return True


async def queue_end(node: StoreNode, params: dict[str, Any]) -> int | None:
    """The offset of the queue's last message (a moved queue's offsets are not its log
    positions: a tail "from now" starts after this)."""
    topic = validate.name(params.get("topic"), "topic", max_chars=256)
    queue = validate.integer(params.get("queue"), "queue")
    end: int | None = node.master_replica(topic, queue).state.end_offset(topic, queue)
    return end


HANDLERS = {"move_seal": move_seal, "move_cancel": move_cancel, "queue_end": queue_end}
