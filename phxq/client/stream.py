"""Message streams of the client: ``client.tail(...)`` (read-only) and the plumbing that
``client.consume(...)`` shares.

:class:`MessageStream` wraps an async generator of messages so that it is also an async
context manager and is closed by its client: leaving ``async with client.tail(...) as s:``, or
closing the client, cancels its reads at once; a stream abandoned after ``break`` is closed when
it is garbage-collected (asyncio's async-generator finaliser) or when the client closes.

**tail** (DESIGN.md §10): reads every queue of a topic (or the given ones) with long polls, one
read in flight per queue, and yields each queue's messages in offset order (queues interleave as
their messages arrive). It never commits and holds no lock, so it disturbs no consumer. Where it
starts, per queue (``from_``):

- ``"now"`` (default): after everything chosen when the stream starts (the highest chosen
  instance any reachable store reports for the queue's Paxos group);
- ``"start"``: the oldest message still retained;
- ``"cursor"``: after ``group``'s committed cursor (what the group has yet to consume);
- an ``int`` offset: that offset and after, in every queue read (offsets are per queue; give
  ``queues=[q]`` to read one);
- a ``datetime``: the first message enqueued at or after that time, in every queue read
  (:mod:`phxq.client.timeindex`; an aware datetime, or local time if naive).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from phxq import validate
from phxq.client.timeindex import after_time
from phxq.client.types import Message
from phxq.errors import BadArgument, PhxqError, UnknownTopic
from phxq.routing import INDEX_BITS, MAX_MESSAGES_PER_INSTANCE
from phxq.tasks import TaskScope

if TYPE_CHECKING:
    from phxq.client.client import Client

TailStart = Literal["now", "start", "cursor"] | int | datetime
TAIL_WAIT = 5.0  # seconds each read long-polls; a message arriving ends the poll at once


M = TypeVar("M", bound=Message)


class StreamStop(asyncio.Event):
    """Set when a stream is closed. ``error``: the exception that left ``async with stream``,
    if one did (``consume`` then does not count the message in hand as processed)."""

    error: BaseException | None = None


class MessageStream(Generic[M]):
    """An async iterator of messages that is also an async context manager (``aclose`` on exit).
    Returned by ``Client.tail`` and ``Client.consume``; not constructed by users.

    ``aclose`` may be called from any task, also while another task waits in ``__anext__``:
    the stream's generator watches the ``stop`` event it is given and returns, and that waiting
    ``__anext__`` raises ``StopAsyncIteration``."""

    def __init__(self, make: Callable[[StreamStop], AsyncGenerator[M, None]]) -> None:
        self._stop = StreamStop()
        self._source = make(self._stop)
        self._step: asyncio.Future[None] | None = None

    def __aiter__(self) -> MessageStream[M]:
        return self

    async def __anext__(self) -> M:
        if self._stop.is_set():
            raise StopAsyncIteration
        step = self._step = asyncio.get_running_loop().create_future()
        try:
            return await self._source.__anext__()
        finally:
            step.set_result(None)
            self._step = None

    async def aclose(self) -> None:
        """Stop the stream: cancel its reads (and, for ``consume``, hand its queues over)."""
        self._stop.set()
        if self._step is not None:
            await asyncio.shield(self._step)  # the running step sees `stop` and returns
        await self._source.aclose()

    async def __aenter__(self) -> MessageStream[M]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._stop.error = exc
        await self.aclose()


class StreamRegistry:
    """The open streams of one client, closed with it (weakly held: an abandoned stream is
    finalised by the garbage collector as an async generator would be)."""

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[MessageStream[Any]] = weakref.WeakSet()

    def add(self, make: Callable[[StreamStop], AsyncGenerator[M, None]]) -> MessageStream[M]:
        stream = MessageStream(make)
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        for stream in list(self._streams):
            await stream.aclose()


def check_queues(topic: str, count: int | None, queues: Sequence[int] | None) -> list[int]:
    """The queues to read: all of the topic's, or the given ones (validated)."""
    if count is None:
        raise UnknownTopic(f"unknown topic {topic!r}")
    if queues is None:
        return list(range(count))
    out = []
    for q in queues:
        out.append(validate.integer(q, f"queue of topic {topic!r}", maximum=count - 1))
    if not out:
        raise BadArgument("queues is empty")
    return list(dict.fromkeys(out))


