"""``GET /v1/topics/{topic}/stream``: a server-sent-events tail of a topic (read-only).

Where it starts, per queue: after the positions in a ``Last-Event-ID`` header (what a
reconnecting ``EventSource`` sends back; queues it does not name start as below); else after
``after`` (with ``queue``); else after the consumer ``group``'s committed cursor; else at the
oldest retained message (``from=start``) or after everything chosen when the request arrived
(``from=now``, the default). The start is fixed before the answer's headers are sent, so a
message enqueued once the caller sees them is always in the stream.

What it sends: one event per message, in offset order per queue (queues interleave)::

    id: 0:1048577,3:2097152          <- every known position "queue:offset"; the resume token
    event: message
    data: {"queue": 3, "offset": 2097152, "key": ..., "headers": ..., "payload_base64": ...,
           "enqueued_at": ...}

a ``: keepalive`` comment every ``KEEPALIVE`` seconds, and, if reading fails for good (no
master within the client's retry budget), one ``event: error`` whose data is a problem object;
then the stream ends. It also ends after ``limit`` messages or ``timeout`` seconds when given.
The reads are the client's own tails (``Client.tail``, one per queue so each can resume at its
own position). A slow reader slows them down (a bounded buffer), never grows the gateway's
memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from phxq.client.stream import MessageStream, TailStart, start_positions
from phxq.client.types import Message
from phxq.errors import BadArgument, PhxqError, UnknownTopic
from phxq.gateway.handlers import Call, message_json
from phxq.gateway.problems import problem_for

KEEPALIVE = 15.0
BUFFER = 256  # events buffered between the reads and a slow reader


def parse_event_id(text: str, queues: int) -> dict[int, int]:
    """``"0:17,3:42"`` -> ``{0: 17, 3: 42}``; ``BadArgument`` on anything else."""
    out: dict[int, int] = {}
    for part in text.split(","):
        q, sep, o = part.strip().partition(":")
        if not (sep and q.isdigit() and o.isdigit()) or int(q) >= queues:
            raise BadArgument(f"Last-Event-ID must be 'queue:offset[,...]', got {text[:60]!r}")
        out[int(q)] = int(o)
    return out


def event_id(positions: dict[int, int | None]) -> str:
    return ",".join(f"{q}:{o}" for q, o in sorted(positions.items()) if o is not None)


async def _start(call: Call, queues: list[int]) -> dict[int, int | None]:
    """Per queue, the offset the stream reads after (None: from the oldest message)."""
    a = call.args
    client = call.backend.client
    known: dict[int, int] = {}
    last_id = call.request.headers.get("Last-Event-ID")
    if last_id:
        known = parse_event_id(last_id, max(queues) + 1)
    rest = [q for q in queues if q not in known]
    fresh: dict[int, int | None] = {}
    if rest and a.get("after") is not None:
        if a.get("queue") is None:
            raise BadArgument("after is an offset of one queue: give queue too")
        fresh = {a["queue"]: a["after"]}
    elif rest:
        start: TailStart = "cursor" if a.get("group") is not None else a.get("from", "now")
        fresh = await start_positions(client, a["topic"], rest, start, a.get("group"))
    return {q: known[q] if q in known else fresh[q] for q in queues}


async def stream(call: Call) -> web.StreamResponse:
    a = call.args
    topic = a["topic"]
    client = call.backend.client
    cmap = await client.cluster_map()
    count = cmap.topics.get(topic)
    if count is None:
        raise UnknownTopic(f"unknown topic {topic!r}", {"topic": topic})
    if a.get("queue") is not None and a["queue"] >= count:
        raise BadArgument(f"queue must be in [0, {count}), got {a['queue']}")
    queues = [a["queue"]] if a.get("queue") is not None else list(range(count))
    positions = await _start(call, queues)
    sources = [
        client.tail(topic, from_="start" if after is None else after + 1, queues=[q])
        for q, after in positions.items()
    ]

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(call.request)
    await response.write(f": tail of {topic}, {len(queues)} queues\n\n".encode())
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(BUFFER)

    async def pump(source: MessageStream[Message]) -> None:
        try:
            async for msg in source:
                await events.put(("message", msg))
        except PhxqError as exc:
            await events.put(("error", exc))

    limit = a.get("limit")
    deadline = None if a.get("timeout") is None else time.monotonic() + a["timeout"]
    try:
        async with asyncio.TaskGroup() as tg:
            pumps = [tg.create_task(pump(source)) for source in sources]
            try:
                await _relay(response, events, positions, limit, deadline)
            except ConnectionError:
                pass  # the reader went away: nothing left to tell it
            finally:
                for task in pumps:
                    task.cancel()
    finally:
        for source in sources:
            await source.aclose()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _relay(
    response: web.StreamResponse,
    events: asyncio.Queue[tuple[str, Any]],
    positions: dict[int, int | None],
    limit: int | None,
    deadline: float | None,
) -> None:
    """Write events from ``events`` until ``limit`` messages, ``deadline`` or an error."""
    sent = 0
    while limit is None or sent < limit:
        wait = KEEPALIVE
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return
        try:
            async with asyncio.timeout(wait):
                kind, item = await events.get()
        except TimeoutError:
            if deadline is None or deadline > time.monotonic():
                await response.write(b": keepalive\n\n")
            continue
        if kind == "error":
            data = json.dumps(problem_for(item).body())
            await response.write(f"event: error\ndata: {data}\n\n".encode())
            return
        positions[item.queue] = item.offset
        data = json.dumps(message_json(item))
        frame = f"id: {event_id(positions)}\nevent: message\ndata: {data}\n\n"
        await response.write(frame.encode())
        sent += 1
