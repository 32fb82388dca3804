"""The producer/reader client: ``phxq.Client`` (async) and ``phxq.SyncClient``.

What it promises (DESIGN.md §5, §10):

- **Routing.** On first use it fetches the cluster map (``meta`` RPC: groups, stores and their
  store sets, topics, the set of each queue, masters) from any reachable store, maps ``key ->
  queue -> (set, group) -> master`` and sends each request straight to the group's master.
  ``NotMaster(hint)`` updates the master cache and the request is re-sent at once; ``StaleMap``
  refetches the map; ``Unavailable`` is retried with exponential backoff until
  ``retry_timeout`` runs out (:mod:`phxq.client.routing`).
- **Retries never duplicate.** Every message gets a dedup id (the caller's, or a unique one:
  96 random bits per client plus a counter), and a retry re-sends the same ids, so the store
  answers a retried enqueue with the original offset and stores it once.
- **Adaptive batching.** Up to ``window`` (default 2) requests per (topic, group) are in
  flight at once; a request beside one already in flight leaves only once
  ``EXTRA_REQUEST_MIN_MESSAGES`` (8) are queued, since each request becomes its own Paxos
  instance. Further ``enqueue`` calls for the group queue up and leave together in the next
  request: at low load each message goes at once, at high load batches grow by themselves. No
  linger timer. With ``batching=False`` every message
  leaves at once in a request of its own (a benchmark baseline).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from types import EllipsisType
from typing import Any, final

from phxq import otel, validate
from phxq.budget import Budget, check_timeout
from phxq.client.batching import DEFAULT_WINDOW, BatchingMixin, Calls, GroupSender, Pending
from phxq.client.moves import MovesMixin
from phxq.client.routing import MAP_RECHECK, RoutingMixin
from phxq.client.schedule import (  # re-exported with parse_when: callers import them here
    MAX_SCHEDULE_SECONDS as MAX_SCHEDULE_SECONDS,
)
from phxq.client.schedule import _parse_scheduled_id, _when
from phxq.client.schedule import parse_when as parse_when
from phxq.client.stream import StreamRegistry
from phxq.client.streaming import StreamingMixin
from phxq.client.sweep import InFlight, Sweep
from phxq.client.txn import DEFAULT_TIMEOUT as DEFAULT_TXN_TIMEOUT
from phxq.client.txn import Transaction
from phxq.client.types import Ack, ClusterMap, Message, Route
from phxq.errors import BadArgument, Unavailable
from phxq.net.rpc import RpcPool
from phxq.net.transport import client_transport
from phxq.routing import queue_for_key
from phxq.tasks import TaskScope

log = logging.getLogger("phxq.client")

# An enqueue as the client queues it: (payload, key, queue, dedup_id, headers, when), ``when``
# the wire form of delay= / deliver_at= or None.
Item = tuple[Any, str | None, int | None, str | None, Mapping[str, str] | None, list[Any] | None]


@final
class Client(RoutingMixin, MovesMixin, BatchingMixin, StreamingMixin):
    """Async phxq client. Use as ``async with phxq.Client(addrs) as client:``; against a
    secured cluster ``phxq.Client(addrs, token=..., ca="certs/ca.pem")``.

    Parameters (all but ``addresses`` keyword-only):

    - ``addresses``: some store addresses (``"host:port"``); the rest come from the cluster map;
    - ``request_timeout``: seconds one request may take (default 2);
    - ``retry_timeout``: seconds a call keeps retrying ``Unavailable`` / ``NotMaster`` before
      it raises ``Unavailable`` (default 15; retries never duplicate, see the module docstring);
    - ``batching`` / ``window``: adaptive enqueue batching, and requests in flight per
      (topic, Paxos group) (default on, 2);
    - ``token`` / ``ca``: a principal's bearer token and the cluster CA (file or SSL context):
      either means TLS (``phxq.security``);
    - ``locks``: lock node addresses for :meth:`consume` (default: from the cluster map).

    Raises ``BadArgument`` for no address or a bad ``window``. Every call that talks to the
    cluster takes ``timeout=`` (seconds, ``float | None``; default ``retry_timeout``) and raises
    ``Unavailable`` no later than that: when no store answered, or the queue's group has no
    master -- the message says which stores answered and which did not, and "no majority" when
    fewer than a majority of the group's stores answered at all (a retry with the same
    ``dedup_id`` is safe). Every call may also raise ``Unauthenticated`` / ``Forbidden`` on a secured cluster, and the
    ``ClientError`` subclasses for a bad request (``UnknownTopic``, ``BadArgument``,
    ``MessageTooLarge``)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        request_timeout: float = 2.0,
        retry_timeout: float = 15.0,
        batching: bool = True,
        window: int = DEFAULT_WINDOW,
        token: str | None = None,
        ca: str | os.PathLike[str] | ssl.SSLContext | None = None,
        locks: Sequence[str] | None = None,
    ) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        if not addresses:
            raise BadArgument("Client needs at least one store address")
        self._seeds = list(addresses)
        # token: the bearer token of a principal; ca: the cluster CA file, or a ready context
        # (a member's, with its certificate). Either one means TLS (see phxq.security).
        self._pool = RpcPool(transport_factory=client_transport(token, ca))
        self._credentials = (token, ca)  # for the lock client consume() opens
        self._lock_seeds = None if locks is None else list(locks)
        self._request_timeout = request_timeout
        self._retry_timeout = retry_timeout
        self._batching = batching
        self._window = validate.integer(window, "window", minimum=1, maximum=None)
        self._map: ClusterMap | None = None
        self._map_lock = asyncio.Lock()
        self._miss_refreshed = -MAP_RECHECK  # last refetch for an unknown topic or queue
        self._senders: dict[tuple[str, Route], GroupSender] = {}
        # Default dedup ids: 96 random bits per client, then a counter (as unique as uuid4 ids,
        # without a getrandom system call and a UUID object per message).
        self._dedup_prefix = os.urandom(12).hex() + "-"
        self._dedup_seq = itertools.count()
        self._tasks = TaskScope("phxq.Client", log)  # the batch senders
        self._closed = False
        self._expiry: Sweep[Pending] = Sweep(self._time_out)  # enqueue deadlines
        self._inflight = InFlight(self._hedge)  # requests in flight, for the failover watch
        self._streams = StreamRegistry()  # open tail / consume iterators

    async def __aenter__(self) -> Client:
        await self.cluster_map()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close open streams, cancel requests in flight (their callers get ``Unavailable``
        or ``CancelledError``) and close the connections. Idempotent."""
        await self._streams.aclose()
        self._closed = True  # no enqueue is queued from here on
        await self._tasks.aclose()
        for sender in self._senders.values():  # queued, never sent: they must not wait forever
            for p in sender.pending:
                if not p.future.done():
                    p.future.set_exception(Unavailable("the client was closed"))
            sender.pending.clear()
        self._expiry.close()
        self._inflight.close()
        await self._pool.close()

    # --------------------------------------------------------------------------- enqueue

    async def enqueue(
        self,
        topic: str,
        payload: bytes,
        *,
        key: str | None = None,
        queue: int | None = None,
        dedup_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        deliver_at: float | None = None,
        timeout: float | None = None,
    ) -> Ack:
        """Enqueue one message; returns once it is chosen (durable on a majority).

        With ``delay`` (seconds from now, by the group master's clock) or ``deliver_at`` (a
        UNIX time; in the past: at once), up to ``MAX_SCHEDULE_SECONDS`` (366 days) ahead, the
        message stays invisible to every reader until then; it is then released into its
        queue and gets its offset. The ack carries a ``scheduled_id`` instead of an offset.
        ``BadArgument`` for both, or a negative, non-finite or too distant time.
        ``timeout``: ``Unavailable`` after that many seconds (default ``retry_timeout``); the
        message may still be stored then: retry with the same ``dedup_id``."""
        when = None if delay is None and deliver_at is None else _when(delay, deliver_at)
        # (check_timeout answers a positive number of seconds for anything but None)
        seconds = self._retry_timeout if timeout is None else check_timeout(timeout) or 0.0
        item = (payload, key, queue, dedup_id, headers, when)
        cmap = self._map
        queues = cmap.topics.get(topic) if cmap is not None and type(topic) is str else None
        if (
            cmap is None
            or queues is None
            or (type(queue) is int and queue >= queues)
            or otel.enabled()
        ):
            return await self._enqueue_later(topic, item, seconds)
        # The common case: the message is queued at once and its future awaited (the expiry
        # sweep fails it at the deadline); no span, no context manager, no other coroutine.
        deadline = time.monotonic() + seconds
        return await self._queue_items(cmap, topic, [item], seconds, deadline, seconds)[0].future

    async def _enqueue_later(self, topic: str, item: Item, seconds: float) -> Ack:
        """An enqueue off the common path: the map must be fetched or refreshed first (the
        general bound around that), or a span is traced around it (phxq[otel])."""
        with otel.send_span(topic, item[4]) as headers:  # a traceparent with phxq[otel]
            item = (*item[:4], headers, item[5])
            budget = Budget(seconds, time.monotonic() + seconds)
            async with self._bounded(budget, topic, item[2]):
                future = (await self._submit(topic, [item], budget))[0].future
            return await future

    def transaction(
        self, producer_group: str | None = None, *, timeout: float = DEFAULT_TXN_TIMEOUT
    ) -> Transaction:
        """A transaction over any topics, queues and groups (:mod:`phxq.client.txn`):
        ``async with client.transaction() as txn: await txn.enqueue(...)`` commits on exit and
        rolls back on an exception; or ``prepare()``, then ``commit()`` / ``rollback()``.
        ``timeout``: seconds the store waits for the decision before asking the producer
        group's check-back handler (or, without one, rolling back)."""
        return Transaction(self, producer_group=producer_group, timeout=timeout)

    async def cancel_scheduled(self, scheduled_id: str, *, timeout: float | None = None) -> bool:
        """Cancel a delayed or scheduled message (``Ack.scheduled_id``) so it is never
        released. True if it was pending; False if it was already released or cancelled."""
        topic, queue, sid = _parse_scheduled_id(scheduled_id)
        budget = self._within(timeout)
        async with self._bounded(budget, topic, queue):
            cmap = await self._map_within(budget)
            cmap = await self._known(cmap, topic, queue)
            q = self._queue_of(cmap, topic, None, queue)
            params = {"topic": topic, "queue": q, "id": sid}
            done = await self._call_master(topic, q, "cancel_scheduled", params, budget=budget)
            return bool(done)

    async def enqueue_many(
        self,
        topic: str,
        messages: Iterable[tuple[bytes, str | None] | tuple[bytes, str | None, str | None]],
        *,
        queue: int | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        deliver_at: float | None = None,
        timeout: float | None = None,
    ) -> list[Ack]:
        """Enqueue ``(payload, key)`` or ``(payload, key, dedup_id)`` tuples; one ack each, in
        order. ``queue``, ``headers``, ``delay``, ``deliver_at`` and ``timeout`` apply to every
        message, as in :meth:`enqueue`. ``BadArgument`` for a malformed tuple or argument."""
        when = None if delay is None and deliver_at is None else _when(delay, deliver_at)
        budget = self._within(timeout)
        messages = list(messages)
        with otel.send_span(topic, headers, len(messages)) as headers:
            items: list[Item] = []
            for m in messages:
                if not isinstance(m, tuple) or len(m) not in (2, 3):
                    raise BadArgument(
                        "enqueue_many takes (payload, key) or (payload, key, dedup_id) tuples"
                    )
                items.append((m[0], m[1], queue, m[2] if len(m) == 3 else None, headers, when))
            async with self._bounded(budget, topic, queue):
                queued = await self._submit(topic, items, budget)
            if len(queued) == 1:  # bounded by the expiry sweep
                return [await queued[0].future]
            return await self._acked(queued, budget.remaining())

    async def _acked(self, queued: list[Pending], delay: float) -> list[Ack]:
        """The acks of one call's messages, in order. One timer for the call fails those
        still unacked in ``delay`` seconds (each error says what the stores answered); it is
        cancelled, dropping its references, once every message has its outcome."""
        calls = Calls(queued)
        timer = asyncio.get_running_loop().call_later(delay, self._time_out, calls, delay)
        try:
            return list(await asyncio.gather(*(p.future for p in queued)))
        finally:
            if calls.done():
                timer.cancel()

    async def _submit(self, topic: str, items: list[Item], budget: Budget) -> list[Pending]:
        """Fetch the map if needed, then queue ``items`` (:meth:`_queue_items`) within
        ``budget``: each message's call gives up at the budget's deadline."""
        if not isinstance(topic, str):
            raise BadArgument("topic must be a str")
        if self._closed:
            raise BadArgument("the client is closed")
        cmap = self._map if self._map is not None else await self._map_within(budget)
        queues = cmap.topics.get(topic)
        if queues is None or any(type(it[2]) is int and it[2] >= queues for it in items):
            explicit = [it[2] for it in items if type(it[2]) is int]
            cmap = await self._known(cmap, topic, max(explicit) if explicit else None)
        delay = budget.remaining()
        return self._queue_items(cmap, topic, items, budget.seconds, budget.deadline, delay)

    def _queue_items(
        self,
        cmap: ClusterMap,
        topic: str,
        items: list[Item],
        seconds: float,
        deadline: float,
        delay: float,
    ) -> list[Pending]:
        """Check ``items`` and queue them on their groups' senders (``_submit`` without the
        map fetch); one :class:`Pending` each, in order. A single message is failed with
        ``Unavailable`` by the expiry sweep if still unacked in ``delay`` seconds (at
        ``deadline``, ``time.monotonic()``, of a call of ``seconds``); several are the
        caller's to bound (:meth:`_acked`: one timer per call)."""
        if self._closed:
            raise BadArgument("the client is closed")
        loop = asyncio.get_running_loop()
        touched: set[tuple[str, Route]] = set()
        senders = self._senders
        queues = cmap.topics.get(topic)
        queued: list[Pending] = []
        try:
            for payload, key, queue, dedup_id, headers, when in items:
                if type(payload) is not bytes and not isinstance(payload, (bytearray, memoryview)):
                    raise BadArgument("payload must be bytes")
                if key is not None and not isinstance(key, str):
                    raise BadArgument("key must be a str or None")
                if dedup_id is not None and not isinstance(dedup_id, str):
                    raise BadArgument("dedup_id must be a str or None")
                if headers is not None and not (
                    isinstance(headers, Mapping)
                    and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
                ):
                    raise BadArgument("headers must be a dict of str to str")
                if queue is None and type(key) is str and queues is not None:
                    q = queue_for_key(key, queues)  # (the common case of _queue_of)
                else:
                    q = self._queue_of(cmap, topic, key, queue)
                route = cmap.route(topic, q)
                fut: asyncio.Future[Ack] = loop.create_future()
                if dedup_id is None:
                    dedup_id = f"{self._dedup_prefix}{next(self._dedup_seq):x}"
                wire: list[Any] = [bytes(payload), key, dict(headers) if headers else {}, dedup_id]
                if when is not None:
                    wire.append(when)
                sender = senders.get((topic, route))
                if sender is None:
                    sender = senders[(topic, route)] = GroupSender()
                p = Pending(topic, q, wire, fut, deadline, seconds)
                sender.pending.append(p)
                queued.append(p)
                touched.add((topic, route))
        except BaseException:
            # Nothing of a call with a bad message leaves: the ones queued before it are
            # marked done, which every sender skips (never sent).
            for p in queued:
                p.future.cancel()
            raise
        if len(queued) == 1:
            self._expire(loop, delay, queued[0])
        for topic_group in touched:
            self._kick(*topic_group)
        return queued

    def _expire(self, loop: asyncio.AbstractEventLoop, delay: float, p: Pending) -> None:
        """Fail ``p`` if still unacked in ``delay`` seconds: straight into the expiry sweep's
        lane for ``delay`` (:meth:`Sweep.add` inlined: the hot path of ``enqueue``)."""
        expiry = self._expiry
        lane = expiry.lanes.get(delay)
        if lane is None:
            expiry.add(loop, delay, p.future, p)
            return
        while lane and lane[0][1].done():
            lane.popleft()
        due = loop.time() + delay
        lane.append((due, p.future, p))
        if due < expiry.at:
            expiry.arm(loop, due)

    async def dequeue(
        self,
        group: str | None,
        topic: str,
        *,
        queue: int,
        after: int | None = None,
        limit: int = 100,
        wait: float = 0.0,
        timeout: float | None = None,
    ) -> list[Message]:
        """Messages of one queue in offset order, after ``after`` (or after the consumer group's
        committed cursor when ``after`` is None and ``group`` is given; else from the start).
        With ``wait`` (seconds, at most 60), an empty read long-polls: it returns as soon as a
        message arrives, or ``[]`` when ``wait`` has passed. ``timeout`` (default
        ``retry_timeout``) is on top of ``wait``: the call takes at most ``wait + timeout``.
        ``UnknownTopic``, ``BadArgument`` (queue, limit or wait out of range), ``Unavailable``."""
        budget = self._within(timeout, wait if isinstance(wait, (int, float)) else 0.0)
        async with self._bounded(budget, topic, queue):
            cmap = await self._map_within(budget)
            cmap = await self._known(cmap, topic, queue)
            q = self._queue_of(cmap, topic, None, queue)
            params: dict[str, Any] = {
                "group": group,
                "topic": topic,
                "queue": q,
                "after": after,
                "limit": limit,
            }
            if wait:
                params["wait"] = wait
            if cmap.moved(topic, q) and after is None and group is not None:
                # A moved queue: the cursor is the newest of its sets' (see cursor()).
                params["after"] = after = await self._cursor_of(group, topic, q, budget)
            rows = await self._read(topic, q, params, wait, budget)
        return [Message(topic, q, int(o), bytes(p), k, dict(h), float(t)) for o, p, k, h, t in rows]

    async def commit(
        self,
        group: str,
        topic: str,
        *,
        queue: int,
        offset: int,
        token: int,
        expect: int | EllipsisType | None = ...,
        timeout: float | None = None,
    ) -> None:
        """Commit the consumer group's cursor (the last processed offset) through Paxos.
        Raises ``StaleToken`` if a newer lock holder already committed. With ``expect`` (an
        offset, or None for "no cursor yet") the commit is a compare-and-set: it raises
        ``VersionMismatch`` if the cursor is anything else (e.g. an admin replay moved it).
        ``timeout``: ``Unavailable`` after that many seconds (default ``retry_timeout``)."""
        budget = self._within(timeout)
        async with self._bounded(budget, topic, queue):
            cmap = await self._map_within(budget)
            cmap = await self._known(cmap, topic, queue)
            q = self._queue_of(cmap, topic, None, queue)
            params = {"group": group, "topic": topic, "queue": q, "offset": offset, "token": token}
            if expect is not ...:
                params["expect"] = expect
            await self._commit_at(topic, q, params, budget)

    async def cursor(
        self, group: str, topic: str, *, queue: int, timeout: float | None = None
    ) -> int | None:
        """The committed cursor of (consumer group, topic, queue), or None if never committed.
        ``UnknownTopic``, ``BadArgument`` (queue out of range), ``Unavailable`` (after
        ``timeout`` seconds, default ``retry_timeout``)."""
        budget = self._within(timeout)
        async with self._bounded(budget, topic, queue):
            cmap = await self._map_within(budget)
            cmap = await self._known(cmap, topic, queue)
            q = self._queue_of(cmap, topic, None, queue)
            result = await self._cursor_of(group, topic, q, budget)
        return result

    async def seek(
        self,
        group: str,
        topic: str,
        *,
        queue: int,
        offset: int | None = None,
        time: float | None = None,
        timeout: float | None = None,
    ) -> int | None:
        """Move the consumer group's cursor of one queue (one-shot, recorded in the log) to just
        before ``offset`` or the first message enqueued at or after ``time`` (wall clock).
        Returns the new cursor. ``BadArgument`` unless exactly one of ``offset`` / ``time``;
        ``UnknownTopic``, ``Unavailable`` (after ``timeout`` seconds, default ``retry_timeout``)."""
        budget = self._within(timeout)
        async with self._bounded(budget, topic, queue):
            cmap = await self._map_within(budget)
            cmap = await self._known(cmap, topic, queue)
            q = self._queue_of(cmap, topic, None, queue)
            params = {"group": group, "topic": topic, "queue": q, "offset": offset, "time": time}
            result = await self._call_master(topic, q, "seek", params, budget=budget)
        return None if result is None else int(result)

    async def status(
        self, addr: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """One store's status (groups, masters, chosen/applied per group, disk); by default the
        lowest-numbered store's. ``Unavailable`` if that store does not answer within
        ``timeout`` seconds (default ``request_timeout``; no retry)."""
        wait = check_timeout(timeout) or self._request_timeout
        if addr is None:
            cmap = await self.cluster_map(timeout=wait)
            addr = cmap.nodes[min(cmap.nodes)]
        result: dict[str, Any] = await self._pool.call(addr, "status", {}, timeout=wait)
        return result
