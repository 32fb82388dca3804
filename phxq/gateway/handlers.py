"""What each ``/v1`` operation does: the client call behind it and the JSON it answers.

A handler gets a :class:`Call` whose parameters and body the router has already parsed and
checked against the route's schemas (:mod:`phxq.gateway.routes`); it calls the store client
(``phxq.Client``) or the lock client and returns a JSON-able value, or raises a
:class:`phxq.errors.PhxqError` / :class:`~phxq.gateway.problems.Problem` that the server turns
into a problem answer. Handlers keep no state: any gateway can serve any request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from phxq.errors import BadArgument, PhxqError, UnknownTopic

if TYPE_CHECKING:
    from aiohttp import web

    from phxq.client import Ack, Client, Message
    from phxq.config import ClusterConfig
    from phxq.gateway.groups import KnownGroups
    from phxq.lock.client import LockClient

HEADER_PREFIX = "Phxq-Header-"


class Backend(Protocol):
    """What handlers use of the gateway: its clients, its config and its limits."""

    client: Client
    config: ClusterConfig
    groups: KnownGroups  # the config's consumer groups and topics plus the map's (online)
    max_wait: float

    def lock_client(self) -> LockClient: ...
    def describe(self) -> dict[str, Any]: ...
    def openapi(self) -> dict[str, Any]: ...
    def metrics_text(self) -> bytes: ...


@dataclass(slots=True)
class Call:
    """One request, parsed: ``args`` by :attr:`Param.key`, ``body`` as JSON, bytes or None."""

    backend: Backend
    args: dict[str, Any]
    body: Any
    request: web.Request


# ----------------------------------------------------------------------------- produce


def ack_json(ack: Ack) -> dict[str, Any]:
    return {
        "topic": ack.topic,
        "queue": ack.queue,
        "offset": ack.offset,
        "duplicate": ack.duplicate,
        "scheduled_id": ack.scheduled_id,
    }


_JSON_NAMES: dict[str, str] = {}  # topic -> its JSON string (topics repeat; bounded below)


def ack_bytes(ack: Ack) -> bytes:
    """``json.dumps(ack_json(ack)).encode()``, byte for byte, without building the dict: the
    answer of every single-message enqueue."""
    topic = _JSON_NAMES.get(ack.topic)
    if topic is None:
        if len(_JSON_NAMES) >= 4096:
            _JSON_NAMES.clear()
        topic = _JSON_NAMES[ack.topic] = json.dumps(ack.topic)
    offset = "null" if ack.offset is None else int(ack.offset)
    sid = "null" if ack.scheduled_id is None else json.dumps(ack.scheduled_id)
    duplicate = "true" if ack.duplicate else "false"
    return (
        f'{{"topic": {topic}, "queue": {int(ack.queue)}, "offset": {offset}, '
        f'"duplicate": {duplicate}, "scheduled_id": {sid}}}'
    ).encode()


def message_headers(request: web.Request) -> dict[str, str]:
    """``Phxq-Header-<Name>: value`` -> ``{name: value}``; names lowercased (HTTP header names
    are case-insensitive, and clients such as fetch lowercase them)."""
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.lower().startswith(HEADER_PREFIX.lower()):
            header = name[len(HEADER_PREFIX) :].lower()
            if not header:
                raise BadArgument(f"a {HEADER_PREFIX}<Name> header needs a name")
            out[header] = value
    return out


async def _enqueue_one(backend: Backend, topic: str, payload: bytes, item: dict[str, Any]) -> Ack:
    return await backend.client.enqueue(
        topic,
        payload,
        key=item.get("key"),
        queue=item.get("queue"),
        dedup_id=item.get("dedup_id"),
        headers=item.get("headers") or None,
        delay=item.get("delay"),
        deliver_at=item.get("deliver_at"),
    )


async def enqueue(call: Call) -> Any:
    args = call.args
    topic = args["topic"]
    body = call.body
    if isinstance(body, bytes | bytearray):  # one message: the hot path, kept short
        headers = message_headers(call.request)
        if len(headers) > 64:
            raise BadArgument("at most 64 Phxq-Header-<Name> headers")
        ack = await call.backend.client.enqueue(
            topic,
            body if type(body) is bytes else bytes(body),
            key=args.get("key"),
            queue=args.get("queue"),
            dedup_id=args.get("dedup_id"),
            headers=headers or None,
            delay=args.get("delay"),
            deliver_at=args.get("deliver_at"),
        )
        return ack_bytes(ack)  # the route's media type: application/json
    given = [p for p in ("key", "queue", "dedup_id", "delay", "deliver_at") if p in call.args]
    if given or message_headers(call.request):
        raise BadArgument(
            "a JSON batch takes key, queue, dedup_id, delay, deliver_at and headers per "
            "message, not as Phxq-* headers"
        )
    messages = call.body["messages"]
    payloads = []
    for i, item in enumerate(messages):
        try:
            payloads.append(base64.b64decode(item["payload_base64"], validate=True))
        except (binascii.Error, ValueError):
            raise BadArgument(f"body.messages[{i}].payload_base64 is not base64") from None
    # Submitted together, the messages leave in as few requests as the client's batcher makes
    # (one per Paxos group). Every one is awaited, so none is left running after an error.
    results = await asyncio.gather(
        *(_enqueue_one(call.backend, topic, p, m) for p, m in zip(payloads, messages, strict=True)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [ack_json(r) for r in results]  # type: ignore[arg-type]


async def cancel_scheduled(call: Call) -> Any:
    a = call.args
    scheduled_id = f"{a['topic']}/{a['queue']}/{a['id']}"
    cancelled = await call.backend.client.cancel_scheduled(scheduled_id)
    return {"scheduled_id": scheduled_id, "cancelled": cancelled}


# -------------------------------------------------------------------------------- read


def message_json(msg: Message) -> dict[str, Any]:
    return {
        "queue": msg.queue,
        "offset": msg.offset,
        "key": msg.key,
        "headers": msg.headers,
        "payload_base64": base64.b64encode(msg.payload).decode("ascii"),
        "enqueued_at": msg.enqueued_at,
    }


def _wait(call: Call) -> float:
    wait = float(call.args.get("wait") or 0.0)
    if wait > call.backend.max_wait:
        raise BadArgument(f"wait must be at most {call.backend.max_wait:g} seconds")
    return wait


async def dequeue(call: Call) -> Any:
    a = call.args
    messages = await call.backend.client.dequeue(
        a.get("group"),
        a["topic"],
        queue=a["queue"],
        after=a.get("after"),
        limit=a.get("limit", 100),
        wait=_wait(call),
    )
    return {"messages": [message_json(m) for m in messages]}


async def commit(call: Call) -> Any:
    a, body = call.args, call.body
    options: dict[str, Any] = {}
    if "expect" in body:
        options["expect"] = body["expect"]
    await call.backend.client.commit(
        body["group"],
        a["topic"],
        queue=a["queue"],
        offset=body["offset"],
        token=body["token"],
        **options,
    )
    return {
        "group": body["group"],
        "topic": a["topic"],
        "queue": a["queue"],
        "cursor": body["offset"],
    }


async def cursor(call: Call) -> Any:
    a = call.args
    value = await call.backend.client.cursor(a["group"], a["topic"], queue=a["queue"])
    return {"group": a["group"], "topic": a["topic"], "queue": a["queue"], "cursor": value}


async def seek(call: Call) -> Any:
    a, body = call.args, call.body
    if ("offset" in body) == ("time" in body):
        raise BadArgument("seek takes exactly one of offset or time")
    value = await call.backend.client.seek(
        body["group"],
        a["topic"],
        queue=a["queue"],
        offset=body.get("offset"),
        time=body.get("time"),
    )
    return {"group": body["group"], "topic": a["topic"], "queue": a["queue"], "cursor": value}


# ------------------------------------------------------------------------------- locks


def pair_lock(group: str, topic: str, queue: int) -> str:
    """The lock guarding (consumer group, topic, queue): the one consumer daemons take too, so
    an HTTP reader and a daemon never own the same pair at once."""
    from phxq.consumer.assign import pair_lock_name

    return pair_lock_name((group, topic, queue))


async def _check_queue(call: Call) -> str:
    a = call.args
    group = a.get("group") or call.body["group"]
    cmap = await call.backend.client.cluster_map()
    queues = cmap.topics.get(a["topic"])
    if queues is None or a["queue"] >= queues:  # created or grown online: ask the stores again
        queues = (await call.backend.client.cluster_map(refresh=True)).topics.get(a["topic"])
    if queues is None:
        raise UnknownTopic(f"unknown topic {a['topic']!r}", {"topic": a["topic"]})
    if a["queue"] >= queues:
        raise BadArgument(f"queue must be in [0, {queues}), got {a['queue']}")
    return pair_lock(group, a["topic"], a["queue"])


async def lock_acquire(call: Call) -> Any:
    name = await _check_queue(call)
    body = call.body
    token = await call.backend.lock_client().acquire(name, body["owner"], body["ttl"])
    return {"lock": name, "owner": body["owner"], "token": token, "ttl": body["ttl"]}


async def lock_renew(call: Call) -> Any:
    name = await _check_queue(call)
    body = call.body
    await call.backend.lock_client().renew(name, body["owner"], body["token"])
    return {"lock": name, "owner": body["owner"], "token": body["token"]}


async def lock_release(call: Call) -> Any:
    name = await _check_queue(call)
    body = call.body
    released = await call.backend.lock_client().release(name, body["owner"], body["token"])
    return {"lock": name, "released": released}


async def lock_get(call: Call) -> Any:
    name = await _check_queue(call)
    info = await call.backend.lock_client().get(name)
    if info is None:
        return {"lock": name, "held": False, "owner": None, "token": None, "expires_in": None}
    return {
        "lock": name,
        "held": True,
        "owner": info.owner,
        "token": info.token,
        "expires_in": round(info.expires_in, 3),
    }


# ------------------------------------------------------------------------------- admin


async def _topics(backend: Backend) -> list[dict[str, Any]]:
    cmap = await backend.client.cluster_map(refresh=True)
    cfg = await backend.groups.config(refresh=True)  # topics and groups created online too
    out = []
    for name, queues in sorted(cmap.topics.items()):
        spec = cfg.topics_by_name.get(name)
        groups = [g.name for g in cfg.consumer_groups_for(name)]
        out.append(
            {
                "name": name,
                "queues": queues,
                "retention_seconds": None if spec is None else spec.retention,
                "retention_bytes": None if spec is None else spec.retention_bytes,
                "max_message_bytes": None if spec is None else spec.max_message_bytes,
                "consumer_groups": groups,
            }
        )
    return out


async def topics(call: Call) -> Any:
    return {"topics": await _topics(call.backend)}


async def topic(call: Call) -> Any:
    name = call.args["topic"]
    for row in await _topics(call.backend):
        if row["name"] == name:
            return row
    raise UnknownTopic(f"unknown topic {name!r}", {"topic": name})


async def status(call: Call) -> Any:
    backend = call.backend
    stores: dict[str, Any] = {}
    for store in backend.config.stores:
        try:
            stores[str(store.id)] = await backend.client.status(store.addr)
        except PhxqError as exc:
            stores[str(store.id)] = {"error": f"{type(exc).__name__}: {exc.message}"}
    ownership: dict[str, Any] | None = None  # as phxq admin status: None without consumer groups
    cfg = await backend.groups.config(refresh=True)
    if cfg.consumer_groups and cfg.locks:
        from phxq.consumer import admin as consumer_admin

        try:
            ownership = await consumer_admin.ownership(cfg, backend.lock_client())
        except PhxqError as exc:
            ownership = {"error": f"{type(exc).__name__}: {exc.message}"}
    return {
        "gateway": backend.describe(),
        "stores": stores,
        "ownership": ownership,
        "time": time.time(),
    }


async def lag(call: Call) -> Any:
    from phxq.consumer import admin as consumer_admin

    backend = call.backend
    group = call.args.get("group")
    if group is None:
        cfg = await backend.groups.config(refresh=True)
    else:
        await backend.groups.require(group)  # 404 if neither the config nor the map has it
        cfg = await backend.groups.config()
    rows = await consumer_admin.lag(cfg, backend.client, group=group)
    return {"lag": [r.to_json() for r in rows]}
