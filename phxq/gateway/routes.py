"""The one table of ``/v1`` routes: the router dispatches from it and the OpenAPI document is
generated from it (:func:`build_routes`). To add an operation, add a :class:`Route` here and a
handler in :mod:`phxq.gateway.handlers`; nothing else lists routes.

The schemas embed this gateway's limits (the longest long-poll ``wait``), so the document a
gateway serves describes exactly what that gateway accepts.
"""

from __future__ import annotations

from typing import Any

from phxq.gateway import handlers as h
from phxq.gateway import schema as s
from phxq.gateway.shapes import (
    ACK,
    ACQUIRE_BODY,
    BATCH,
    COMMIT_BODY,
    CURSOR,
    DELAY,
    DELIVER_AT,
    LAG_ROW,
    LOCK,
    MESSAGE,
    SEEK_BODY,
    TOKEN_BODY,
    TOPIC_INFO,
)
from phxq.gateway.stream import stream
from phxq.gateway.table import Handler, Param, Route
from phxq.gateway.txn import txn_routes

TOPIC = Param("topic", "path", s.NAME, "topic name", required=True, example="orders")
QUEUE = Param(
    "queue",
    "path",
    s.QUEUE,
    "queue number, 0 <= queue < the topic's queues",
    required=True,
    example=0,
)
GROUP_Q = Param("group", "query", s.NAME, "consumer group", example="billing")
GROUP_REQUIRED = Param("group", "query", s.NAME, "consumer group", required=True, example="billing")


# Every operation on one (consumer group, topic, queue) pair needs a grant for that group.
PAIR_PERMISSION = "consume:{topic}:{group}"
PAIR_POST_ERRORS = (400, 401, 403, 404, 408, 409, 413, 429, 503)


def _pair_get(
    path: str, operation: str, summary: str, handler: Handler, response: dict[str, Any], *, tag: str
) -> Route:
    """A GET of one pair's state (the group in the query)."""
    return Route(
        "GET",
        path,
        operation,
        summary,
        handler,
        response,
        params=(TOPIC, QUEUE, GROUP_REQUIRED),
        permission=PAIR_PERMISSION,
        tags=(tag,),
    )


def _pair_post(
    path: str,
    operation: str,
    summary: str,
    handler: Handler,
    response: dict[str, Any],
    body: dict[str, Any],
    example: dict[str, Any],
    *,
    tag: str,
    description: str = "",
    conflict: bool = True,
) -> Route:
    """A POST on one pair (the group in the JSON ``body``); ``conflict``: it may answer 409."""
    errors = tuple(e for e in PAIR_POST_ERRORS if conflict or e != 409)
    return Route(
        "POST",
        path,
        operation,
        summary,
        handler,
        response,
        params=(TOPIC, QUEUE),
        json_body=body,
        permission=PAIR_PERMISSION,
        description=description,
        errors=errors,
        tags=(tag,),
        body_example=example,
    )


async def _openapi(call: h.Call) -> Any:
    return call.backend.openapi()


async def _metrics(call: h.Call) -> Any:
    return call.backend.metrics_text()


