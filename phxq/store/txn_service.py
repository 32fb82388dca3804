"""The store's runtime for transactional messages (the protocol and pure parts:
:mod:`phxq.store.txn`, :mod:`phxq.store.txn_entries`).

RPC handlers (params are msgpack maps; every one validates before proposing anything):

============  ================================================================================
txn_prepare   ``{txn, home, timeout, producer_group?, topic, expect, batches: [[queue, part,
              [[payload, key, headers, dedup_id], ...]], ...]}`` (one group) -> per batch the
              number of half messages held; ``TransactionAborted`` if the transaction is
              already finished in this group (a prepare arriving after the decision).
              ``home``: a group of this store's set, or ``[set, group]``; ``expect`` items are
              ``[group, part]`` or ``[group, part, set]``; ``set``: the store set the client
              meant the request for (``BadArgument`` on another: the queue moved since). (The
              pair forms are what a store older than transactions across sets refuses,
              BadArgument: a rolling upgrade never lets such a store hold a part whose home
              is on another set.)
txn_decide    ``{txn, topic, queue, commit}`` on the home group (the group of ``queue``) ->
              ``{commit, reason}``: the decision (the first one applied, maybe not this one)
txn_resolve   ``{txn, topic, queue}`` on a participant group -> ``{commit, offsets: [[topic,
              queue, offset], ...]}``: waits (briefly) for the home's decision in this node's
              replica of the home group (a home on another set: its master, ``txn_peek``),
              then releases or discards the transaction's half messages held there
txn_list      ``{}`` (admin) -> the open transactions of the groups this node masters (with
              ``set`` and ``home_set``)
txn_peek      (member) a store of another set asks about a transaction: :mod:`txn_remote`
txn_settle    ``{txn, group, commit}`` (admin) -> ``{commit, reason}``: an operator's decision
              written in home group ``group`` (the first decision still wins)
============  ================================================================================

:class:`TxnSweeper` runs on every store: on each group it masters it applies every decision
that became readable (so a producer that crashed after deciding delays nothing beyond a tick;
a home on another store set is asked every ``PEEK_EVERY``), and on each home group it decides the transactions undecided past their timeout: it asks the
producer group's ``check`` handler (:mod:`phxq.store.txn_check`) and writes its answer (a
commit only once every expected part is held: ``phxq.store.txn.all_prepared``), retries an
unknown answer with backoff, and rolls back at the producer group's ``max_age`` (or at the
timeout when the transaction has no producer group with a ``check``), with a metric and a log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from phxq import metrics, validate
from phxq.errors import BadArgument, NotMaster, PhxqError, StorageError, TransactionAborted
from phxq.net.frames import shown
from phxq.net.server import LogLimiter
from phxq.store import state as st
from phxq.store.scheduler import _read_records
from phxq.store.service import _check_messages, _str
from phxq.store.txn import OpenTxn, TxnBook, TxnDecided, TxnPrepared, all_prepared, remote_groups
from phxq.store.txn_check import CheckBack
from phxq.store.txn_entries import (
    HELD,
    MAX_TIMEOUT,
    MAX_TXN_ID_CHARS,
    encode_decide,
    encode_discard,
    encode_prepare,
    encode_txn_release,
)
from phxq.store.txn_remote import TxnRemote, txn_peek
from phxq.tasks import TaskScope

if TYPE_CHECKING:
    from phxq.replication.replica import GroupReplica
    from phxq.store.node import StoreNode
    from phxq.store.state import StoreState

log = logging.getLogger("phxq.txn")

POLL: Final = 0.2  # seconds between the sweeper's looks at open transactions
PEEK_EVERY: Final = 0.5  # seconds between a participant's looks at its home on another set
LIST_WAIT: Final = 1.0  # seconds txn_list spends asking homes on other store sets, in all
RESOLVE_WAIT: Final = 2.0  # seconds txn_resolve waits for the home's decision to be readable


def _txn(params: dict[str, Any]) -> str:
    return validate.name(params.get("txn"), "txn", max_chars=MAX_TXN_ID_CHARS)


def _commit_flag(params: dict[str, Any]) -> bool:
    commit = params.get("commit")
    if type(commit) is not bool:
        raise BadArgument("commit must be true or false")
    return commit


async def txn_prepare(node: StoreNode, params: dict[str, Any]) -> list[int]:
    txn = _txn(params)
    topic = _str(params, "topic")
    assert topic is not None
    home_set, home = _home(node, params.get("home"))
    meant = params.get("set")
    if meant is not None and meant != node.set:
        raise BadArgument(
            f"transaction {txn}: prepared for store set {shown(meant)}, but this is set "
            f"{node.set} (the cluster map changed since): prepare a new transaction"
        )
    timeout = validate.number(params.get("timeout"), "timeout", minimum=0.001, maximum=MAX_TIMEOUT)
    producer = params.get("producer_group")
    if producer is not None:
        producer = validate.name(producer, "producer_group", max_chars=256)
    expect = params.get("expect") or []
    if not isinstance(expect, list) or not all(
        isinstance(e, list) and len(e) in (2, 3) and all(type(x) is int and x >= 0 for x in e)
        for e in expect
    ):
        raise BadArgument("expect must be a list of [group, part] or [group, part, set]")
    # A part on this (the home's) set is [group, part], as before sets; others keep their set.
    expect = [e[:2] if len(e) == 2 or e[2] == node.set else e for e in expect]
    batches = params.get("batches")
    if not isinstance(batches, list) or not batches:
        raise BadArgument("batches must be a non-empty list of [queue, part, messages]")
    spec = node.topology.topics.get(topic)
    replica = None
    now = time.time()
    items: list[bytes] = []
    for batch in batches:
        if not isinstance(batch, list) or len(batch) != 3 or not isinstance(batch[2], list):
            raise BadArgument("each batch must be [queue, part, [message, ...]]")
        queue, part, raw = batch
        r = node.replica_for(topic, queue)
        if replica is not None and r is not replica:
            raise BadArgument("all queues of one txn_prepare request must be in the same group")
        replica = r
        part = validate.integer(part, "part")
        assert spec is not None
        if not raw:
            raise BadArgument("a batch must hold at least one message")
        _check_messages(raw, spec.max_message_bytes)
        items.append(
            encode_prepare(
                txn, home, part, timeout, producer, topic, queue, now, raw, expect, home_set
            )
        )
    replica = node.master_replica(topic, batches[0][0])
    results = await replica.propose(items)
    out = []
    for result in results:
        if isinstance(result, st.Rejected):
            raise result.error
        if not isinstance(result, TxnPrepared):
            raise StorageError(f"unexpected apply result {result!r}")
        if result.closed:
            raise TransactionAborted(f"transaction {txn} is already finished in this group")
        out.append(len(result.ids))
    return out


def _home(node: StoreNode, value: Any) -> tuple[int | None, int]:
    """``(set or None for this store's, group)`` of a ``txn_prepare``'s ``home``."""
    groups = node.cluster.cluster.groups
    if not isinstance(value, list):
        return None, validate.integer(value, "home", maximum=groups - 1)
    if len(value) != 2 or value[0] not in node.topology.sets:
        raise BadArgument(f"home must be a group or [set, group] of a store set: {shown(value)}")
    home = validate.integer(value[1], "home group", maximum=groups - 1)
    # An entry names another set only: its bytes stay what they were before sets.
    return (None if value[0] == node.set else value[0]), home


async def _decide(
    replica: GroupReplica[StoreState], txn: str, commit: bool, why: str
) -> dict[str, Any]:
    result = await replica.propose_one(encode_decide(txn, commit, time.time(), why))
    if isinstance(result, st.Rejected):
        raise result.error
    if not isinstance(result, TxnDecided):
        raise StorageError(f"unexpected apply result {result!r}")
    if result.first and not result.commit:
        metrics.TXN_ROLLED_BACK.labels(why.split(":")[0]).inc()
    elif result.first:
        metrics.TXN_COMMITTED.inc()
    return {"commit": result.commit, "reason": result.reason}


async def txn_decide(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    txn = _txn(params)
    topic = _str(params, "topic")
    assert topic is not None
    commit = _commit_flag(params)
    replica = node.master_replica(topic, params.get("queue"))
    return await _decide(replica, txn, commit, "producer")


async def txn_settle(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    txn = _txn(params)
    group = validate.integer(params.get("group"), "group", maximum=node.cluster.cluster.groups - 1)
    commit = _commit_flag(params)
    replica = node.replicas[group]
    if not replica.serving:
        raise NotMaster(hint=replica.master_address())
    book = replica.state.txns
    if txn not in book.open and book.decision(txn) is None:
        # Never prepared here, or decided and forgotten: a decision now might contradict it.
        raise BadArgument(f"group {group} is not the home of an open transaction {txn}")
    if commit and not await _all_prepared(node, replica, txn):
        raise BadArgument(f"transaction {txn}: not every part is prepared; only a rollback")
    return await _decide(replica, txn, commit, "operator")


def _book(node: StoreNode, group: int) -> TxnBook | None:
    replica = node.replicas.get(group)
    return None if replica is None else replica.state.txns


async def _all_prepared(node: StoreNode, home: GroupReplica[StoreState], txn: str) -> bool:
    """``all_prepared`` of ``txn`` at its home, asking the parts on other sets (an
    unreachable one counts as not prepared)."""
    book = home.state.txns
    remote: dict[tuple[int, int], list[int] | None] = {}
    for number, group in sorted(remote_groups(txn, book)):
        try:
            reply = await _remote(node).peek(number, group, txn)
            remote[(number, group)] = reply.get("parts")
        except PhxqError as exc:
            log.info("transaction %s: set %d group %d: %s", txn, number, group, exc)
            remote[(number, group)] = None
    return all_prepared(txn, book, lambda g: _book(node, g), remote)


def _remote(node: StoreNode) -> TxnRemote:
    return node._txn_sweeper.remote


async def _home_decision(
    node: StoreNode, txn: str, record: OpenTxn, *, wait: float = 0.0
) -> bool | None:
    """The decision of ``txn`` in its home group (``record``: its open record in some group
    of this store); ``wait``: seconds to wait for one."""
    if record.home_set is None:
        home = node.replicas[record.home]
        deadline = time.monotonic() + wait
        while True:
            decision = home.state.txns.decision(txn)
            remaining = deadline - time.monotonic()
            if decision is not None or remaining <= 0:
                return decision
            await home.wait_applied(min(remaining, 0.2))
    reply = await _remote(node).peek(record.home_set, record.home, txn, wait=wait)
    decision = reply.get("decision")
    return None if decision is None else bool(decision)


async def txn_resolve(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    txn = _txn(params)
    topic = _str(params, "topic")
    assert topic is not None
    replica = node.master_replica(topic, params.get("queue"))
    book = replica.state.txns
    record = book.open.get(txn)
    if record is None:
        return {"commit": book.finished(txn), "offsets": []}
    decision = await _home_decision(node, txn, record, wait=RESOLVE_WAIT)
    if decision is None:
        return {"commit": None, "offsets": []}
    offsets = await resolve(replica, txn, decision)
    return {"commit": decision, "offsets": offsets}


async def resolve(replica: GroupReplica[StoreState], txn: str, commit: bool) -> list[list[Any]]:
    """Apply ``txn``'s decision in this group (its master): release or discard its half
    messages; ``[topic, queue, offset]`` of each released by this call (per queue in the
    order they were enqueued)."""
    if not commit:
        result = await replica.propose_one(encode_discard(txn, time.time()))
        if isinstance(result, st.Rejected):
            raise result.error
        return []
    offsets: list[list[Any]] = []
    while True:
        state = replica.state
        pending = [(HELD, sid) for sid in state.txns.pending_ids(txn, state.schedule)]
        if not pending:
            return offsets
        by_queue = await _read_records(replica, pending)
        stamp = time.time()
        items = [
            encode_txn_release(txn, topic, queue, stamp, ids, dues, wire)
            for (topic, queue), (ids, dues, wire) in by_queue.items()
        ]
        results = await replica.propose(items)
        for (topic, queue), result in zip(by_queue, results, strict=True):
            if isinstance(result, st.Rejected):
                raise result.error
            offsets.extend([topic, queue, o] for o in result.offsets if o is not None)


async def txn_list(node: StoreNode, params: dict[str, Any]) -> list[dict[str, Any]]:
    now = time.time()
    rows = []
    # Homes on other store sets are asked, within LIST_WAIT in all (else shown undecided).
    deadline = time.monotonic() + LIST_WAIT
    for group, replica in node.replicas.items():
        if not replica.serving:
            continue
        state = replica.state
        for txn, record in sorted(state.txns.open.items()):
            try:
                remaining = max(0.0, deadline - time.monotonic())
                async with asyncio.timeout(remaining if record.home_set is not None else None):
                    decision = await _home_decision(node, txn, record)
            except (PhxqError, TimeoutError):  # the home's set did not answer: undecided
                decision = None
            rows.append(
                {
                    "txn": txn,
                    "set": node.set,
                    "group": group,
                    "home_set": node.set if record.home_set is None else record.home_set,
                    "home": record.home,
                    "producer_group": record.producer_group,
                    "age": max(0.0, now - record.prepared_at),
                    "timeout": record.timeout,
                    "half_messages": len(state.txns.pending_ids(txn, state.schedule)),
                    "decision": None
                    if decision is None
                    else ("commit" if decision else "rollback"),
                }
            )
    return rows


class TxnSweeper:
    """Applies readable decisions and decides overdue transactions (module docstring)."""

    def __init__(self, node: StoreNode) -> None:
        self._node = node
        self._busy: set[tuple[int, str]] = set()
        self._next_check: dict[str, tuple[float, float]] = {}  # txn -> (next check, backoff)
        self._work = TaskScope("transaction sweeper", log)
        self._next_peek: dict[tuple[int, str], float] = {}  # (group, txn) -> next remote look
        self._log = LogLimiter()
        self._check = CheckBack(node.cluster)
        self._open_reported = -1
        self.remote = TxnRemote(node)  # calls to other store sets (txn_remote)

    async def run(self) -> None:
        """Until cancelled (then the work in flight is cancelled too, before the check-back
        client closes)."""
        try:
            async with self._work:
                while True:
                    self._tick()
                    await asyncio.sleep(POLL)
        finally:
            await self._check.close()
            await self.remote.close()

    def _spawn(self, key: tuple[int, str], coro: Any) -> None:
        self._busy.add(key)
        self._work.spawn(self._guard(key, coro), name=f"transaction {key[1]} group {key[0]}")

    async def _guard(self, key: tuple[int, str], coro: Any) -> None:
        try:
            await coro
        except PhxqError as exc:  # NotMaster, Unavailable...: the next tick retries
            suppressed = self._log.allow()
            if suppressed is not None:
                log.warning(
                    "group %d: transaction %s: %s (%d more)", key[0], key[1], exc, suppressed
                )
        except Exception:  # a bug must not stop the other transactions; logged loudly
            log.exception("group %d: transaction %s failed", key[0], key[1])
        finally:
            self._busy.discard(key)

    def _tick(self) -> None:
        node = self._node
        now = time.time()
        total = 0
        for group, replica in node.replicas.items():
            if not replica.serving:
                continue
            total += len(replica.state.txns.open)
            for txn, record in list(replica.state.txns.open.items()):
                key = (group, txn)
                if key in self._busy:
                    continue
                if record.home_set is not None:  # the home is on another store set: ask it
                    # (Not at once: the producer's own commit usually resolves it first.)
                    if now >= self._next_peek.get(key, record.prepared_at + PEEK_EVERY):
                        self._next_peek[key] = now + PEEK_EVERY
                        self._spawn(key, self._remote_home(replica, txn, record))
                    continue
                decision = node.replicas[record.home].state.txns.decision(txn)
                if decision is not None:
                    self._spawn(key, resolve(replica, txn, decision))
                elif (
                    record.is_home(group)
                    and now >= record.prepared_at + record.timeout
                    and now >= self._next_check.get(txn, (0.0, 0.0))[0]
                ):
                    self._spawn(key, self._overdue(replica, txn, now))
        if total != self._open_reported:  # a gauge set only on change (five times a second)
            self._open_reported = total
            metrics.TXN_OPEN.set(total)
        if len(self._next_peek) > total:  # forget finished transactions' look times
            self._next_peek = {
                k: t
                for k, t in self._next_peek.items()
                if k[1] in node.replicas[k[0]].state.txns.open
            }

    async def _remote_home(
        self, replica: GroupReplica[StoreState], txn: str, record: OpenTxn
    ) -> None:
        """Apply ``txn``'s decision here once its home on another set has one."""
        decision = await _home_decision(self._node, txn, record)
        if decision is not None:
            await resolve(replica, txn, decision)

    async def _overdue(self, replica: GroupReplica[StoreState], txn: str, now: float) -> None:
        record = replica.state.txns.open.get(txn)
        if record is None:
            return
        age = now - record.prepared_at
        max_age = self._check.max_age(record.producer_group)
        if not self._check.has_handler(record.producer_group) or age >= max_age:
            why = "timeout" if age < max_age else "max_age"
            log.warning(
                "group %d: transaction %s undecided after %.1f s (producer group %s): "
                "rolled back (%s)",
                replica.group,
                txn,
                age,
                record.producer_group,
                why,
            )
            await _decide(replica, txn, False, why)
            self._next_check.pop(txn, None)
            return
        answer = await self._check.ask(record.producer_group, txn, record.prepared_at)
        metrics.TXN_CHECKS.labels(answer).inc()
        ready = answer == "committed" and await _all_prepared(self._node, replica, txn)
        if answer == "rolled_back":
            await _decide(replica, txn, False, "check")
        elif answer == "committed" and ready:
            await _decide(replica, txn, True, "check")
        else:
            if answer == "committed":
                log.warning("transaction %s: check says committed but a part is missing", txn)
            backoff = min(30.0, 2 * self._next_check.get(txn, (0.0, 0.5))[1])
            self._next_check[txn] = (time.time() + backoff, backoff)
            return
        self._next_check.pop(txn, None)


HANDLERS: Final[dict[str, Any]] = {
    "txn_prepare": txn_prepare,
    "txn_decide": txn_decide,
    "txn_resolve": txn_resolve,
    "txn_list": txn_list,
    "txn_settle": txn_settle,
    "txn_peek": txn_peek,
}

__all__ = [
    "HANDLERS",
    "TxnSweeper",
    "txn_decide",
    "txn_list",
    "txn_prepare",
    "txn_resolve",
    "txn_settle",
]
