"""The store's runtime for transactional messages (the protocol and pure parts:
:mod:`phxq.store.txn`, :mod:`phxq.store.txn_entries`).

RPC handlers (params are msgpack maps; every one validates before proposing anything):

============  ================================================================================
txn_prepare   ``{txn, home, timeout, producer_group?, topic, expect, batches: [[queue, part,
              [[payload, key, headers, dedup_id], ...]], ...]}`` (one group) -> per batch the
              number of half messages held; ``TransactionAborted`` if the transaction is
              already finished in this group (a prepare arriving after the decision)
txn_decide    ``{txn, topic, queue, commit}`` on the home group (the group of ``queue``) ->
              ``{commit, reason}``: the decision (the first one applied, maybe not this one)
txn_resolve   ``{txn, topic, queue}`` on a participant group -> ``{commit, offsets: [[topic,
              queue, offset], ...]}``: waits
              (briefly) for the home's decision in this node's replica of the home group, then
              releases or discards the transaction's half messages held there
txn_list      ``{}`` (admin) -> the open transactions of the groups this node masters
txn_settle    ``{txn, group, commit}`` (admin) -> ``{commit, reason}``: an operator's decision
              written in home group ``group`` (the first decision still wins)
============  ================================================================================

:class:`TxnSweeper` runs on every store: on each group it masters it applies every decision
that became readable (so a producer that crashed after deciding delays nothing beyond a tick),
and on each home group it decides the transactions undecided past their timeout: it asks the
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
from phxq.net.server import LogLimiter
from phxq.store import state as st
from phxq.store.scheduler import _read_records
from phxq.store.service import _check_messages, _str
from phxq.store.txn import TxnBook, TxnDecided, TxnPrepared, all_prepared
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
from phxq.tasks import TaskScope

if TYPE_CHECKING:
    from phxq.replication.replica import GroupReplica
    from phxq.store.node import StoreNode
    from phxq.store.state import StoreState

log = logging.getLogger("phxq.txn")

POLL: Final = 0.2  # seconds between the sweeper's looks at open transactions
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
    groups = node.cluster.cluster.groups
    home = validate.integer(params.get("home"), "home", maximum=groups - 1)
    timeout = validate.number(params.get("timeout"), "timeout", minimum=0.001, maximum=MAX_TIMEOUT)
    producer = params.get("producer_group")
    if producer is not None:
        producer = validate.name(producer, "producer_group", max_chars=256)
    expect = params.get("expect") or []
    if not isinstance(expect, list) or not all(
        isinstance(e, list) and len(e) == 2 and all(type(x) is int and x >= 0 for x in e)
        for e in expect
    ):
        raise BadArgument("expect must be a list of [group, part]")
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
            encode_prepare(txn, home, part, timeout, producer, topic, queue, now, raw, expect)
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
    if commit and not all_prepared(txn, replica.state.txns, lambda g: _book(node, g)):
        raise BadArgument(f"transaction {txn}: not every part is prepared; only a rollback")
    return await _decide(replica, txn, commit, "operator")


def _book(node: StoreNode, group: int) -> TxnBook | None:
    replica = node.replicas.get(group)
    return None if replica is None else replica.state.txns


async def txn_resolve(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    txn = _txn(params)
    topic = _str(params, "topic")
    assert topic is not None
    replica = node.master_replica(topic, params.get("queue"))
    deadline = time.monotonic() + RESOLVE_WAIT
    while True:
        book = replica.state.txns
        record = book.open.get(txn)
        if record is None:
            return {"commit": book.finished(txn), "offsets": []}
        home = node.replicas[record.home]
        decision = home.state.txns.decision(txn)
        if decision is not None:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"commit": None, "offsets": []}
        await home.wait_applied(min(remaining, 0.2))
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
    for group, replica in node.replicas.items():
        if not replica.serving:
            continue
        state = replica.state
        for txn, record in sorted(state.txns.open.items()):
            decision = node.replicas[record.home].state.txns.decision(txn)
            rows.append(
                {
                    "txn": txn,
                    "group": group,
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
        self._log = LogLimiter()
        self._check = CheckBack(node.cluster)
        self._open_reported = -1

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
                decision = node.replicas[record.home].state.txns.decision(txn)
                if decision is not None:
                    self._spawn(key, resolve(replica, txn, decision))
                elif (
                    record.home == group
                    and now >= record.prepared_at + record.timeout
                    and now >= self._next_check.get(txn, (0.0, 0.0))[0]
                ):
                    self._spawn(key, self._overdue(replica, txn, now))
        if total != self._open_reported:  # a gauge set only on change (five times a second)
            self._open_reported = total
            metrics.TXN_OPEN.set(total)

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
        ready = all_prepared(txn, replica.state.txns, lambda g: _book(self._node, g))
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
