"""The JSON shapes of the ``/v1`` requests and answers, as JSON Schema (the subset
:mod:`phxq.gateway.schema` validates). The route table (:mod:`phxq.gateway.routes`) refers to
them; the OpenAPI document carries them verbatim."""

from __future__ import annotations

from phxq.client.client import MAX_SCHEDULE_SECONDS
from phxq.gateway import schema as s

MAX_BATCH = 4096  # messages in one JSON batch (the client's largest request)

ACK = {
    "type": "object",
    "required": ["topic", "queue", "offset", "duplicate", "scheduled_id"],
    "properties": {
        "topic": {"type": "string"},
        "queue": {"type": "integer"},
        "offset": {
            "type": ["integer", "null"],
            "description": "the message's id within its queue (null: delayed, not released yet)",
        },
        "scheduled_id": {
            "type": ["string", "null"],
            "description": "a delayed message's id, topic/queue/number (to cancel it)",
        },
        "duplicate": {
            "type": "boolean",
            "description": "true: a retry of an enqueue already stored (same dedup id)",
        },
    },
}
MESSAGE = {
    "type": "object",
    "required": ["queue", "offset", "key", "headers", "payload_base64", "enqueued_at"],
    "properties": {
        "queue": {"type": "integer"},
        "offset": {"type": "integer"},
        "key": {"type": ["string", "null"]},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "payload_base64": {"type": "string"},
        "enqueued_at": {"type": "number", "description": "seconds since the epoch"},
    },
}
DELAY = {"type": "number", "minimum": 0, "maximum": MAX_SCHEDULE_SECONDS}
DELIVER_AT = {"type": "number", "minimum": 0, "maximum": 1e11}
BATCH_ITEM = {
    "type": "object",
    "required": ["payload_base64"],
    "additionalProperties": False,
    "properties": {
        "payload_base64": {"type": "string", "description": "the payload, base64 (RFC 4648)"},
        "key": {**s.NAME, "type": ["string", "null"], "maxLength": 1024},
        "dedup_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
        "headers": s.HEADERS,
        "queue": {**s.QUEUE, "type": ["integer", "null"]},
        "delay": {**DELAY, "type": ["number", "null"]},
        "deliver_at": {**DELIVER_AT, "type": ["number", "null"]},
    },
}
BATCH = {
    "type": "object",
    "required": ["messages"],
    "additionalProperties": False,
    "properties": {
        "messages": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": BATCH_ITEM}
    },
}
CURSOR = {
    "type": "object",
    "required": ["group", "topic", "queue", "cursor"],
    "properties": {
        "group": {"type": "string"},
        "topic": {"type": "string"},
        "queue": {"type": "integer"},
        "cursor": {"type": ["integer", "null"], "description": "last processed offset"},
    },
}
COMMIT_BODY = {
    "type": "object",
    "required": ["group", "offset", "token"],
    "additionalProperties": False,
    "properties": {
        "group": s.NAME,
        "offset": s.OFFSET,
        "token": {**s.TOKEN, "description": "the fencing token of the pair's lock"},
        "expect": {
            **s.OFFSET,
            "type": ["integer", "null"],
            "description": "compare-and-set: the cursor must be this (null: none yet)",
        },
    },
}
SEEK_BODY = {
    "type": "object",
    "required": ["group"],
    "additionalProperties": False,
    "properties": {
        "group": s.NAME,
        "offset": {**s.OFFSET, "description": "deliver this offset next"},
        "time": {
            "type": "number",
            "minimum": 0,
            "maximum": 1e11,
            "description": "deliver the first message enqueued at or after (epoch seconds)",
        },
    },
}
OWNER = {**s.NAME, "description": "who holds the lock (your reader's unique name)"}
ACQUIRE_BODY = {
    "type": "object",
    "required": ["group", "owner", "ttl"],
    "additionalProperties": False,
    "properties": {
        "group": s.NAME,
        "owner": OWNER,
        "ttl": {"type": "number", "minimum": 0.1, "maximum": 3600, "description": "seconds"},
    },
}
TOKEN_BODY = {
    "type": "object",
    "required": ["group", "owner", "token"],
    "additionalProperties": False,
    "properties": {"group": s.NAME, "owner": OWNER, "token": s.TOKEN},
}
LOCK = {
    "type": "object",
    "required": ["lock"],
    "properties": {
        "lock": {"type": "string"},
        "owner": {"type": ["string", "null"]},
        "token": {"type": ["integer", "null"]},
        "ttl": {"type": "number"},
        "held": {"type": "boolean"},
        "released": {"type": "boolean"},
        "expires_in": {"type": ["number", "null"]},
    },
}
TOPIC_INFO = {
    "type": "object",
    "required": ["name", "queues", "consumer_groups"],
    "properties": {
        "name": {"type": "string"},
        "queues": {"type": "integer"},
        "retention_seconds": {"type": ["number", "null"]},
        "retention_bytes": {"type": ["integer", "null"]},
        "max_message_bytes": {"type": ["integer", "null"]},
        "consumer_groups": {"type": "array", "items": {"type": "string"}},
    },
}
LAG_ROW = {
    "type": "object",
    "required": ["group", "topic", "queue", "cursor", "end", "lag"],
    "properties": {
        "group": {"type": "string"},
        "topic": {"type": "string"},
        "queue": {"type": "integer"},
        "cursor": {"type": ["integer", "null"]},
        "end": {"type": ["integer", "null"]},
        "lag": {"type": ["integer", "null"]},
    },
}
