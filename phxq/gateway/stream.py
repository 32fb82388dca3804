"""``GET /v1/topics/{topic}/stream``: a server-sent-events tail of a topic (read-only).

Where it starts, per queue: after the positions in a ``Last-Event-ID`` header (what a
reconnecting ``EventSource`` sends back); else after ``after`` (with ``queue``); else at the
consumer ``group``'s committed cursor; else at the first message (``from=start``) or at the
end (``from=now``, the default: every message chosen after the stream opened).

What it sends: one event per message, in offset order per queue (queues interleave)::

    id: 0:1048577,3:2097152          <- every known position "queue:offset"; resume token
    event: message
    data: {"queue": 3, "offset": 2097152, "key": ..., "headers": ..., "payload_base64": ...,
           "enqueued_at": ...}

a ``: keepalive`` comment every ``KEEPALIVE`` seconds, and, if reading fails for good (no
master within the client's retry budget), one ``event: error`` whose data is a problem object,
then the stream ends. It also ends after ``limit`` messages or ``timeout`` seconds when given.
A slow reader slows the pollers down (bounded buffer), never the gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from phxq.errors import BadArgument, PhxqError, Unavailable, UnknownTopic
from phxq.gateway.handlers import Call, message_json
from phxq.gateway.problems import problem_for
from phxq.routing import MAX_MESSAGES_PER_INSTANCE, group_for_queue, make_offset

KEEPALIVE = 15.0
POLL_WAIT = 10.0  # seconds one long poll waits for a message
BUFFER = 256  # events buffered between the pollers and a slow reader


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


async def _ends(call: Call, groups: int, queues: list[int]) -> dict[int, int | None]:
    """Per queue, an offset after which every message was chosen after this call started."""
    client = call.backend.client
    cmap = await client.cluster_map()
    chosen: dict[int, int] = {}
    answered = False
    for addr in cmap.nodes.values():
        try:
            status = await client.status(addr)
        except PhxqError:
            continue  # a down store; the others know at least as much
        answered = True
        for row in status.get("groups", []):
            chosen[row["group"]] = max(chosen.get(row["group"], 0), int(row["chosen_up_to"]))
    if not answered:
        raise Unavailable("no store answered: cannot find the end of the topic")
    last = MAX_MESSAGES_PER_INSTANCE - 1
    return {q: make_offset(chosen.get(group_for_queue(q, groups), 0), last) for q in queues}


async def _start(call: Call, queues: list[int], groups: int) -> dict[int, int | None]:
    a = call.args
    client = call.backend.client
    last_id = call.request.headers.get("Last-Event-ID")
    if last_id:
        known = parse_event_id(last_id, max(queues) + 1)
        rest = [q for q in queues if q not in known]
        start = await _start_fresh(call, rest, groups) if rest else {}
        return {q: known.get(q, start.get(q)) for q in queues}
    if a.get("after") is not None:
        if a.get("queue") is None:
            raise BadArgument("after is an offset of one queue: give queue too")
        return {a["queue"]: a["after"]}
    if a.get("group") is not None:
        return {q: await client.cursor(a["group"], a["topic"], queue=q) for q in queues}
    return await _start_fresh(call, queues, groups)


async def _start_fresh(call: Call, queues: list[int], groups: int) -> dict[int, int | None]:
    if call.args.get("from", "now") == "start":
        return dict.fromkeys(queues)
    return await _ends(call, groups, queues)


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
    positions = await _start(call, queues, cmap.groups)

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
    poll_wait = min(POLL_WAIT, call.backend.max_wait)

    async def poll(q: int) -> None:
        after = positions[q]
        try:
            while True:
                batch = await client.dequeue(
                    None, topic, queue=q, after=after, limit=100, wait=poll_wait
                )
                for msg in batch:
                    after = msg.offset
                    await events.put(("message", msg))
        except PhxqError as exc:
            await events.put(("error", exc))

    limit = a.get("limit")
    deadline = None if a.get("timeout") is None else time.monotonic() + a["timeout"]
    async with asyncio.TaskGroup() as tg:
        pollers = [tg.create_task(poll(q)) for q in queues]
        try:
            await _relay(response, events, positions, limit, deadline)
        except ConnectionError:
            pass  # the reader went away: nothing left to tell it
        finally:
            for task in pollers:
                task.cancel()
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
