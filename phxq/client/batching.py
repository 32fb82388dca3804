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
from phxq.client.types import Ack, Route
from phxq.errors import PhxqError, QueueMoved, Unavailable
from phxq.tasks import TaskScope

MAX_REQUEST_MESSAGES = 4096
MAX_REQUEST_BYTES = 4 << 20
DEFAULT_WINDOW = 2  # enqueue requests in flight per (topic, group) with batching
# A request beyond the first in flight leaves only with this many messages queued: with few
# queued, waiting for the first to return makes one bigger Paxos instance instead of two small.
EXTRA_REQUEST_MIN_MESSAGES = 8


@dataclass(slots=True)
class Pending:
    queue: int
    wire: list[Any]  # [payload, key, headers, dedup_id]
    future: asyncio.Future[Ack]
    budget: Budget  # the enqueue call's: the request retries while a caller still waits


@dataclass(slots=True)
class GroupSender:
    """The adaptive batcher of one (topic, group): up to ``window`` requests in flight, the
    rest queue."""

    pending: list[Pending] = field(default_factory=list)
    in_flight: int = 0


def _ack(topic: str, queue: int, result: Any) -> Ack:
    """``[offset, duplicate]`` or ``[None, duplicate, scheduled id]`` from the store."""
    if len(result) == 3:
        sid = int(result[2])
        return Ack(topic, queue, None, bool(result[1]), f"{topic}/{queue}/{sid}")
    return Ack(topic, queue, int(result[0]), bool(result[1]))


class BatchingMixin:
    _senders: dict[tuple[str, Route], GroupSender]
    _batching: bool
    _window: int
    _tasks: TaskScope
    _call_master: Callable[..., Awaitable[Any]]

    def _kick(self, topic: str, group: Route) -> None:
        sender = self._senders[(topic, group)]
        if not self._batching:
            # One request per message, all at once: a task per message (the baseline mode).
            while sender.pending:
                batch = sender.pending[:1]
                del sender.pending[:1]
                if batch[0].future.done():
                    continue  # its caller gave up (timeout) before it left
                self._spawn(self._send_batch(topic, group, batch))
            return
        if sender.pending and (
            sender.in_flight == 0
            or (
                sender.in_flight < self._window
                and len(sender.pending) >= EXTRA_REQUEST_MIN_MESSAGES
            )
        ):
            sender.in_flight += 1
            self._spawn(self._send_loop(topic, group, sender))

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro, name="phxq.Client send")

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
                # Skip messages whose caller gave up (timeout) before they left.
                batch = [p for p in pending[:take] if not p.future.done()]
                del pending[:take]  # one slice, not a pop(0) per message
                if batch:
                    await self._send_batch(topic, group, batch)
        finally:
            sender.in_flight -= 1
            if sender.pending:
                self._kick(topic, group)

    async def _send_batch(self, topic: str, group: Route, batch: list[Pending]) -> None:
        if trace.ON:
            trace.mark("client.batch")
        by_queue: dict[int, list[Pending]] = {}
        for p in batch:
            by_queue.setdefault(p.queue, []).append(p)
        params = {
            "topic": topic,
            "batches": [[q, [p.wire for p in ps]] for q, ps in by_queue.items()],
        }
        try:
            budget = Budget.joint([p.budget for p in batch])
            try:
                reply = await self._call_master(
                    topic,
                    batch[0].queue,
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
                    if not p.future.done():
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