def build_routes(max_wait: float) -> tuple[Route, ...]:
    """Every ``/v1`` operation; ``max_wait`` bounds long polls (seconds)."""
    wait = Param(
        "wait",
        "query",
        {"type": "number", "minimum": 0, "maximum": max_wait},
        f"long poll: seconds to wait for a first message (at most {max_wait:g})",
        example=0,
    )
    queue_routes = "/v1/topics/{topic}/queues/{queue}"
    return (
        Route(
            "POST",
            "/v1/topics/{topic}/messages",
            "enqueue",
            "Enqueue one message (raw body) or a JSON batch",
            h.enqueue,
            {"anyOf": [ACK, {"type": "array", "items": ACK}]},
            params=(
                TOPIC,
                Param(
                    "Phxq-Key",
                    "header",
                    {**s.NAME, "maxLength": 1024},
                    "message key: the same key always goes to the same queue",
                ),
                Param(
                    "Phxq-Dedup-Id",
                    "header",
                    {**s.NAME},
                    "idempotency id: a retry with it is stored once (within the dedup window)",
                ),
                Param("Phxq-Queue", "header", s.QUEUE, "put the message in this queue"),
                Param(
                    "Phxq-Delay",
                    "header",
                    DELAY,
                    "deliver after this many seconds (by the queue master's clock); the ack "
                    "then has a scheduled_id and no offset yet",
                ),
                Param(
                    "Phxq-Deliver-At",
                    "header",
                    DELIVER_AT,
                    "deliver at this UNIX time instead (not with Phxq-Delay)",
                ),
            ),
            json_body=BATCH,
            raw_body=True,
            permission="produce:{topic}",
            description=(
                "Any body that is not `Content-Type: application/json` is one message's "
                "payload, with its key, dedup id, queue and delay in `Phxq-*` headers and its "
                "message headers as `Phxq-Header-<Name>: value` (names are lowercased). A JSON "
                "body is a batch; the answer is then a list of acks in the same order. A batch "
                "is not atomic: on an error, retry the whole batch with the same dedup ids."
            ),
            errors=(400, 401, 403, 404, 408, 413, 429, 503),
            tags=("produce",),
        ),
        Route(
            "DELETE",
            f"{queue_routes}/scheduled/{{id}}",
            "cancel_scheduled",
            "Cancel a delayed message before it is released",
            h.cancel_scheduled,
            {
                "type": "object",
                "required": ["scheduled_id", "cancelled"],
                "properties": {
                    "scheduled_id": {"type": "string"},
                    "cancelled": {
                        "type": "boolean",
                        "description": "false: already released, or cancelled before",
                    },
                },
            },
            params=(
                TOPIC,
                QUEUE,
                Param(
                    "id",
                    "path",
                    s.OFFSET,
                    "the number after topic/queue/ in scheduled_id",
                    required=True,
                    example=1,
                ),
            ),
            permission="produce:{topic}",
            tags=("produce",),
        ),
        Route(
            "GET",
            f"{queue_routes}/messages",
            "dequeue",
            "Read messages of one queue in offset order (long poll with wait)",
            h.dequeue,
            {
                "type": "object",
                "required": ["messages"],
                "properties": {"messages": {"type": "array", "items": MESSAGE}},
            },
            params=(
                TOPIC,
                QUEUE,
                Param(
                    "group",
                    "query",
                    s.NAME,
                    "consumer group: without after, start after its committed cursor",
                ),
                Param(
                    "after",
                    "query",
                    s.OFFSET,
                    "return messages after this offset (default: the group's cursor, or the start)",
                ),
                Param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": 10000},
                    "at most this many messages (default 100)",
                    example=10,
                ),
                wait,
            ),
            permission="consume:{topic}:{group}",
            tags=("consume",),
        ),
        _pair_post(
            f"{queue_routes}/commit",
            "commit",
            "Commit a consumer group's cursor with the pair lock's fencing token",
            h.commit,
            CURSOR,
            COMMIT_BODY,
            {"group": "billing", "offset": 1048576, "token": 7},
            tag="consume",
        ),
        _pair_get(
            f"{queue_routes}/cursor",
            "cursor",
            "The committed cursor of a consumer group",
            h.cursor,
            CURSOR,
            tag="consume",
        ),
        _pair_post(
            f"{queue_routes}/seek",
            "seek",
            "Move a consumer group's cursor to an offset or a time (once, in the log)",
            h.seek,
            CURSOR,
            SEEK_BODY,
            {"group": "billing", "time": 1700000000},
            tag="consume",
            conflict=False,
        ),
        _pair_get(
            f"{queue_routes}/lock",
            "lock_get",
            "Who holds the (consumer group, topic, queue) lock",
            h.lock_get,
            LOCK,
            tag="locks",
        ),
        _pair_post(
            f"{queue_routes}/lock/acquire",
            "lock_acquire",
            "Acquire the pair lock; its token fences your commits",
            h.lock_acquire,
            LOCK,
            ACQUIRE_BODY,
            {"group": "billing", "owner": "reader-1", "ttl": 10},
            tag="locks",
            description=(
                "The same lock consumer daemons take for the pair, so an HTTP reader and a "
                "daemon never own it at once. 409 (code lock_held) while someone else holds "
                "it. Renew well within ttl."
            ),
        ),
        _pair_post(
            f"{queue_routes}/lock/renew",
            "lock_renew",
            "Extend the pair lock by its ttl",
            h.lock_renew,
            LOCK,
            TOKEN_BODY,
            {"group": "billing", "owner": "reader-1", "token": 7},
            tag="locks",
        ),
        _pair_post(
            f"{queue_routes}/lock/release",
            "lock_release",
            "Release the pair lock",
            h.lock_release,
            LOCK,
            TOKEN_BODY,
            {"group": "billing", "owner": "reader-1", "token": 7},
            tag="locks",
        ),
        Route(
            "GET",
            "/v1/topics/{topic}/stream",
            "stream",
            "Server-sent events: every new message of a topic (read-only tail)",
            stream,
            {"type": "string"},
            params=(
                TOPIC,
                Param(
                    "from",
                    "query",
                    {"type": "string", "enum": ["now", "start"]},
                    "where to start without group, after or Last-Event-ID (default now)",
                ),
                GROUP_Q,
                Param("queue", "query", s.QUEUE, "only this queue"),
                Param("after", "query", s.OFFSET, "start after this offset (with queue)"),
                Param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": 1000000},
                    "end the stream after this many messages",
                ),
                Param(
                    "timeout",
                    "query",
                    {"type": "number", "minimum": 0, "maximum": 86400},
                    "end the stream after this many seconds",
                    example=0.2,
                ),
                Param(
                    "Last-Event-ID",
                    "header",
                    {"type": "string", "maxLength": 65536, "pattern": r"^\d+:\d+(,\d+:\d+)*$"},
                    "resume after these positions (the id of the last event seen)",
                ),
            ),
            permission="consume:{topic}:{group}",
            media_type="text/event-stream",
            tags=("consume",),
        ),
        *txn_routes(),
        Route(
            "GET",
            "/v1/topics",
            "topics",
            "Every topic",
            h.topics,
            {
                "type": "object",
                "required": ["topics"],
                "properties": {"topics": {"type": "array", "items": TOPIC_INFO}},
            },
            tags=("admin",),
            errors=(401, 403, 429, 503),
        ),
        Route(
            "GET",
            "/v1/topics/{topic}",
            "topic",
            "One topic",
            h.topic,
            TOPIC_INFO,
            params=(TOPIC,),
            tags=("admin",),
        ),
        Route(
            "GET",
            "/v1/status",
            "status",
            "Every store's status (groups, masters, disk, consumer lag) and the consumer tier's "
            "(members, settings, pair owners), as phxq admin status",
            h.status,
            {
                "type": "object",
                "required": ["gateway", "stores"],
                "properties": {
                    "gateway": {"type": "object"},
                    "stores": {"type": "object", "additionalProperties": {"type": "object"}},
                    "ownership": {
                        "type": ["object", "null"],
                        "description": "consumers, settings and pair owners (null: no groups)",
                    },
                    "time": {"type": "number"},
                },
            },
            permission="admin",
            tags=("admin",),
            errors=(401, 403, 429, 503),
        ),
        Route(
            "GET",
            "/v1/lag",
            "lag",
            "Cursor, end and lag of every consumer group and queue, as phxq admin lag",
            h.lag,
            {
                "type": "object",
                "required": ["lag"],
                "properties": {"lag": {"type": "array", "items": LAG_ROW}},
            },
            params=(GROUP_Q,),
            permission="admin",
            tags=("admin",),
        ),
        Route(
            "GET",
            "/v1/openapi.json",
            "openapi",
            "This document",
            _openapi,
            {"type": "object"},
            permission=None,
            tags=("meta",),
            errors=(429,),
        ),
        Route(
            "GET",
            "/metrics",
            "metrics",
            "Prometheus metrics of this gateway (requests by operation and status, latency)",
            _metrics,
            {"type": "string"},
            permission=None,
            media_type="text/plain",
            tags=("meta",),
            errors=(429,),
        ),
    )
