"""The store's RPC handlers: validate a request, turn it into log entries or index reads.

Every handler validates its params before touching anything: a bad request fails with a typed
``ClientError`` and nothing is proposed. Results of proposals come from the state machine's
apply (dedup and fencing are decided there, identically on every replica).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from phxq import metrics, otel, trace, validate
from phxq.errors import BadArgument, MessageTooLarge, QueueMoved, StorageError
from phxq.net.frames import shown
from phxq.paxos import decode_batch
from phxq.routing import group_for_queue, make_offset, split_offset
from phxq.store import scheduler
from phxq.store import state as st
from phxq.store.entries import (
    CommitEntry,
    Message,
    ReplayEntry,
    encode_enqueue,
    encode_entry,
    instance_messages,
)
from phxq.store.schedule import SCHEDULED_FLAG
from phxq.store.schedule_entries import encode_schedule

if TYPE_CHECKING:
    from phxq.store.node import StoreNode

MAX_DEQUEUE = 10_000
MAX_WAIT = 60.0  # seconds a dequeue may long-poll
MAX_HEADERS = 64
MAX_NAME_CHARS = 256  # topic and consumer group names (they are stored in cursors)


def _str(params: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = params.get(name)
    if type(value) is str and 0 < len(value) <= MAX_NAME_CHARS:  # (one test when valid)
        return value
    if value is None and optional:
        return None
    return validate.name(value, name, max_chars=MAX_NAME_CHARS)


def _int(
    params: dict[str, Any], name: str, *, optional: bool = False, minimum: int = 0
) -> int | None:
    value = params.get(name)
    if value is None and optional:
        return None
    return validate.integer(value, name, minimum=minimum)


def _queue(params: dict[str, Any]) -> int:
    """The ``queue`` param (its range is the topic's: ``StoreNode.replica_for`` checks it)."""
    return validate.integer(params.get("queue"), "queue")


def _message(raw: Any, max_bytes: int) -> Message:
    if not isinstance(raw, list) or len(raw) != 4:
        raise BadArgument("each message must be [payload, key, headers, dedup_id]")
    payload, key, headers, dedup_id = raw
    if not isinstance(payload, bytes):
        raise BadArgument("payload must be bytes")
    if len(payload) > max_bytes:
        raise MessageTooLarge(
            f"payload of {len(payload)} bytes exceeds max_message_bytes={max_bytes}"
        )
    if key is not None and not isinstance(key, str):
        raise BadArgument("key must be a string or nil")
    if dedup_id is not None and (not isinstance(dedup_id, str) or len(dedup_id) > 256):
        raise BadArgument("dedup_id must be a string of at most 256 characters or nil")
    if (
        not isinstance(headers, dict)
        or len(headers) > MAX_HEADERS
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise BadArgument(f"headers must be a map of at most {MAX_HEADERS} string pairs")
    return Message(payload=payload, key=key, headers=headers, dedup_id=dedup_id)


def _check_messages(raw_messages: list[Any], max_bytes: int) -> None:
    """Validate ``[payload, key, headers, dedup_id]`` messages as :func:`_message` does; the
    well-formed case is checked inline (it runs for every message the store accepts)."""
    for m in raw_messages:
        if type(m) is list and len(m) == 4:
            payload, key, headers, dedup_id = m
            if (
                type(payload) is bytes
                and len(payload) <= max_bytes
                and (key is None or type(key) is str)
                and (dedup_id is None or (type(dedup_id) is str and len(dedup_id) <= 256))
                and type(headers) is dict
                and (
                    not headers
                    or (
                        len(headers) <= MAX_HEADERS
                        and all(type(k) is str and type(v) is str for k, v in headers.items())
                    )
                )
            ):
                continue
        _message(m, max_bytes)  # raises the precise error


async def enqueue(node: StoreNode, params: dict[str, Any]) -> list[list[list[Any]]]:
    topic = _str(params, "topic")
    assert topic is not None
    spec = node.topology.topics.get(topic)
    batches = params.get("batches")
    if not isinstance(batches, list) or not batches:
        raise BadArgument("batches must be a non-empty list of [queue, messages]")
    replica = None
    entries: list[bytes] = []
    layout: list[tuple[int, bool, list[int]]] = []  # per batch: messages, any plain, scheduled
    now = time.time()
    for batch in batches:
        if not isinstance(batch, list) or len(batch) != 2 or not isinstance(batch[1], list):
            raise BadArgument("each batch must be [queue, [message, ...]]")
        queue, raw_messages = batch
        r = node.replica_for(topic, queue)
        moved = r.state.moves.sealed and r.state.moves.blocked((topic, queue))
        if moved:
            raise moved  # sealed here by a queue move: the client follows to the new set
        if replica is not None and r is not replica:
            raise BadArgument("all queues of one enqueue request must be in the same group")
        replica = r
        assert spec is not None
        if not raw_messages:
            raise BadArgument("a batch must hold at least one message")
        plain, scheduled, dues, positions = scheduler.split_scheduled(now, raw_messages)
        _check_messages(plain, spec.max_message_bytes)
        _check_messages(scheduled, spec.max_message_bytes)
        layout.append((len(raw_messages), bool(plain), positions))
        if plain:
            entries.append(encode_enqueue(topic, queue, now, plain))
        if scheduled:
            entries.append(encode_schedule(topic, queue, now, dues, scheduled))
    assert replica is not None
    replica = node.master_replica(topic, batches[0][0])
    started = time.perf_counter()
    # Proposed together, the entries share one instance (while they fit max_batch_*) instead of
    # each taking a free slot of the window, and one future (no task, no gather) has them all.
    if trace.ON:
        trace.mark("enqueue.propose")
    if otel.enabled():
        spans = otel.store_spans(topic, node.node_id, (m for b in batches for m in b[1]))
        try:
            results = await replica.propose(entries)
        except BaseException as exc:
            otel.end_spans(spans, exc)
            raise
        otel.end_spans(spans)
    else:
        results = await replica.propose(entries)
    if trace.ON:
        trace.mark("enqueue.applied")
    metrics.ENQUEUE_LATENCY.observe(time.perf_counter() - started)
    out: list[list[list[Any]]] = []
    acked = 0
    at = 0
    for count, has_plain, positions in layout:
        answers: list[list[Any]] = []
        if has_plain:
            done = _enqueued(results[at])
            at += 1
            acked += len(done.offsets) - sum(done.duplicates)
            pairs = zip(done.offsets, done.duplicates, strict=True)
            if max(done.offsets) < SCHEDULED_FLAG:  # no duplicate of a scheduled message
                answers = [[o, d] for o, d in pairs]
            else:
                answers = [scheduler.answer(o, d) for o, d in pairs]
        if positions:
            later = scheduler.scheduled_results(results[at])
            at += 1
            answers = scheduler.merge_results(count, answers, later, positions)
        out.append(answers)
    _enqueued_counter(topic).inc(acked)
    return out


@functools.lru_cache(maxsize=4096)
def _enqueued_counter(topic: str) -> Any:
    """The topic's child of ``metrics.ENQUEUED`` (``labels()`` costs a lock and a lookup)."""
    return metrics.ENQUEUED.labels(topic)


def _enqueued(result: Any) -> st.Enqueued:
    if isinstance(result, st.Rejected):
        raise result.error
    if not isinstance(result, st.Enqueued):
        raise StorageError(f"unexpected apply result {result!r}")
    return result


async def dequeue(node: StoreNode, params: dict[str, Any]) -> list[list[Any]]:
    group = _str(params, "group", optional=True)
    topic = _str(params, "topic")
    queue = _queue(params)
    after = _int(params, "after", optional=True)
    limit = _int(params, "limit", minimum=1)
    wait = validate.number(
        params.get("wait", 0) or 0, "wait", minimum=0, maximum=MAX_WAIT, unit="seconds"
    )
    assert topic is not None and limit is not None
    # `local` reads this replica's applied prefix whatever its role (tools and tests comparing
    # replicas); ordinary reads go to the master, whose applied state is current.
    replica = (
        node.replica_for(topic, queue) if params.get("local") else node.master_replica(topic, queue)
    )
    assert isinstance(queue, int)  # replica_for checked it
    if after is None and group is not None:
        after = replica.state.cursor(group, topic, queue)
    key = (topic, queue)
    moves = replica.state.moves
    moved = key in moves.tenures  # offsets <-> log positions through its tenures
    if moved:
        start, last, tenure = moves.read_window(key, after)
    else:
        start, last, tenure = (None if after is None else split_offset(after)), None, None
    positions = _within(replica.glog.positions(key, start, min(limit, MAX_DEQUEUE)), last)
    if not positions and tenure is not None and tenure.sealed is not None:
        # Read up to the seal: the rest of the queue is on the set it moved to.
        raise QueueMoved(
            f"queue {queue} of topic {topic!r} moved to store set {tenure.target} after "
            f"offset {tenure.sealed}",
            {"set": tenure.target, "sealed": tenure.sealed, "move": tenure.sealed_by},
        )
    deadline = time.monotonic() + float(wait)
    while not positions and (remaining := deadline - time.monotonic()) > 0:
        # Long poll: sleep until this replica applies another instance (or the wait ends).
        await replica.wait_applied(remaining)
        if not params.get("local"):
            replica = node.master_replica(topic, queue)  # NotMaster if it stepped down meanwhile
        positions = _within(replica.glog.positions(key, start, min(limit, MAX_DEQUEUE)), last)
    rows: list[list[Any]] = []
    cache: dict[int, list[tuple[float, Message]]] = {}
    for instance, index in positions:
        flat = cache.get(instance)
        if flat is None:
            flat = _flatten(await replica.glog.read_value(instance))
            cache[instance] = flat
        if index >= len(flat):
            raise StorageError(f"index points past instance {instance} ({index} >= {len(flat)})")
        enqueued_at, msg = flat[index]
        offset = moves.offset(key, instance, index) if moved else make_offset(instance, index)
        rows.append([offset, msg.payload, msg.key, msg.headers, enqueued_at])
    return rows


def _within(positions: list[tuple[int, int]], last: int | None) -> list[tuple[int, int]]:
    """``positions`` up to instance ``last`` (a sealed tenure's end; None: all)."""
    if last is None or not positions or positions[-1][0] <= last:
        return positions
    return [p for p in positions if p[0] <= last]


def _flatten(value: bytes) -> list[tuple[float, Message]]:
    """Every message of a chosen instance, in index order (the state machine's definition)."""
    return [(entry.enqueued_at, m) for entry, m in instance_messages(decode_batch(value))]


async def commit(node: StoreNode, params: dict[str, Any]) -> int:
    group = _str(params, "group")
    topic = _str(params, "topic")
    queue = _queue(params)
    offset = _int(params, "offset")
    token = _int(params, "token")
    assert group is not None and topic is not None and offset is not None and token is not None
    check = "expect" in params  # present (even as nil): compare-and-set on the cursor
    expect = _int(params, "expect", optional=True) if check else None
    replica = node.master_replica(topic, queue)
    assert isinstance(queue, int)  # replica_for checked it
    sealed = replica.state.moves.sealed.get((topic, queue))
    if sealed is not None and sealed.sealed is not None and offset > sealed.sealed:
        # An offset of the set this queue moved to: commit it there (the client follows).
        raise replica.state.moves.blocked((topic, queue)) or StorageError("no seal")
    entry = CommitEntry(group, topic, queue, offset, token, check=check, expect=expect)
    result = await replica.propose_one(encode_entry(entry))
    if isinstance(result, st.Rejected):
        raise result.error
    return offset


async def cursor(node: StoreNode, params: dict[str, Any]) -> int | None:
    group = _str(params, "group")
    topic = _str(params, "topic")
    queue = _queue(params)
    assert group is not None and topic is not None
    replica = node.master_replica(topic, queue)
    assert isinstance(queue, int)  # replica_for checked it
    return replica.state.cursor(group, topic, queue)


async def seek(node: StoreNode, params: dict[str, Any]) -> int:
    group = _str(params, "group")
    topic = _str(params, "topic")
    queue = _queue(params)
    offset = _int(params, "offset", optional=True)
    when = params.get("time")
    assert group is not None and topic is not None
    replica = node.master_replica(topic, queue)
    assert isinstance(queue, int)  # replica_for checked it
    if (offset is None) == (when is None):
        raise BadArgument("seek takes exactly one of offset or time")
    if offset is None:
        seconds = validate.number(when, "time", unit="seconds since the epoch")
        instance = replica.glog.instance_at_time(seconds)
        target = replica.paxos.chosen_up_to + 1 if instance is None else instance
        offset = replica.state.moves.offset((topic, queue), target, 0)
    # The cursor is "last processed": to deliver `offset` next, set it just below.
    new_cursor = max(offset - 1, 0)
    entry = ReplayEntry(group, topic, queue, new_cursor, uuid.uuid4().hex)
    result = await replica.propose_one(encode_entry(entry))
    if isinstance(result, st.Rejected):
        raise result.error
    return new_cursor


async def meta(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    # The lock nodes too: Client.consume finds the lock service through any store.
    return {**node.meta(), "locks": [lk.addr for lk in node.cluster.locks]}


async def status(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    groups = []
    for g, r in node.replicas.items():
        p = r.paxos
        groups.append(
            {
                "group": g,
                "master": p.master,
                "is_master": p.is_master,
                "ballot": [p.ballot.round, p.ballot.node],
                "chosen_up_to": p.chosen_up_to,
                "known_chosen": p.known_chosen,
                "checksum": p.checksum,
                "first_instance": r.glog.first_instance,
                "disk_bytes": r.glog.disk_bytes(),
                "failed": None if r.failed is None else r.failed.message,
                "diverged": None if r.diverged is None else r.diverged.instance,
                "needs_repair": r.glog.needs_repair,
                "repair": r.repair,  # probing / joining / repairing / diverged (not voting)
                "repair_reason": r.repair_reason,
                "scheduled": scheduler.status_of(r, time.time()),
                "transactions": _txn_status(r, time.time()),
            }
        )
    return {
        "node": node.node_id,
        "set": node.set,
        "map_version": node.topology.version,
        "membership": node.paxos_host.status.value,
        "address": node.address,
        "started_at": node.started_at,
        "cert": None if node.security is None else node.security.cert_status(),
        "groups": groups,
        "consumers": _consumer_lag(node),
        "moves": [_move_row(m, node.moves_waiting()) for m in node.topology.moves.values()],
    }


def _move_row(move: Any, waiting: dict[str, str]) -> dict[str, Any]:
    """A move of the map, with why it is not done yet when this store drives it."""
    row: dict[str, Any] = move.to_wire()
    if move.id in waiting:
        row["waiting"] = waiting[move.id]
    return row


def _txn_status(replica: Any, now: float) -> dict[str, Any]:
    """Open transactions of a group: count and the oldest one's age (seconds)."""
    book = replica.state.txns
    oldest = min((r.prepared_at for r in book.open.values()), default=None)
    return {"open": len(book.open), "oldest_age": 0.0 if oldest is None else now - oldest}


LAG_COUNT_LIMIT = 1_000_000  # lag is counted exactly up to this many messages per queue


def _consumer_lag(node: StoreNode) -> list[dict[str, Any]]:
    """Cursor and lag (messages after the cursor) of every configured consumer group on every
    queue whose group this node masters (its applied state is current there)."""
    rows: list[dict[str, Any]] = []
    groups = node.cluster.cluster.groups
    for cg in node.consumer_groups:
        for q in node.local_queues(cg.topic):
            replica = node.replicas[group_for_queue(q, groups)]
            if not replica.serving:
                continue
            cursor = replica.state.cursor(cg.name, cg.topic, q)
            after = replica.state.moves.position_after((cg.topic, q), cursor)
            lag = len(replica.glog.positions((cg.topic, q), after, LAG_COUNT_LIMIT))
            rows.append(
                {
                    "group": cg.name,
                    "topic": cg.topic,
                    "queue": q,
                    "cursor": cursor,
                    "end": replica.state.end_offset(cg.topic, q),
                    "lag": lag,
                }
            )
    return rows


def _time(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    return validate.number(value, name, unit="seconds since the epoch")


RECONCILE_LIMIT = 10_000_000  # messages of one queue counted per window


async def reconcile(node: StoreNode, params: dict[str, Any]) -> dict[str, Any]:
    """This replica's own view of one queue in a time window (any node answers; the admin
    tool compares the replicas): messages stored, and how many of them each consumer group's
    cursor has passed; plus the group's chosen prefix and chain checksum. The window is
    resolved at instance granularity through the time index (first enqueue time per instance).
    """
    topic = _str(params, "topic")
    queue = _queue(params)
    since, until = _time(params, "since"), _time(params, "until")
    groups = params.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise BadArgument(f"groups must be a list of consumer group names, got {shown(groups)}")
    assert topic is not None
    replica = node.replica_for(topic, queue)
    assert isinstance(queue, int)  # replica_for checked it
    glog = replica.glog
    top = glog.chosen_up_to + 1
    lo = glog.first_instance if since is None else (glog.instance_at_time(since) or top)
    hi = top if until is None else (glog.instance_at_time(until) or top)
    after = (lo - 1, (1 << 20) - 1) if lo > 1 else None
    inside = [p for p in glog.positions((topic, queue), after, RECONCILE_LIMIT) if p[0] < hi]
    consumers = {}
    for cg in groups:
        cursor = replica.state.cursor(cg, topic, queue)
        cut = None if cursor is None else split_offset(cursor)
        consumed = 0 if cut is None else sum(1 for p in inside if p <= cut)
        consumers[cg] = {"cursor": cursor, "consumed": consumed}
    return {
        "node": node.node_id,
        "group": replica.group,
        "chosen_up_to": glog.chosen_up_to,
        "first_instance": glog.first_instance,
        "window": [lo, hi],
        "truncated": since is not None and lo <= glog.first_instance and glog.first_instance > 1,
        "enqueued": len(inside),
        "consumers": consumers,
        "failed": None if replica.failed is None else replica.failed.message,
    }


async def checksum(node: StoreNode, params: dict[str, Any]) -> int | None:
    """The chain checksum of ``group`` at ``instance`` on this replica (None if not held)."""
    group = _int(params, "group")
    instance = _int(params, "instance", minimum=1)
    assert group is not None and instance is not None
    replica = node.replicas.get(group)
    if replica is None:
        raise BadArgument(f"no group {group}")
    glog = replica.glog
    if instance == glog.chosen_up_to:
        return glog.checksum
    if not glog.first_instance <= instance < glog.chosen_up_to:
        return None
    records = await glog.read_chosen(instance, 1, 1 << 30)
    return records[0].checksum if records else None


HANDLERS: dict[str, Callable[[StoreNode, dict[str, Any]], Awaitable[Any]]] = {
    "meta": meta,
    "enqueue": enqueue,
    "dequeue": dequeue,
    "commit": commit,
    "cursor": cursor,
    "seek": seek,
    "status": status,
    "reconcile": reconcile,
    "checksum": checksum,
    "cancel_scheduled": scheduler.cancel_scheduled,
}

# Last: the transaction handlers build on this module's validators (phxq.store.txn_service).
from phxq.store import move_service as _move_service  # noqa: E402
from phxq.store import txn_service as _txn_service  # noqa: E402

HANDLERS.update(_txn_service.HANDLERS)
HANDLERS.update(_move_service.HANDLERS)
