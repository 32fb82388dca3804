"""The queue move driver: runs in every store, acts where it masters the target group.

``phxq admin queue move`` only records the intent in the cluster map (a
:class:`~phxq.topology.QueueMove`: queue, source set A, target set B, move id). Everything
else is driven from the server side, idempotently, by the master of group ``queue % groups``
in set B, so a crash of the admin CLI, of any store or of a master (a new master picks the
move up from the map) never leaves a move half done:

1. **Seal** (A): ``move_seal`` on A's group master proposes a seal entry. From its instance
   on, A refuses enqueues of the queue (``QueueMoved``, a ``StaleMap`` naming set B), still
   serves reads up to the seal and cursor commits. The answer carries the seal offset, the
   queue's last offset, the consumer cursors and the queue's dedup window entries. Sealing
   again returns the same seal.
2. **Adopt** (B): the driver proposes an adopt entry with that answer; B's offsets of the
   queue continue above the seal (a per-queue offset delta, :mod:`phxq.store.move_state`).
   From then on B accepts enqueues of the queue even before the map says so. Adopting again
   changes nothing.
3. **Flip the map**: ``Topology.moved`` (compare-and-set in the lock service's KV): placement
   becomes B, A's sealed segment joins the queue's history (readers route offsets ``<=``
   the seal to A), the move record goes. Done twice, the second is a no-op.

A move whose seal was never chosen can be cancelled (``phxq admin queue move --cancel``: a
cancel entry in A, then the record leaves the map); once sealed it only goes forward, and
the driver retries every ``INTERVAL`` until it completes (e.g. while A has no majority).

A seal is refused (``MoveBlocked``) while A's group holds delayed messages or undecided
transaction parts: they would be released above the seal, where no reader looks. The move
then stays pending and the driver retries (every ``BLOCKED_INTERVAL``) until they are
released, cancelled or decided. :meth:`Mover.waiting` is why each move this store drives is
not done yet (``phxq admin status`` shows it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from phxq import mapstore
from phxq.errors import BadArgument, MoveBlocked, NotMaster, PhxqError, Unavailable
from phxq.net.rpc import RpcPool
from phxq.net.transport import client_transport
from phxq.routing import group_for_queue
from phxq.store import state as st
from phxq.store.move_entries import AdoptEntry, encode_move
from phxq.store.move_state import Adopted
from phxq.topology import QueueMove

if TYPE_CHECKING:
    from phxq.store.node import StoreNode

__all__ = ["Mover"]

log = logging.getLogger("phxq.store.mover")

INTERVAL = 0.2  # seconds between passes over the map's pending moves
BLOCKED_INTERVAL = 1.0  # seconds between seal attempts of a move refused with MoveBlocked
CALL_TIMEOUT = 2.0
SEAL_ATTEMPTS = 6  # calls per pass to find set A's master (NotMaster hints followed)


class Mover:
    """One store's share of driving queue moves (see the module docstring)."""

    def __init__(self, node: StoreNode) -> None:
        self._node = node
        self._failing: dict[str, str] = {}  # move id -> last error (logged once per change)
        self._blocked_until: dict[str, float] = {}  # move id -> loop time of the next attempt

    def waiting(self) -> dict[str, str]:
        """Why each move this store drives is not done yet: move id -> the last error."""
        return dict(self._failing)

    async def run(self) -> None:
        tls = None if self._node.security is None else self._node.security.peer_ssl
        loop = asyncio.get_running_loop()
        async with RpcPool(transport_factory=client_transport(None, tls)) as pool:
            while True:
                await asyncio.sleep(INTERVAL)
                moves = self._node.topology.moves
                for gone in set(self._failing) - set(moves):
                    self._failing.pop(gone, None)
                    self._blocked_until.pop(gone, None)
                for move in list(moves.values()):
                    if move.target != self._node.set:
                        continue
                    if loop.time() < self._blocked_until.get(move.id, 0.0):
                        continue
                    try:
                        await self.drive(move, pool)  # done, or not this store's to drive
                        self._failing.pop(move.id, None)
                    except PhxqError as exc:  # retried next pass; logged once per new error
                        text = f"{type(exc).__name__}: {exc.message}"
                        if isinstance(exc, MoveBlocked):
                            self._blocked_until[move.id] = loop.time() + BLOCKED_INTERVAL
                        if self._failing.get(move.id) != text:
                            log.warning("queue move %s: %s (retrying)", move.id, text)
                            self._failing[move.id] = text

    async def drive(self, move: QueueMove, pool: RpcPool) -> bool:
        """One attempt at ``move`` if this store masters its group in the target set; True
        when the move is complete (the map flipped)."""
        node = self._node
        groups = node.cluster.cluster.groups
        replica = node.replicas[group_for_queue(move.queue, groups)]
        if not replica.serving or replica.failed is not None:
            return False
        key = (move.topic, move.queue)
        tenure = replica.state.moves.adopted(key, move.id)
        if tenure is None:
            seal = await self._seal(move, pool)
            entry = AdoptEntry(
                move.topic,
                move.queue,
                move.id,
                move.source,
                int(seal["sealed"]),
                None if seal["end"] is None else int(seal["end"]),
                tuple((str(cg), int(o), int(t)) for cg, o, t in seal["cursors"]),
                tuple((float(at), str(d), int(ref)) for at, d, ref in seal["dedup"]),
            )
            result = await replica.propose_one(encode_move(entry))
            if isinstance(result, st.Rejected):
                raise result.error
            if not isinstance(result, Adopted):
                raise BadArgument(f"unexpected adopt result {result!r}")
            tenure = replica.state.moves.adopted(key, move.id)
            assert tenure is not None
            log.info(
                "queue %s/%d adopted from set %d (sealed at %d, offset delta %d)",
                move.topic,
                move.queue,
                move.source,
                entry.sealed,
                result.delta,
            )
        assert tenure.opened_after is not None
        locks = node.maps.home
        if locks is None:
            raise Unavailable("the cluster map's home (the lock service) is not reachable")
        sealed = tenure.opened_after
        new = await mapstore.update(
            locks, node.cluster, lambda topo: topo.moved(move.topic, move.queue, move.id, sealed)
        )
        await node.maps.adopt(new)
        log.info("queue %s/%d now lives on set %d", move.topic, move.queue, move.target)
        return True

    async def _seal(self, move: QueueMove, pool: RpcPool) -> dict[str, Any]:
        """``move_seal`` on set A's master of the queue's group, following NotMaster."""
        stores = [s.addr for s in self._node.cluster.set_stores(move.source)]
        if not stores:
            raise BadArgument(f"no store set {move.source} in the config")
        group = group_for_queue(move.queue, self._node.cluster.cluster.groups)
        addr = stores[group % len(stores)]
        params = {"topic": move.topic, "queue": move.queue, "move": move.id, "target": move.target}
        last: PhxqError | None = None
        for attempt in range(SEAL_ATTEMPTS):
            try:
                reply: dict[str, Any] = await pool.call(
                    addr, "move_seal", params, timeout=CALL_TIMEOUT
                )
                return reply
            except NotMaster as exc:
                last = exc
                hint = exc.hint
                addr = hint if hint in stores else stores[(group + attempt + 1) % len(stores)]
            except Unavailable as exc:
                last = exc
                addr = stores[(group + attempt + 1) % len(stores)]
        raise Unavailable(f"set {move.source} did not seal the queue: {last}")
