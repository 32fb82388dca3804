"""Admin operations as functions returning data: what ``phxq admin ...`` prints (DESIGN.md §8).

Each function takes the cluster config, opens the connections it needs (the stores through
``phxq.Client``, the lock service through ``phxq.LockClient``), and closes them before it
returns. The CLI only parses arguments, calls one of these and prints the result::

    await status(cfg) -> ClusterStatus             # stores, groups, masters, disk, consumers
    await lag(cfg, group=None) -> list[LagRow]     # cursor, end and lag per (group, queue)
    await replay(cfg, group, since=T | offset=O, queues=None) -> {queue: new cursor}
    await set_limit(cfg, group, messages=..., bytes_per_s=..., reset=False) -> dict
    await pause(cfg, group);  await resume(cfg, group)
    await reconcile(cfg, topic, group=None, since=None, until=None) -> Report
    parse_since(text, now=None) -> float           # "5m", epoch seconds or ISO time
    await txn_list(cfg) -> list[dict]              # open transactions: group, home, age, ...
    await txn_resolve(cfg, txn, commit) -> dict    # an operator's decision (first one wins)
    await topic_create|topic_alter|topic_list|topic_describe(cfg, ...)  # phxq.topics: online
    await queue_move(cfg, topic, queue, to_set, wait=True) / queue_move_cancel(...)  # phxq.moves
    await group_create(cfg, name, topic=, handler=, ...);  await group_list(cfg)  # phxq.groupadmin
    await group_delete(cfg, name) -> dict          # cursors kept; config groups refused

Errors are the ``phxq.errors`` tree: ``ConfigError`` for a name the config does not have,
``BadArgument`` for a bad combination, ``Unavailable`` when the cluster cannot answer. A store
that is down is not an error for ``status`` (it is reported as down); the consumer daemon and
tools that already hold a client use :mod:`phxq.consumer.admin`, which these wrap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from phxq.client import Client
from phxq.config import ClusterConfig
from phxq.consumer import admin as consumer_admin
from phxq.consumer.admin import KEEP, LagRow, parse_since
from phxq.errors import BadArgument, NotMaster, PhxqError, Unavailable
from phxq.groupadmin import group_create, group_delete, group_list, with_map_groups
from phxq.moves import queue_move, queue_move_cancel
from phxq.security.daemon import client_options, tool_pool
from phxq.store.reconcile import Report
from phxq.store.reconcile import reconcile as _reconcile
from phxq.topics import topic_alter, topic_create, topic_describe, topic_list

__all__ = [
    "KEEP",
    "ClusterStatus",
    "LagRow",
    "Report",
    "group_create",
    "group_delete",
    "group_list",
    "lag",
    "parse_since",
    "pause",
    "queue_move",
    "queue_move_cancel",
    "reconcile",
    "replay",
    "resume",
    "set_limit",
    "status",
    "topic_alter",
    "topic_create",
    "topic_describe",
    "topic_list",
    "txn_list",
    "txn_resolve",
]

STATUS_TIMEOUT = 2.0
SETTLE_TIMEOUT = 10.0  # seconds admin txn resolve looks for the home group's master


@dataclass(frozen=True)
class ClusterStatus:
    """One ``status`` answer per store (``{"error": ...}`` for a store that did not answer),
    and the consumer tier's view (``None`` without consumer groups; ``{"error": ...}`` when the
    lock service cannot answer): members, per-group settings, pair owners and tokens."""

    stores: dict[int, dict[str, Any]]
    consumers: dict[str, Any] | None = None
    groups: int = 0
    lags: list[dict[str, Any]] = field(default_factory=list)
    sets: dict[int, int] = field(default_factory=dict)  # store id -> its store set

    def to_json(self) -> dict[str, Any]:
        return {
            "stores": {str(node): st for node, st in self.stores.items()},
            "sets": {str(node): number for node, number in self.sets.items()},
            "ownership": self.consumers,
            "moves": self.moves(),
        }

    def moves(self) -> list[dict[str, Any]]:
        """The queue moves in progress, as the store with the newest cluster map reports them
        (``id, topic, queue, from, to, started_at``), each with ``waiting``: why it is not done
        yet, as the store driving it last saw (e.g. ``MoveBlocked: ...``), or None."""
        answers = [st for st in self.stores.values() if "error" not in st]
        if not answers:
            return []
        newest = max(answers, key=lambda st: st.get("map_version", 0))
        waiting = {
            m["id"]: m["waiting"]
            for st in answers
            for m in st.get("moves", [])
            if m.get("waiting") is not None
        }
        return [{**m, "waiting": waiting.get(m["id"])} for m in newest.get("moves", [])]

    def masters(self) -> list[tuple[int, int, int | None, dict[int, int | None]]]:
        """Per store set and Paxos group: ``(set, group, master, chosen)``, the master as the
        set's stores report it and each of its stores' chosen instance (``None``: down)."""
        rows = []
        for number in sorted(set(self.sets.values()) or {1}):
            members = {n: st for n, st in self.stores.items() if self.sets.get(n, 1) == number}
            for g in range(self.groups):
                master = None
                chosen: dict[int, int | None] = {}
                for node, st in members.items():
                    if "error" in st:
                        chosen[node] = None
                        continue
                    info = st["groups"][g]
                    master = master if master is not None else info["master"]
                    chosen[node] = info["chosen_up_to"]
                rows.append((number, g, master, chosen))
        return rows


async def status(cfg: ClusterConfig) -> ClusterStatus:
    """Every store's status and the consumer tier's ownership and settings."""
    stores: dict[int, dict[str, Any]] = {}
    async with tool_pool(cfg) as pool:
        for s in cfg.stores:
            try:
                stores[s.id] = await pool.call(s.addr, "status", {}, timeout=STATUS_TIMEOUT)
            except PhxqError as exc:
                stores[s.id] = {"error": f"{type(exc).__name__}: {exc.message}"}
    lags = [row for st in stores.values() for row in st.get("consumers", [])]
    consumers = await consumer_admin.consumer_status(await with_map_groups(cfg))
    sets = {s.id: s.set for s in cfg.stores}
    return ClusterStatus(stores, consumers, cfg.cluster.groups, lags, sets)


async def lag(cfg: ClusterConfig, *, group: str | None = None) -> list[LagRow]:
    """Cursor, last offset and lag of every queue of ``group`` (default: every consumer group)."""
    cfg = await with_map_groups(cfg)  # here and below: groups created online too
    async with Client([s.addr for s in cfg.stores], **client_options(cfg)) as client:
        return await consumer_admin.lag(cfg, client, group=group)


async def replay(
    cfg: ClusterConfig,
    group: str,
    *,
    since: float | None = None,
    offset: int | None = None,
    queues: Sequence[int] | None = None,
) -> dict[int, int | None]:
    """Deliver ``group``'s messages again from a time (epoch seconds) or an offset (one queue),
    once, whoever owns the queues; returns the new cursor per queue."""
    cfg = await with_map_groups(cfg)
    async with Client([s.addr for s in cfg.stores], **client_options(cfg)) as client:
        return await consumer_admin.replay(
            cfg, client, group, since=since, offset=offset, queues=queues
        )


async def set_limit(
    cfg: ClusterConfig,
    group: str,
    *,
    messages: Any = KEEP,
    bytes_per_s: Any = KEEP,
    reset: bool = False,
) -> dict[str, Any]:
    """Change ``group``'s rate limit at runtime (``None``: unlimited; ``KEEP``: unchanged;
    ``reset``: the config's); returns the limit now in force. Consumers apply it within a
    second."""
    cfg = await with_map_groups(cfg)
    async with consumer_admin.open_locks(cfg) as locks:
        return await consumer_admin.set_limit(
            locks, cfg, group, messages=messages, bytes_per_s=bytes_per_s, reset=reset
        )


async def pause(cfg: ClusterConfig, group: str) -> None:
    """Stop delivering ``group``'s messages (in-flight ones finish) until :func:`resume`."""
    cfg = await with_map_groups(cfg)
    async with consumer_admin.open_locks(cfg) as locks:
        await consumer_admin.pause(locks, cfg, group)


