"""Operating the consumer tier: what ``phxq admin lag|replay|limit|pause|resume`` and the
consumer part of ``phxq admin status`` do. The CLI only parses arguments and prints.

Public API (``client`` is a :class:`phxq.Client`, ``locks`` a lock client, see
:mod:`phxq.consumer.locking`)::

    await lag(cfg, client, group=None) -> list[LagRow]
    await replay(cfg, client, group, since=None | offset=None, queues=None) -> {queue: cursor}
    await set_limit(locks, cfg, group, messages=..., bytes_per_s=..., reset=False) -> dict
    await pause(locks, cfg, group);  await resume(locks, cfg, group)
    await ownership(cfg, locks) -> {"members": {name: weight}, "serving": {name: [group]},
                                    "pairs": [...]}
    parse_since(text, now=None) -> float          # epoch seconds
    open_locks(cfg) -> async context manager of phxq.lock.LockClient

**Replay** moves the consumer group's cursor of every queue (or the given ones) with the
store's one-shot ``seek``: to just before the first message enqueued at or after ``since``, or
just before ``offset``. The seek is an entry in the log, applied once; the owners notice the
moved cursor (their next compare-and-set commit fails, or their idle check sees it) within a
second and continue from it. Every message after the target is delivered again, once.

**Lag** is the number of messages after the committed cursor, per queue, as the master of the
queue's Paxos group counts it from its index (the store's ``status`` RPC).

**Limits and pause** live in the lock service's KV (:mod:`phxq.consumer.settings`); running
consumers pick them up within ``settings_poll`` (0.5 s). ``resume`` also bumps the group's
``unblock`` counter, which restarts pairs stopped by ``on_failure = "block"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from phxq import validate
from phxq.client import Client
from phxq.config import ClusterConfig, ConsumerGroupConfig, parse_duration
from phxq.consumer.assign import pair_lock_name, pairs_of
from phxq.consumer.settings import (
    MEMBERS_PREFIX,
    SETTINGS_PREFIX,
    group_settings,
    member_groups,
    members,
    paused_key,
    rate_key,
    unblock_key,
)
from phxq.errors import BadArgument, PhxqError, VersionMismatch
from phxq.render import size

CAS_RETRIES = 20
STATUS_LOCK_TIMEOUT = 3.0
KEEP: Any = object()  # set_limit: leave this limit as it is


@dataclass(frozen=True, slots=True)
class LagRow:
    group: str
    topic: str
    queue: int
    cursor: int | None
    end: int | None  # offset of the queue's last message (None: empty, or unknown)
    lag: int | None  # messages after the cursor (None: no master answered for the queue)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _groups(cfg: ClusterConfig, group: str | None) -> tuple[ConsumerGroupConfig, ...]:
    if group is None:
        return cfg.consumer_groups
    return (cfg.consumer_group(group),)


async def _queues(
    cfg: ClusterConfig, client: Client, spec: ConsumerGroupConfig, queues: Sequence[int] | None
) -> list[int]:
    cfg.topic(spec.topic)  # UnknownTopic if the config does not name it
    # The cluster map's count: topics grow online (phxq admin topic alter).
    count = (await client.cluster_map()).topics.get(spec.topic) or cfg.topic(spec.topic).queues
    if queues is None:
        return list(range(count))
    for q in queues:
        if not 0 <= q < count:
            raise BadArgument(f"topic {spec.topic!r} has queues 0..{count - 1}, not {q}")
    return list(queues)


async def lag(cfg: ClusterConfig, client: Client, *, group: str | None = None) -> list[LagRow]:
    """Cursor, last offset and lag of every pair of ``group`` (default: every group), as the
    master of each queue's Paxos group reports them in its ``status``. A pair whose group has
    no reachable master right now is reported with ``lag=None``."""
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    for store in cfg.stores:
        try:
            status = await client.status(store.addr)
        except PhxqError:
            continue  # a down store: the masters of its groups are elsewhere or unknown
        for row in status.get("consumers", []):
            found.setdefault((row["group"], row["topic"], row["queue"]), row)
    rows = []
    for spec in _groups(cfg, group):
        for q in await _queues(cfg, client, spec, None):
            row = found.get((spec.name, spec.topic, q))
            if row is None:
                rows.append(LagRow(spec.name, spec.topic, q, None, None, None))
            else:
                rows.append(LagRow(spec.name, spec.topic, q, row["cursor"], row["end"], row["lag"]))
    return rows


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds from ``text``: a number (epoch seconds), a duration meaning "that long
    ago" ("90s", "5m", "2h", "1d"), or an ISO 8601 time ("2024-05-01T12:00:00", local time
    unless it has an offset)."""
    now = time.time() if now is None else now
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value) and value >= 0:
            return value
        raise BadArgument(f"--since: {text!r} is not a time")
    with contextlib.suppress(ValueError):
        return now - parse_duration(text)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise BadArgument(
            f"--since: {text!r} is not epoch seconds, a duration ago (5m) or an ISO time"
        ) from exc


