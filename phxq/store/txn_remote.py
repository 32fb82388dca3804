"""Transactions across store sets: what a store asks another set's stores (DESIGN §7.1).

Each store set is its own Paxos cluster, so a participant group can read its home's decision
from its own replica only when the home is on its set. Otherwise it asks the home group's
master on the home's set, and the home's master asks the participants on other sets which
parts they hold (before committing on a check-back answer). One member-only method serves
both::

    txn_peek  {txn, group, wait?} -> {decision: bool | None, parts: [part, ...] | None,
                                      finished: bool | None}

answered from this store's replica of ``group`` (of its own set): ``decision`` the home's
decision if this group is the home and decided (final wherever read: the first decision
wins, so any replica may answer it); otherwise only the group's master answers (a follower:
``NotMaster`` with a hint), with the parts of ``txn`` this group holds (None: no half
messages open here) and its outcome if finished here. ``wait`` (seconds, at most
``MAX_WAIT``) waits that long for a decision before answering None.

:class:`TxnRemote` is the calling side: ``await remote.peek(set, group, txn, wait=0.0)``
finds the master among the set's ``[[store]]`` nodes of the config (following ``NotMaster``
hints, remembering the last master per ``(set, group)``) over the store's member TLS, and
raises ``Unavailable`` when none answered. Nothing is retried beyond that: the callers (the
transaction sweeper, ``txn_resolve``, ``txn_settle``) retry on their next tick or report it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

from phxq import validate
from phxq.errors import BadArgument, NotMaster, PhxqError, Unavailable
from phxq.net.rpc import RpcPool
from phxq.net.transport import client_transport
from phxq.store.txn_entries import MAX_TXN_ID_CHARS

if TYPE_CHECKING:
    from phxq.store.node import StoreNode

__all__ = ["MAX_WAIT", "TxnRemote", "txn_peek"]

CALL_TIMEOUT: Final = 2.0  # seconds per call (plus its wait)
MAX_WAIT: Final = 2.0  # the longest wait a txn_peek may ask for


async def txn_peek(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    """The server side of ``txn_peek`` (module docstring)."""
    txn = validate.name(params.get("txn"), "txn", max_chars=MAX_TXN_ID_CHARS)
    group = validate.integer(params.get("group"), "group", maximum=node.cluster.cluster.groups - 1)
    wait = validate.number(params.get("wait", 0.0), "wait", minimum=0.0, maximum=MAX_WAIT)
    replica = node.replicas[group]
    deadline = time.monotonic() + wait
    while True:
        book = replica.state.txns
        decision = book.decision(txn)
        if decision is None and not replica.serving:
            raise NotMaster(hint=replica.master_address())
        remaining = deadline - time.monotonic()
        if decision is not None or remaining <= 0:
            record = book.open.get(txn)
            return {
                "decision": decision,
                "parts": None if record is None else sorted(record.parts),
                "finished": book.finished(txn),
            }
        await replica.wait_applied(min(remaining, 0.2))


class TxnRemote:
    """A store's calls to other store sets about transactions (module docstring)."""

    def __init__(self, node: StoreNode) -> None:
        self._node = node
        self._pool: RpcPool | None = None
        self._master: dict[tuple[int, int], str] = {}  # (set, group) -> last master's address

    def _connections(self) -> RpcPool:
        if self._pool is None:
            sec = self._node.security
            tls = None if sec is None else sec.peer_ssl
            self._pool = RpcPool(transport_factory=client_transport(None, tls))
        return self._pool

    async def peek(self, number: int, group: int, txn: str, *, wait: float = 0.0) -> dict[str, Any]:
        """``txn_peek`` on the master of ``group`` of store set ``number``."""
        stores = [s.addr for s in self._node.cluster.set_stores(number)]
        if not stores:
            raise BadArgument(f"transaction {txn}: no store set {number} in the config")
        pool = self._connections()
        key = (number, group)
        addr = self._master.get(key) or stores[group % len(stores)]
        wait = min(wait, MAX_WAIT)
        params = {"txn": txn, "group": group, "wait": wait}
        last: PhxqError | None = None
        for attempt in range(2 * len(stores)):
            try:
                reply: dict[str, Any] = await pool.call(
                    addr, "txn_peek", params, timeout=CALL_TIMEOUT + wait
                )
                self._master[key] = addr
                return reply
            except NotMaster as exc:
                last = exc
                hint = exc.hint
                addr = hint if hint in stores else stores[(group + attempt + 1) % len(stores)]
                if hint is None:
                    await asyncio.sleep(0.05)  # an election under way: a moment for it
            except Unavailable as exc:
                last = exc
                addr = stores[(stores.index(addr) + 1) % len(stores)]
        self._master.pop(key, None)
        raise Unavailable(f"transaction {txn}: group {group} of set {number}: {last}")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
