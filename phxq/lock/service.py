"""The lock daemon's RPC handlers: validate a request, then propose an entry or read the state.

Every handler validates its params before touching anything: a bad request fails with
``BadArgument`` and nothing is proposed. Decisions come from the state machine's apply.

==========  ===================================================================================
meta        ``{}`` -> ``{nodes{id: addr}, master: id | None, serving: bool}`` (any node)
status      ``{}`` -> this node's view: meta plus ballot, epoch, chosen/applied, counts (any node)
acquire     ``{name, owner, ttl}`` -> token
renew       ``{name, owner, token}`` -> token
release     ``{name, owner, token, rid?}`` -> released (bool)
get         ``{name}`` -> ``[owner, token, expires_in] | None``
kv_get      ``{key}`` -> ``[value, version]`` (``[None, 0]`` when absent)
kv_put      ``{key, value, expect_version?, ttl?, rid?}`` -> version
kv_delete   ``{key, expect_version?, rid?}`` -> deleted (bool)
kv_list     ``{prefix}`` -> ``{key: [value, version]}``
kv_wait     ``{key, after_version, timeout}`` -> ``[value, version]``: at once if the key's version
            is above ``after_version`` (or the key is gone and ``after_version > 0``), else when
            that happens, else at ``timeout`` (at most ``MAX_WAIT`` seconds) with the current pair
==========  ===================================================================================

All but ``meta`` and ``status`` are master-only: a follower answers ``NotMaster(hint)``, a
master still starting its epoch ``Unavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from phxq import validate
from phxq.lock.entries import (
    MAX_NAME_CHARS,
    Acquire,
    KvDelete,
    KvPut,
    Release,
    Renew,
    check_name,
    check_rid,
    check_ttl,
    check_uint,
    check_value,
    check_version,
)

if TYPE_CHECKING:
    from phxq.lock.node import LockNode

MAX_WAIT = 60.0
WAIT_SLICE = 0.2  # a waiting kv_wait re-reads this often (a key may expire between sweeps)


def _ttl(params: dict[str, Any], *, optional: bool = False) -> float | None:
    value = params.get("ttl")
    if value is None and optional:
        return None
    return check_ttl(value)


async def meta(node: LockNode, params: dict[str, Any]) -> Any:
    return node.meta()


async def status(node: LockNode, params: dict[str, Any]) -> Any:
    return node.status()


async def acquire(node: LockNode, params: dict[str, Any]) -> Any:
    name = check_name(params.get("name"), "name")
    owner = check_name(params.get("owner"), "owner")
    ttl = check_ttl(params.get("ttl"))
    epoch = await node.serving_epoch()
    entry = Acquire(epoch, time.monotonic(), name, owner, ttl)
    return await node.propose(entry, confirm=True)


async def renew(node: LockNode, params: dict[str, Any]) -> Any:
    name = check_name(params.get("name"), "name")
    owner = check_name(params.get("owner"), "owner")
    token = check_uint(params.get("token"), "token")
    epoch = await node.serving_epoch()
    return await node.propose(Renew(epoch, time.monotonic(), name, owner, token), confirm=True)


async def release(node: LockNode, params: dict[str, Any]) -> Any:
    name = check_name(params.get("name"), "name")
    owner = check_name(params.get("owner"), "owner")
    token = check_uint(params.get("token"), "token")
    rid = check_rid(params.get("rid"))
    epoch = await node.serving_epoch()
    return await node.propose(Release(epoch, time.monotonic(), name, owner, token, rid))


async def get(node: LockNode, params: dict[str, Any]) -> Any:
    name = check_name(params.get("name"), "name")
    await node.serving_epoch()
    info = node.state.lock_info(name, time.monotonic())
    return None if info is None else [info.owner, info.token, info.expires_in]


async def kv_get(node: LockNode, params: dict[str, Any]) -> Any:
    key = check_name(params.get("key"), "key")
    await node.serving_epoch()
    return list(node.state.kv_get(key, time.monotonic()))


async def kv_put(node: LockNode, params: dict[str, Any]) -> Any:
    key = check_name(params.get("key"), "key")
    value = check_value(params.get("value"))
    expect = check_version(params.get("expect_version"), "expect_version")
    ttl = _ttl(params, optional=True)
    rid = check_rid(params.get("rid"))
    epoch = await node.serving_epoch()
    return await node.propose(KvPut(epoch, time.monotonic(), key, value, expect, ttl, rid))


async def kv_delete(node: LockNode, params: dict[str, Any]) -> Any:
    key = check_name(params.get("key"), "key")
    expect = check_version(params.get("expect_version"), "expect_version")
    rid = check_rid(params.get("rid"))
    epoch = await node.serving_epoch()
    return await node.propose(KvDelete(epoch, time.monotonic(), key, expect, rid))


async def kv_list(node: LockNode, params: dict[str, Any]) -> Any:
    prefix = validate.text(params.get("prefix", ""), "prefix", max_chars=MAX_NAME_CHARS)
    await node.serving_epoch()
    return {k: list(v) for k, v in node.state.kv_list(prefix, time.monotonic()).items()}


def _changed(version: int, after: int) -> bool:
    return version > after or (version == 0 and after > 0)


async def kv_wait(node: LockNode, params: dict[str, Any]) -> Any:
    key = check_name(params.get("key"), "key")
    after = check_uint(params.get("after_version"), "after_version")
    timeout = validate.number(
        params.get("timeout"), "timeout", minimum=0, maximum=MAX_WAIT, unit="seconds"
    )
    deadline = time.monotonic() + timeout
    while True:
        await node.serving_epoch()
        now = time.monotonic()
        value, version = node.state.kv_get(key, now)
        if _changed(version, after) or now >= deadline:
            return [value, version]
        await node.wait_change(key, min(deadline - now, WAIT_SLICE))


HANDLERS: dict[str, Callable[[LockNode, dict[str, Any]], Awaitable[Any]]] = {
    "meta": meta,
    "status": status,
    "acquire": acquire,
    "renew": renew,
    "release": release,
    "get": get,
    "kv_get": kv_get,
    "kv_put": kv_put,
    "kv_delete": kv_delete,
    "kv_list": kv_list,
    "kv_wait": kv_wait,
}