async def replay(
    cfg: ClusterConfig,
    client: Client,
    group: str,
    *,
    since: float | None = None,
    offset: int | None = None,
    queues: Sequence[int] | None = None,
) -> dict[int, int | None]:
    """Move ``group``'s cursors back (or forward), once; returns the new cursor per queue."""
    spec = cfg.consumer_group(group)
    if (since is None) == (offset is None):
        raise BadArgument("replay takes exactly one of --since or --offset")
    if offset is not None and (queues is None or len(queues) != 1):
        raise BadArgument("an offset belongs to one queue: give --queue with --offset")
    out = {}
    for q in await _queues(cfg, client, spec, queues):
        out[q] = await client.seek(spec.name, spec.topic, queue=q, offset=offset, time=since)
    return out


async def _update(locks: Any, key: str, change: Any) -> Any:
    """Compare-and-set ``key`` to ``change(old_value)``, retrying on concurrent writers."""
    for _ in range(CAS_RETRIES):
        value, version = await locks.kv_get(key)
        new = change(value)
        try:
            await locks.kv_put(key, new, expect_version=version)
        except VersionMismatch:
            continue
        return new
    raise VersionMismatch(f"{key}: too many concurrent writers, try again")


async def set_limit(
    locks: Any,
    cfg: ClusterConfig,
    group: str,
    *,
    messages: Any = KEEP,  # float | None
    bytes_per_s: Any = KEEP,  # int | None
    reset: bool = False,
) -> dict[str, Any]:
    """Set the group's runtime rate limit (``None``: unlimited; omitted: unchanged); ``reset``
    goes back to the config's values. Returns the limit now in force."""
    spec = cfg.consumer_group(group)
    for name, value in (("messages", messages), ("bytes", bytes_per_s)):
        if value is KEEP or value is None:
            continue
        validate.number(value, f"{name}/s", above=0, unit="per second (pause stops delivery)")
    if reset:
        await locks.kv_delete(rate_key(group))
        return {"messages": spec.rate_limit, "bytes": spec.rate_limit_bytes, "source": "config"}

    def change(old: Any) -> dict[str, Any]:
        base = (
            old
            if isinstance(old, dict)
            else {"messages": spec.rate_limit, "bytes": spec.rate_limit_bytes}
        )
        return {
            "messages": base.get("messages") if messages is KEEP else messages,
            "bytes": base.get("bytes") if bytes_per_s is KEEP else bytes_per_s,
        }

    new: dict[str, Any] = await _update(locks, rate_key(group), change)
    return {**new, "source": "runtime"}


async def pause(locks: Any, cfg: ClusterConfig, group: str) -> None:
    """Stop delivering ``group``'s messages (in-flight ones finish) until :func:`resume`."""
    cfg.consumer_group(group)
    await locks.kv_put(paused_key(group), True)


async def resume(locks: Any, cfg: ClusterConfig, group: str) -> None:
    """Undo :func:`pause`, and retry the message of every pair stopped by ``on_failure=block``."""
    cfg.consumer_group(group)
    await locks.kv_put(paused_key(group), False)
    await _update(locks, unblock_key(group), lambda old: (old if isinstance(old, int) else 0) + 1)


