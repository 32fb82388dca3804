"""``Client.consume``: a consumer group member whose handler is the caller's ``async for``.

It is the consumer daemon's machinery with a different handler: a
:class:`~phxq.consumer.member.GroupMember` joins the group's membership in the lock service
(``consumers/<name>``, heartbeats, the same balanced assignment the daemons compute, so client
consumers and consumer daemons of one group share its queues), runs a
:class:`~phxq.consumer.pair.PairWorker` per assigned queue (the queue's lock, strictly ordered
reads, compare-and-set commits with the lock's fencing token, replay and pause/rate limits from
``phxq admin``), and the workers' handler hands each message to the iterator and waits:

- ``auto_commit=True``: a message counts as processed when the loop asks for the next one (or
  leaves the loop normally); leaving ``async with client.consume(...)`` by an exception leaves
  the message in hand unprocessed, so it is delivered again;
- ``auto_commit=False``: when the caller awaits ``msg.ack()``, which returns once the cursor
  is committed past the message (with the lock's fencing token: ``StaleToken`` if the lock was
  lost first); until then that queue yields nothing more (strict order), the others go on.

The cursor moves past processed messages within ``commit_interval`` (batched commits) and always
before a queue is handed over. Rebalancing as members come and go, and a lost lock (the
in-hand message's ``ack()`` then raises ``StaleToken``; the next owner delivers it again), are
the workers' business, as in the daemon. Closing the stream (or the client) leaves the group:
messages not yet processed are abandoned to the next owner, processed ones are committed, and
the locks are released (bounded by ``DRAIN_TIMEOUT``).

Without ``queues``, the stream follows the cluster map (a
:class:`~phxq.consumer.mapwatch.MapWatch`): queues added to the topic online join the group's
assignment without restarting the loop.

With ``queues=[...]`` there is no membership: the stream holds exactly those queues' locks
(waiting while someone else holds one), like a static partition assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from phxq import validate
from phxq.client.stream import StreamStop, check_queues
from phxq.client.types import ConsumedMessage
from phxq.config import ConsumerGroupConfig
from phxq.consumer.group import GroupRuntime, Timings
from phxq.consumer.handlers import Delivery, Outcome
from phxq.consumer.mapwatch import MapWatch, served
from phxq.consumer.member import GroupMember
from phxq.consumer.pair import PairWorker
from phxq.consumer.settings import SETTINGS_PREFIX, group_settings
from phxq.errors import BadArgument, StaleToken
from phxq.tasks import TaskScope
from phxq.topology import Topology

if TYPE_CHECKING:
    from phxq.client.client import Client

log = logging.getLogger("phxq.consumer")

DRAIN_TIMEOUT = 10.0
HANDLER = "phxq.Client.consume"  # what the group's runtime names as its handler


class _Bridge:
    """The workers' handler: each delivery waits in ``ready`` for the iterator, then until the
    caller processed it (``True``) or the stream closed (``False``: abandoned)."""

    def __init__(self) -> None:
        self.ready: asyncio.Queue[tuple[Delivery, asyncio.Future[bool]]] = asyncio.Queue()
        self._waiting: set[asyncio.Future[bool]] = set()
        self._closed = False

    async def handler(self, delivery: Delivery) -> Outcome:
        if self._closed:
            return Outcome(False, "the consume loop ended")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.add(done)
        try:
            self.ready.put_nowait((delivery, done))
            processed = await done
        finally:
            self._waiting.discard(done)
        return Outcome(processed, "" if processed else "the consume loop ended first")

    def close(self) -> None:
        """Abandon every delivery not processed yet."""
        self._closed = True
        for done in self._waiting:
            if not done.done():
                done.set_result(False)


def _acker(
    done: asyncio.Future[bool], worker: PairWorker | None, delivery: Delivery
) -> Callable[[], Awaitable[None]]:
    async def ack() -> None:
        if done.cancelled() or worker is None or worker.token != delivery.token:
            raise StaleToken("this consumer lost the queue's lock; its next owner redelivers")
        if not done.done():
            done.set_result(True)
        await worker.committed_past(delivery.offset)

    return ack


def _member_name() -> str:
    host = socket.gethostname().replace("/", "_") or "client"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def consume_messages(
    client: Client,
    group: str,
    topic: str,
    *,
    queues: Sequence[int] | None,
    batch: int,
    auto_commit: bool,
    stop: StreamStop,
    timings: Timings | None = None,
) -> AsyncGenerator[ConsumedMessage, None]:
    """The generator behind ``Client.consume`` (see the module docstring)."""
    if not isinstance(group, str) or not group or "/" in group:
        raise BadArgument(f"a consumer group name must be non-empty and without '/': {group!r}")
    validate.integer(batch, "batch", minimum=1, maximum=None)
    cmap = await client.cluster_map()
    chosen = check_queues(topic, cmap.topics.get(topic), queues)
    spec = ConsumerGroupConfig(
        name=group, topic=topic, handler=HANDLER, on_failure="block", max_attempts=1 << 30
    )
    bridge = _Bridge()
    name = _member_name()
    async with client.lock_client() as locks, TaskScope(f"consume {group}", log) as scope:
        settings = await locks.kv_list(SETTINGS_PREFIX)
        runtime = GroupRuntime(spec, bridge.handler, group_settings(spec, settings))
        member = GroupMember(
            name,
            owner=f"{name}#{uuid.uuid4().hex[:8]}",
            weight=1.0,
            client=client,
            locks=locks,
            runtimes={group: runtime},
            pairs=[(group, topic, q) for q in chosen],
            paxos_groups=cmap.groups,
            timings=timings or Timings(read_ahead=batch),
            balanced=queues is None,
        )
        await member.join()
        running = scope.spawn(member.run(), name=f"consume {group} member", watched=True)
        if queues is None:

            async def follow(topo: Topology) -> None:
                spec = topo.topics.get(topic)
                if spec is not None and spec.queues > len(member.pairs):
                    await served(client, topo.version)
                    member.set_pairs([(group, topic, q) for q in range(spec.queues)])

            scope.spawn(MapWatch(locks, follow).run(), name=f"consume {group} map")
        stopped = scope.spawn(stop.wait(), name=f"consume {group} stop", watched=True)
        in_hand: asyncio.Future[bool] | None = None
        try:
            while True:
                getter = scope.spawn(bridge.ready.get(), name="next", watched=True)
                done, _ = await asyncio.wait(
                    {getter, stopped, running}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if running in done:
                        running.result()  # the member failed: raise it
                    return
                delivery, processed = getter.result()
                in_hand = processed
                running_worker = member.workers.get((group, delivery.topic, delivery.queue))
                yield ConsumedMessage(
                    topic=delivery.topic,
                    queue=delivery.queue,
                    offset=delivery.offset,
                    payload=delivery.payload,
                    key=delivery.key,
                    headers=dict(delivery.headers),
                    enqueued_at=delivery.enqueued_at,
                    group=group,
                    token=delivery.token,
                    _ack=_acker(
                        processed,
                        None if running_worker is None else running_worker.worker,
                        delivery,
                    ),
                )
                if auto_commit and not processed.done():
                    processed.set_result(True)  # the loop moved on
                in_hand = None
        finally:
            if auto_commit and in_hand is not None and not in_hand.done() and stop.error is None:
                in_hand.set_result(True)  # left the loop normally: the last one is processed
            member.leave()
            for worker in list(member.workers.values()):
                worker.worker.drain()  # before the bridge fails what is left: abandoned
            bridge.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await asyncio.wait({running})
            if not running.done():
                log.warning("consume %s: handoff took over %ss; cancelling", group, DRAIN_TIMEOUT)
            elif not running.cancelled() and (failure := running.exception()) is not None:
                log.error("consume %s: the member failed", group, exc_info=failure)