async def resume(cfg: ClusterConfig, group: str) -> None:
    """Undo :func:`pause`; also retries queues stopped by ``on_failure = "block"``."""
    cfg = await with_map_groups(cfg)
    async with consumer_admin.open_locks(cfg) as locks:
        await consumer_admin.resume(locks, cfg, group)


async def reconcile(
    cfg: ClusterConfig,
    topic: str,
    *,
    group: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Report:
    """Per queue and window: messages stored vs consumed per consumer group, and whether the
    replicas' chain checksums agree; ``report.mismatches`` lists what does not."""
    cfg = await with_map_groups(cfg)
    if group is not None:
        cfg.consumer_group(group)  # ConfigError names it if unknown
    return await _reconcile(cfg, topic, consumer_group=group, since=since, until=until)


async def txn_list(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """Every open transaction, one row per group holding its half messages (as that group's
    master reports it): ``txn, group, home, producer_group, age, timeout, half_messages,
    decision`` (None: undecided), oldest first. A store that is down is skipped (its groups
    have, or will soon have, another master)."""
    rows: list[dict[str, Any]] = []
    async with tool_pool(cfg) as pool:
        for s in cfg.stores:
            try:
                rows.extend(await pool.call(s.addr, "txn_list", {}, timeout=STATUS_TIMEOUT))
            except PhxqError:
                continue
    # A master change may list one twice (group numbers repeat on each store set).
    seen = {(r["txn"], r.get("set", 1), r["group"]): r for r in rows}
    return sorted(seen.values(), key=lambda r: (-r["age"], r["txn"], r["group"]))


async def txn_resolve(cfg: ClusterConfig, txn: str, *, commit: bool) -> dict[str, Any]:
    """Decide open transaction ``txn`` (its home group's master writes the decision; if one
    was already written, that one stands and is returned). A commit is refused
    (``BadArgument``) unless every part of the transaction is prepared. ``BadArgument`` if no
    open transaction has this id."""
    homes = {(r.get("home_set", 1), r["home"]) for r in await txn_list(cfg) if r["txn"] == txn}
    if not homes:
        raise BadArgument(f"no open transaction {txn!r}")
    home_set, home = homes.pop()
    # The home group's master on the home's store set (each set is its own Paxos cluster).
    stores = [s.addr for s in cfg.set_stores(home_set)]
    params = {"txn": txn, "group": home, "commit": commit}
    deadline = time.monotonic() + SETTLE_TIMEOUT
    addr = stores[home % len(stores)]
    async with tool_pool(cfg) as pool:
        while True:
            try:
                result: dict[str, Any] = await pool.call(
                    addr, "txn_settle", params, timeout=STATUS_TIMEOUT
                )
                return result
            except (NotMaster, Unavailable) as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"home group {home} of set {home_set}: {exc}") from None
                hint = exc.hint if isinstance(exc, NotMaster) else None
                addr = hint if hint in stores else stores[(stores.index(addr) + 1) % len(stores)]
                await asyncio.sleep(0.1)
