"""``phxq admin queue move``: hand one queue to another store set, online (re-exported by
:mod:`phxq.admin`; the protocol is :mod:`phxq.store.mover`)::

    await queue_move(cfg, topic, queue, to_set, wait=True, timeout=60.0) -> dict
    await queue_move_cancel(cfg, topic, queue) -> dict

``queue_move`` records the move in the cluster map (compare-and-set in the lock service's KV)
and, with ``wait``, polls the map until the target set's group master has driven it to the
end (sealed on the old set, adopted by the new one, placement flipped) or ``timeout`` passes
(``Unavailable``; the move goes on by itself: ``phxq admin status`` shows it). Asking again
for a move that is in progress waits for it; a move of a queue already on ``to_set`` is
``BadArgument``. Result: ``{topic, queue, move, from, to, state: "done" | "pending",
sealed (offset, when done), map_version}``.

``queue_move_cancel`` withdraws a pending move: a cancel entry in the old set's log, so a
seal can no longer happen, then the record leaves the map. ``BadArgument`` if the move is
sealed already (it then only goes forward and completes by itself).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from phxq import mapstore
from phxq.client import Client
from phxq.config import ClusterConfig
from phxq.errors import BadArgument, Unavailable
from phxq.security.daemon import client_options
from phxq.topics import _locks
from phxq.topology import Topology

__all__ = ["queue_move", "queue_move_cancel"]

POLL = 0.1


def _row(
    topo: Topology, topic: str, queue: int, move_id: str, source: int, target: int
) -> dict[str, Any]:
    pending = topo.move_of(topic, queue)
    done = pending is None and topo.set_of(topic, queue) == target
    segments = topo.segments(topic, queue)
    return {
        "topic": topic,
        "queue": queue,
        "move": move_id,
        "from": source,
        "to": target,
        "state": "done" if done else ("pending" if pending is not None else "cancelled"),
        "sealed": segments[-2][1] if done and len(segments) > 1 else None,
        "map_version": topo.version,
    }


async def queue_move(
    cfg: ClusterConfig,
    topic: str,
    queue: int,
    to_set: int,
    *,
    wait: bool = True,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Move ``queue`` of ``topic`` to store set ``to_set`` (see the module docstring)."""
    move_id = uuid.uuid4().hex[:16]
    async with _locks(cfg) as locks:

        def change(topo: Topology) -> Topology:
            current = topo.move_of(topic, queue)
            if current is not None and current.target == to_set:
                return topo  # the same move in progress: wait for it
            return topo.with_move(topic, queue, to_set, move_id, time.time())

        topo = await mapstore.update(locks, cfg, change)
        move = topo.move_of(topic, queue)
        if move is None:  # cannot happen: with_move raised or added it
            raise BadArgument(f"queue {queue} of topic {topic!r}: no move recorded")
        deadline = time.monotonic() + timeout
        while wait:
            current, _ = await mapstore.load(locks)
            assert current is not None  # update() wrote it
            topo = current
            row = _row(topo, topic, queue, move.id, move.source, move.target)
            if row["state"] != "pending":
                return row
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"move {move.id} of {topic}/{queue} to set {to_set} is not done after "
                    f"{timeout:g}s; it goes on by itself (phxq admin status shows it)",
                    {"move": move.id},
                )
            await asyncio.sleep(POLL)
        return _row(topo, topic, queue, move.id, move.source, move.target)


async def queue_move_cancel(cfg: ClusterConfig, topic: str, queue: int) -> dict[str, Any]:
    """Cancel the pending move of ``queue`` (see the module docstring)."""
    async with _locks(cfg) as locks:
        topo = await mapstore.seed(locks, cfg)
        move = topo.move_of(topic, queue)
        if move is None:
            raise BadArgument(f"no move of queue {queue} of topic {topic!r} is in progress")
        # The old set decides, through its log, whether the seal or the cancel came first.
        async with Client([s.addr for s in cfg.stores], **client_options(cfg)) as client:
            params = {"topic": topic, "queue": queue, "move": move.id}
            await client._call_master(topic, queue, "move_cancel", params)
        topo = await mapstore.update(locks, cfg, lambda t: t.without_move(topic, queue, move.id))
        row = _row(topo, topic, queue, move.id, move.source, move.target)
        return row
