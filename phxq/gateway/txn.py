"""Transactions over HTTP: prepare a set of messages, then commit or roll them back by id.

::

    POST /v1/transactions                   {"messages": [{"topic", "payload_base64", ...}]}
        -> {"id", "txn", "state": "prepared", "topics", "messages", ...}
    POST /v1/transactions/{id}/commit       -> {"id", "txn", "state": "committed", "released"}
    POST /v1/transactions/{id}/rollback     -> {"id", "txn", "state": "rolled_back", ...}
    GET  /v1/transactions/{id}              -> {"id", "txn", "state"}

The gateway keeps no state, so the ``id`` it answers is a **handle** carrying all a gateway
needs to decide the transaction later: a random nonce, the transaction's topics and one
``(topic, queue)`` in each group it wrote (the home's first; :attr:`Transaction.participants`),
as base64url JSON. The store's transaction id (``txn``: what check-back handlers and ``phxq
admin txn`` show) is *derived* from the handle: ``sha256(nonce, sorted topics)``. So a handle
cannot be edited to name other topics -- that names another (never prepared) transaction --,
and deciding needs ``produce:T`` on every topic of the transaction, checked before any store
is asked, as for preparing it. The nonce's 128 random bits make ids unguessable: whoever holds
a handle (and those permissions) may decide it, not only the principal that prepared it
(the store does not record principals; an operator decides with ``phxq admin txn resolve``).

First decision wins (the home group's log, :mod:`phxq.store.txn`): repeating it answers it
again (200); a contradicting one answers 409 with the decided ``state``
(``txn_aborted``: it was rolled back; ``txn_committed``: it was committed). A handle whose
transaction the home group does not know (never prepared, or finished and forgotten after an
hour) answers 404 -- the decision written then concerns nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Final

from phxq.client.txn import DEFAULT_TIMEOUT, decide, decision_of
from phxq.errors import BadArgument, PhxqError
from phxq.gateway import schema as s
from phxq.gateway.handlers import Call
from phxq.gateway.problems import problem
from phxq.gateway.shapes import BATCH_ITEM, MAX_BATCH
from phxq.gateway.table import Param, Route
from phxq.security.principals import Permission

MAX_TOPICS: Final = 16  # distinct topics in one transaction: bounds the handle (it is in URLs)
MAX_HANDLE: Final = 7000  # characters: the handle plus the route fit aiohttp's 8190-byte line
_NONCE = re.compile(r"^[0-9a-f]{32}$")

TXN_MESSAGE = {
    **BATCH_ITEM,
    "required": ["topic", "payload_base64"],
    "properties": {
        "topic": s.NAME,
        **{
            k: v
            for k, v in BATCH_ITEM["properties"].items()  # type: ignore[attr-defined]
            if k not in ("delay", "deliver_at")
        },
    },
}
PREPARE_BODY = {
    "type": "object",
    "required": ["messages"],
    "additionalProperties": False,
    "properties": {
        "producer_group": {
            **s.NAME,
            "type": ["string", "null"],
            "description": "[[producer_group]] whose check-back decides it if you do not",
        },
        "timeout": {
            "type": "number",
            "minimum": 0.001,
            "maximum": 86400,
            "description": f"seconds to decide before the store checks back or rolls back "
            f"(default {DEFAULT_TIMEOUT:g})",
        },
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH,
            "items": TXN_MESSAGE,
        },
    },
}
STATE = {"type": "string", "enum": ["prepared", "committed", "rolled_back", "undecided"]}
TXN_ANSWER = {
    "type": "object",
    "required": ["id", "txn", "state"],
    "properties": {
        "id": {"type": "string", "description": "the handle: commit, roll back or look it up"},
        "txn": {"type": "string", "description": "the store's transaction id"},
        "state": STATE,
        "topics": {"type": "array", "items": {"type": "string"}},
        "messages": {"type": "integer", "description": "half messages prepared"},
        "producer_group": {"type": ["string", "null"]},
        "timeout": {"type": "number"},
        "reason": {"type": ["string", "null"], "description": "who decided (producer, ...)"},
        "released": {
            "type": "array",
            "description": "offsets given at commit by this call (per queue in order)",
            "items": {
                "type": "object",
                "required": ["topic", "queue", "offset"],
                "properties": {
                    "topic": {"type": "string"},
                    "queue": {"type": "integer"},
                    "offset": {"type": "integer"},
                },
            },
        },
    },
}
ID = Param(
    "id",
    "path",
    {"type": "string", "minLength": 1, "maxLength": MAX_HANDLE, "pattern": r"^[A-Za-z0-9_-]+$"},
    "the transaction's handle (the id prepare answered)",
    required=True,
    example="eyJuIjogIjAifQ",
)


@dataclass(frozen=True, slots=True)
class Handle:
    """A decoded transaction handle (see the module docstring)."""

    nonce: str
    topics: tuple[str, ...]
    participants: tuple[tuple[str, int], ...]

    @property
    def txn(self) -> str:
        """The store's transaction id: bound to the nonce and the topics."""
        digest = hashlib.sha256(("\n".join((self.nonce, *self.topics))).encode())
        return digest.hexdigest()[:32]

    def encode(self) -> str:
        index = {t: i for i, t in enumerate(self.topics)}
        parts = [[index[t], q] for t, q in self.participants]
        body: dict[str, Any] = {"n": self.nonce, "t": list(self.topics), "p": parts}
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Handle:
        """``not_found`` (404) for anything that is not a handle this gateway made."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            body = json.loads(raw)
            nonce, topics, parts = body["n"], body["t"], body["p"]
            ok = (
                isinstance(nonce, str)
                and _NONCE.match(nonce) is not None
                and isinstance(topics, list)
                and 0 < len(topics) <= MAX_TOPICS
                and all(isinstance(t, str) and 0 < len(t) <= s.NAME_MAX for t in topics)
                and topics == sorted(set(topics))
                and isinstance(parts, list)
                and parts
                and all(
                    isinstance(p, list)
                    and len(p) == 2
                    and all(type(x) is int for x in p)
                    and 0 <= p[0] < len(topics)
                    and 0 <= p[1] <= s.QUEUE["maximum"]
                    for p in parts
                )
            )
        except (binascii.Error, ValueError, TypeError, KeyError, RecursionError):
            ok = False
        if not ok:
            raise problem("not_found", "no such transaction (not a transaction id)")
        return cls(nonce, tuple(topics), tuple((topics[t], q) for t, q in parts))


def _produce_all(topics: Any) -> tuple[Permission, ...]:
    return tuple(Permission.produce(t) for t in sorted(set(topics)))


def _prepare_needs(values: dict[str, Any]) -> tuple[Permission, ...]:
    return _produce_all(m["topic"] for m in values["messages"])


def _handle_needs(values: dict[str, Any]) -> tuple[Permission, ...]:
    return _produce_all(Handle.decode(values["id"]).topics)


def _payloads(messages: list[dict[str, Any]]) -> list[bytes]:
    out = []
    for i, item in enumerate(messages):
        try:
            out.append(base64.b64decode(item["payload_base64"], validate=True))
        except (binascii.Error, ValueError):
            raise BadArgument(f"body.messages[{i}].payload_base64 is not base64") from None
    return out


async def prepare(call: Call) -> Any:
    body = call.body
    messages = body["messages"]
    topics = tuple(sorted({m["topic"] for m in messages}))
    if len(topics) > MAX_TOPICS:
        raise BadArgument(f"a transaction over HTTP spans at most {MAX_TOPICS} topics")
    payloads = _payloads(messages)
    timeout = body.get("timeout", DEFAULT_TIMEOUT)
    txn = call.backend.client.transaction(body.get("producer_group"), timeout=timeout)
    nonce = os.urandom(16).hex()
    txn.id = Handle(nonce, topics, ()).txn
    for payload, m in zip(payloads, messages, strict=True):
        await txn.enqueue(
            m["topic"],
            payload,
            key=m.get("key"),
            queue=m.get("queue"),
            dedup_id=m.get("dedup_id"),
            headers=m.get("headers") or None,
        )
    try:
        await txn.prepare()
    except Exception:
        # Whatever was prepared must not wait for the timeout; the original error matters more
        # (if this fails too, the store rolls it back at its timeout).
        with contextlib.suppress(PhxqError):
            await txn.rollback()
        raise
    handle = Handle(nonce, topics, tuple(txn.participants)).encode()
    if len(handle) > MAX_HANDLE:  # only with many long topic names over many groups
        await txn.rollback()
        raise BadArgument(
            "this transaction's topics and groups do not fit in a handle; rolled back"
        )
    return {
        "id": handle,
        "txn": txn.id,
        "state": "prepared",
        "topics": list(topics),
        "messages": len(messages),
        "producer_group": txn.producer_group,
        "timeout": txn.timeout,
    }


async def _decide(call: Call, commit: bool) -> Any:
    handle = Handle.decode(call.args["id"])
    txn = handle.txn
    found = await decide(call.backend.client, txn, list(handle.participants), commit)
    if not found.known:
        raise problem(
            "not_found",
            f"no transaction {txn}: never prepared, or finished over an hour ago",
            txn=txn,
        )
    decided = found.commit
    state = "committed" if decided else "rolled_back"
    if decided != commit:
        code = "txn_committed" if decided else "txn_aborted"
        raise problem(
            code, f"transaction {txn} is already {state.replace('_', ' ')}", state=state, txn=txn
        )
    return {
        "id": call.args["id"],
        "txn": txn,
        "state": state,
        "reason": found.reason,
        "released": [{"topic": t, "queue": q, "offset": o} for t, q, o in found.released],
    }


async def commit(call: Call) -> Any:
    return await _decide(call, True)


async def rollback(call: Call) -> Any:
    return await _decide(call, False)


async def get(call: Call) -> Any:
    handle = Handle.decode(call.args["id"])
    decided = await decision_of(call.backend.client, handle.txn, handle.participants[0])
    state = "undecided" if decided is None else ("committed" if decided else "rolled_back")
    return {"id": call.args["id"], "txn": handle.txn, "state": state, "topics": list(handle.topics)}


ERRORS: Final = (400, 401, 403, 404, 409, 413, 429, 503)


def txn_routes() -> tuple[Route, ...]:
    """The transaction routes of the ``/v1`` table (:func:`phxq.gateway.routes.build_routes`)."""
    everyone = "produce:{topic} for every topic of the transaction"
    decision = (
        "First decision wins: the same decision again answers it again; a contradicting one "
        "answers 409 (`txn_aborted`: it was rolled back, e.g. past its timeout; "
        "`txn_committed`) with the decided `state`. Any gateway may be asked: the id carries "
        "what it needs."
    )
    return (
        Route(
            "POST",
            "/v1/transactions",
            "txn_prepare",
            "Prepare a transaction: its messages become durable and invisible until committed",
            prepare,
            TXN_ANSWER,
            json_body=PREPARE_BODY,
            permission=everyone,
            permissions=_prepare_needs,
            description=(
                "Messages over any topics (at most 16), queues and groups, each as in a JSON "
                "batch. When it answers, every message is durable on a majority and readable "
                "by nobody; decide with the answer's id before `timeout` seconds, or the store "
                "asks the producer group's check-back handler (without one: rolls back)."
            ),
            errors=ERRORS,
            tags=("transactions",),
            body_example={"messages": [{"topic": "orders", "payload_base64": "aGk="}]},
        ),
        Route(
            "POST",
            "/v1/transactions/{id}/commit",
            "txn_commit",
            "Commit: every message of the transaction becomes readable (offsets assigned now)",
            commit,
            TXN_ANSWER,
            params=(ID,),
            permission=everyone,
            permissions=_handle_needs,
            description=decision,
            errors=ERRORS,
            tags=("transactions",),
        ),
        Route(
            "POST",
            "/v1/transactions/{id}/rollback",
            "txn_rollback",
            "Roll back: no message of the transaction ever becomes readable",
            rollback,
            TXN_ANSWER,
            params=(ID,),
            permission=everyone,
            permissions=_handle_needs,
            description=decision,
            errors=ERRORS,
            tags=("transactions",),
        ),
        Route(
            "GET",
            "/v1/transactions/{id}",
            "txn_get",
            "A transaction's decision as its home group knows it",
            get,
            TXN_ANSWER,
            params=(ID,),
            permission=everyone,
            permissions=_handle_needs,
            description=(
                "`undecided`: prepared and not decided yet (answered after about 2 s), or "
                "unknown to the home group (finished over an hour ago)."
            ),
            errors=(400, 401, 403, 404, 429, 503),
            tags=("transactions",),
        ),
    )