async def _chosen_up_to(client: Client) -> dict[tuple[int, int], int]:
    """The highest chosen instance per (store set, Paxos group) any reachable store reports."""
    cmap = await client.cluster_map()
    best: dict[tuple[int, int], int] = {}
    last: PhxqError | None = None
    for addr in cmap.nodes.values():
        try:
            status = await client.status(addr)
        except PhxqError as exc:
            last = exc
            continue
        home = int(status.get("set", 1))
        for row in status.get("groups", []):
            g, chosen = (home, int(row["group"])), int(row["chosen_up_to"])
            best[g] = max(best.get(g, -1), chosen)
    if not best:
        raise last or UnknownTopic("no store reported its groups")
    return best


async def start_positions(
    client: Client,
    topic: str,
    queues: list[int],
    from_: TailStart,
    group: str | None,
) -> dict[int, int | None]:
    """Per queue, the ``after`` offset a read starting at ``from_`` uses (None: from the start)."""
    if from_ == "start":
        return dict.fromkeys(queues)
    if from_ == "cursor":
        if group is None:
            raise BadArgument('from_="cursor" needs a consumer group')
        return {q: await client.cursor(group, topic, queue=q) for q in queues}
    if isinstance(from_, datetime):
        cmap = await client.cluster_map()
        chosen = await _chosen_up_to(client)
        when = from_.timestamp()
        starts: dict[int, int | None] = {}
        for q in queues:
            bound = chosen.get(cmap.route(topic, q), -1)
            if cmap.moved(topic, q):  # offsets are above the log's instances there
                bound = max(bound, (await _moved_end(client, cmap, topic, q)) >> INDEX_BITS)
            starts[q] = await after_time(client, topic, q, when, bound)
        return starts
    if from_ == "now":
        cmap = await client.cluster_map()
        chosen = await _chosen_up_to(client)
        out: dict[int, int | None] = {}
        for q in queues:
            upto = chosen.get(cmap.route(topic, q), -1)
            if cmap.moved(topic, q):  # a moved queue: after its last message
                out[q] = await _moved_end(client, cmap, topic, q)
                continue
            # After every message of every instance chosen so far: (upto << 20) | max index.
            out[q] = None if upto < 0 else (upto + 1) * MAX_MESSAGES_PER_INSTANCE - 1
        return out
    if isinstance(from_, int) and not isinstance(from_, bool) and from_ >= 0:
        return dict.fromkeys(queues, from_ - 1 if from_ > 0 else None)
    raise BadArgument(
        f'from_ must be "now", "start", "cursor", an offset >= 0 or a datetime, got {from_!r}'
    )


async def _moved_end(client: Client, cmap: Any, topic: str, q: int) -> int:
    """The last offset of moved queue ``q`` (its last message, else its last seal)."""
    params = {"topic": topic, "queue": q}
    end = await client._call_master(topic, q, "queue_end", params)
    sealed: int = cmap.history[topic][q][-1][1]
    return sealed if end is None else max(int(end), sealed)


async def tail_messages(
    client: Client,
    topic: str,
    *,
    from_: TailStart,
    group: str | None,
    queues: Sequence[int] | None,
    batch: int,
    stop: asyncio.Event,
    wait: float = TAIL_WAIT,
) -> AsyncGenerator[Message, None]:
    """The generator behind ``Client.tail`` (see the module docstring)."""
    validate.integer(batch, "batch", minimum=1, maximum=None)
    cmap = await client.cluster_map()
    chosen_queues = check_queues(topic, cmap.topics.get(topic), queues)
    after = await start_positions(client, topic, chosen_queues, from_, group)
    async with TaskScope(f"tail {topic}") as scope:
        stopped = scope.spawn(stop.wait(), name=f"tail {topic} stop", watched=True)
        reads: dict[int, asyncio.Task[list[Message]]] = {}
        while True:
            for q in chosen_queues:
                if q not in reads:
                    read = client.dequeue(
                        None, topic, queue=q, after=after[q], limit=batch, wait=wait
                    )
                    reads[q] = scope.spawn(read, name=f"tail {topic}/{q}", watched=True)
            waiting = {stopped, *reads.values()}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                return
            for q in chosen_queues:
                task = reads[q]
                if task not in done:
                    continue
                del reads[q]
                for message in task.result():  # an error ends the stream (after retries)
                    after[q] = message.offset
                    yield message