async def ownership(cfg: ClusterConfig, locks: Any) -> dict[str, Any]:
    """Live consumers (weight, consumer groups served), the settings in force per consumer group
    (paused, rate limits, whether they are the config's or set at runtime) and, per pair, the
    lock holder and its fencing token."""
    stored = await locks.kv_list(SETTINGS_PREFIX)
    settings = {}
    for spec in cfg.consumer_groups:
        now = group_settings(spec, stored)
        settings[spec.name] = {
            "paused": now.paused,
            "rate_limit": now.rate_limit,
            "rate_limit_bytes": now.rate_limit_bytes,
            "source": "runtime" if rate_key(spec.name) in stored else "config",
        }
    entries = await locks.kv_list(MEMBERS_PREFIX)
    live = members(entries)
    serving = {m: None if g is None else sorted(g) for m, g in member_groups(entries).items()}
    pairs = []
    for pair in pairs_of(cfg.consumer_groups, {t.name: t.queues for t in cfg.topics}):
        info = await locks.get(pair_lock_name(pair))
        pairs.append(
            {
                "group": pair[0],
                "topic": pair[1],
                "queue": pair[2],
                "owner": None if info is None else info.owner,
                "token": None if info is None else info.token,
                "expires_in": None if info is None else round(info.expires_in, 3),
            }
        )
    return {"members": live, "serving": serving, "settings": settings, "pairs": pairs}


@contextlib.asynccontextmanager
async def open_locks(cfg: ClusterConfig) -> AsyncIterator[Any]:
    """A connected ``phxq.lock.LockClient`` for the config's lock nodes."""
    if not cfg.locks:
        raise BadArgument(f"{cfg.source}: no [[lock]] nodes: the consumer tier needs them")
    from phxq.lock import LockClient
    from phxq.security.daemon import client_options

    async with LockClient([lk.addr for lk in cfg.locks], **client_options(cfg)) as locks:
        yield locks


async def consumer_status(cfg: ClusterConfig) -> dict[str, Any] | None:
    """:func:`ownership` through the config's lock nodes, for ``phxq admin status``; ``None``
    without consumer groups; ``{"error": ...}`` when the lock service cannot answer within
    ``STATUS_LOCK_TIMEOUT`` seconds (status reports the rest instead of waiting out the lock
    client's whole retry budget)."""
    if not cfg.consumer_groups:
        return None
    try:
        async with asyncio.timeout(STATUS_LOCK_TIMEOUT), open_locks(cfg) as locks:
            return await ownership(cfg, locks)
    except PhxqError as exc:
        return {"error": f"{type(exc).__name__}: {exc.message}"}
    except TimeoutError:
        return {"error": f"Unavailable: no answer within {STATUS_LOCK_TIMEOUT:g} s"}


def format_ownership(status: dict[str, Any]) -> list[str]:
    """Human lines for :func:`consumer_status`'s answer."""
    if "error" in status:
        return [f"consumers: lock service unavailable ({status['error']})"]
    live = ", ".join(f"{m} (weight {w:g})" for m, w in sorted(status["members"].items()))
    lines = [f"consumers: {live or 'none'}"]
    for group, now in sorted(status.get("settings", {}).items()):
        rate = "unlimited" if now["rate_limit"] is None else f"{now['rate_limit']:g} messages/s"
        if now["rate_limit_bytes"] is not None:
            rate += f", {size(now['rate_limit_bytes'])}/s"
        state = "PAUSED" if now["paused"] else "delivering"
        lines.append(f"consumer group {group}: {state}, {rate} ({now['source']})")
    lines.append("consumer group  topic  queue  owner  token")
    for p in status["pairs"]:
        owner = p["owner"] or "-"
        token = "-" if p["token"] is None else p["token"]
        lines.append(f"{p['group']:>14}  {p['topic']}  {p['queue']:5d}  {owner}  {token}")
    return lines
