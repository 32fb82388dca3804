"""The enqueue half of :class:`phxq.Client`: adaptive batching per (topic, (store set, group)).

Up to ``window`` (default 2) requests per (topic, group) are in flight at once; a request beside
one already in flight leaves only once ``EXTRA_REQUEST_MIN_MESSAGES`` (8) are queued, since
each request becomes its own Paxos instance. Further ``enqueue`` calls for the group queue up
and leave together in the next request (at most ``MAX_REQUEST_MESSAGES`` messages and about
``MAX_REQUEST_BYTES``). Every waiter learns its outcome: an ack, the request's error, or
``Unavailable`` when the client closes first. A mixin: it relies on the attributes
:class:`~phxq.client.client.Client` sets up (declared below).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from phxq import trace
from phxq.budget import Budget
from phxq.client.types import Ack, ClusterMap, Route
from phxq.errors import PhxqError, QueueMoved, Unavailable
from phxq.tasks import TaskScope

MAX_REQUEST_MESSAGES = 4096
MAX_REQUEST_BYTES = 4 << 20
DEFAULT_WINDOW = 2  # enqueue requests in flight per (topic, group) with batching
# A request beyond the first in flight leaves only with this many messages queued: with few
# queued, waiting for the first to return makes one bigger Paxos instance instead of two small.
EXTRA_REQUEST_MIN_MESSAGES = 8
_SEND = "phxq.Client send"


@dataclass(slots=True)
class Pending:
    """One enqueued message until its ack. Its deadline is kept by the client's expiry
    :class:`~phxq.client.sweep.Sweep` (a single ``enqueue``) or by its call's one timer
    (:class:`Calls`, ``enqueue_many``): no timer and no :class:`Budget` of its own; the
    request carrying it retries until the latest deadline of its messages."""

    topic: str
    queue: int
    wire: list[Any]  # [payload, key, headers, dedup_id(, when)]
    future: asyncio.Future[Ack]
    deadline: float  # time.monotonic() at which its call gives up
    seconds: float  # its call's timeout
    budget: Budget | None = None  # the latest request carrying it: what the stores said


class Calls:
    """The messages of one multi-message call (``enqueue_many``), bounded by one timer for
    the call (not a sweep entry per message: a call's remaining time is its own, and entries
    kept until their due time would keep every message of a bulk load alive for
    ``retry_timeout``). :meth:`done` once every future is (checked in order, so each is
    looked at about once)."""

    __slots__ = ("_next", "pending")

    def __init__(self, pending: list[Pending]) -> None:
        self.pending = pending
        self._next = 0

    def done(self) -> bool:
        pending = self.pending
        i = self._next
        while i < len(pending) and pending[i].future.done():
            i += 1
        self._next = i
        return i == len(pending)


@dataclass(slots=True)
class GroupSender:
    """The adaptive batcher of one (topic, group): up to ``window`` requests in flight, the
    rest queue."""

    pending: list[Pending] = field(default_factory=list)
    in_flight: int = 0
    last: Budget | None = None  # the budget of the latest request sent


def _ack(topic: str, queue: int, result: Any) -> Ack:
    """The ack of ``[None, duplicate, scheduled id]`` from the store (a delayed message; the
    common ``[offset, duplicate]`` is read where the reply is)."""
    if len(result) != 3:
        raise TypeError(f"an enqueue result of {len(result)} fields")
    sid = int(result[2])
    return Ack(topic, queue, None, bool(result[1]), f"{topic}/{queue}/{sid}")


class BatchingMixin:
    _senders: dict[tuple[str, Route], GroupSender]
    _batching: bool
    _window: int
    _tasks: TaskScope
    _map: ClusterMap | None
    _call_master: Callable[..., Awaitable[Any]]
    _expired: Callable[[Budget], Unavailable]

    def _time_out(self, entry: Pending | Calls, delay: float) -> None:
        """The expiry sweep's call for ``entry`` (a message, or a call's messages), still
        unacked at its deadline: each caller gets ``Unavailable`` saying what the stores
        answered the request carrying its message (or, still queued, the latest request to
        its group)."""
        if isinstance(entry, Calls):
            for p in entry.pending:
                if not p.future.done():
                    self._time_out(p, delay)
            return
        p = entry
        told = p.budget
        if told is None and self._map is not None:
            sender = self._senders.get((p.topic, self._map.route(p.topic, p.queue)))
            told = sender.last if sender is not None else None
        budget = Budget(p.seconds, p.deadline, where=(p.topic, p.queue))
        if told is not None:
            budget.answers.update(told.answers)
            budget.silent.update(told.silent)
        p.future.set_exception(self._expired(budget))

    def _kick(self, topic: str, group: Route) -> None:
        sender = self._senders[(topic, group)]
        if not self._batching:
            # One request per message, all at once: a task per message (the baseline mode).
            while sender.pending:
                batch = sender.pending[:1]
                del sender.pending[:1]
                if batch[0].future.done():
                    continue  # its caller gave up (timeout) before it left
                self._tasks.spawn(self._send_batch(topic, group, batch), name=_SEND)
            return
        if sender.pending and (
            sender.in_flight == 0
            or (
                sender.in_flight < self._window
                and len(sender.pending) >= EXTRA_REQUEST_MIN_MESSAGES
            )
        ):
            sender.in_flight += 1
            self._tasks.spawn(self._send_loop(topic, group, sender), name=_SEND)

    async def _send_loop(self, topic: str, group: Route, sender: GroupSender) -> None:
        try:
            while sender.pending:
                pending = sender.pending
                size = 0
                take = 0
                for p in pending[:MAX_REQUEST_MESSAGES]:
                    nbytes = len(p.wire[0]) + 64
                    if take and size + nbytes > MAX_REQUEST_BYTES:
                        break
                    take += 1
                    size += nbytes
                batch = pending[:take]
                del pending[:take]  # one slice, not a pop(0) per message
                await self._send_batch(topic, group, batch)
        finally:
            sender.in_flight -= 1
            if sender.pending:
                self._kick(topic, group)

    async def _send_batch(self, topic: str, group: Route, batch: list[Pending]) -> None:
        if trace.ON:
            trace.mark("client.batch")
        # One budget for the request: it lasts as long as the longest call waiting on it, and
        # what the stores answer reaches each message's timeout error (``p.budget``).
        last = batch[-1]
        budget = Budget(last.seconds, last.deadline)
        by_queue: dict[int, list[Pending]] = {}
        for p in batch:
            if p.future.done():
                continue  # its caller gave up (timeout) before it left: not sent
            p.budget = budget
            if p.deadline > budget.deadline:
                budget.seconds, budget.deadline = p.seconds, p.deadline
            ps = by_queue.get(p.queue)
            if ps is None:
                by_queue[p.queue] = [p]
            else:
                ps.append(p)
        if not by_queue:
            return
        sender = self._senders.get((topic, group))
        if sender is not None:
            sender.last = budget
        params = {
            "topic": topic,
            "batches": [[q, [p.wire for p in ps]] for q, ps in by_queue.items()],
        }
        try:
            try:
                reply = await self._call_master(
                    topic,
                    next(iter(by_queue)),
                    "enqueue",
                    params,
                    budget=budget,
                    follow_moves=len(by_queue) == 1,
                )
            except QueueMoved:
                # One of the queues moved to another store set (phxq admin queue move): send
                # each queue on its own, each following its move (order per queue is kept).
                await asyncio.gather(
                    *(self._send_batch(topic, group, ps) for ps in by_queue.values())
                )
                return
            for (q, ps), results in zip(by_queue.items(), reply, strict=True):
                for p, result in zip(ps, results, strict=True):
                    if p.future.done():
                        continue
                    if len(result) == 2:  # [offset, duplicate]
                        p.future.set_result(Ack(topic, q, int(result[0]), bool(result[1])))
                    else:
                        p.future.set_result(_ack(topic, q, result))
            if trace.ON:
                trace.mark("client.acked")
        except asyncio.CancelledError:
            # The client is closing: its callers must not wait forever.
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(Unavailable("the client was closed"))
            raise
        except Exception as exc:  # every waiter must learn the outcome; none is left hanging
            if not isinstance(exc, PhxqError):
                exc = Unavailable(f"malformed enqueue reply: {exc!r}")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)

    # --------------------------------------------------------------------- read and commit
