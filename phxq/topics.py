"""Online topics: ``phxq admin topic create|alter|list|describe`` as functions returning data
(re-exported by :mod:`phxq.admin`)::

    await topic_create(cfg, name, queues=, retention=None, max_message_bytes=None,
                       retention_bytes=None, sets=None) -> dict
    await topic_alter(cfg, name, queues=None, retention=None, max_message_bytes=None,
                      retention_bytes=KEEP, sets=KEEP) -> dict
    await topic_list(cfg) -> list[dict];   await topic_describe(cfg, name) -> dict

Each one reads or changes the cluster map in the lock service's KV (:mod:`phxq.mapstore`; the
map is seeded from the config first if no store has done it yet) with compare-and-set; nothing
restarts. Stores follow the map within a long poll; a change returns once every store that
answers serves the new version (``confirmed`` lists them; a store that is down catches up when
it returns). Rows: ``name, queues, retention (s), max_message_bytes, retention_bytes, sets
(allowed; None: every set), placement (the set of each queue), map_version``.

Queues only grow: a key's queue is ``crc32(key) % queues``, so adding queues sends many keys to
another queue from then on (per-key order holds within each queue, not across the change;
docs/faq.md). New queues go to the least-loaded allowed sets; existing queues never move here
(``phxq admin queue move`` does that). Errors: ``BadArgument`` (bad value, existing or unknown
topic: ``UnknownTopic``), ``Unavailable`` (no lock service), ``Forbidden`` (needs ``admin``).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from typing import Any

from phxq import mapstore, validate
from phxq.config import MESSAGE_BYTES_LIMIT, ClusterConfig, TopicConfig
from phxq.config.model import DEFAULTS, parse_duration, parse_size
from phxq.errors import BadArgument, PhxqError
from phxq.security.daemon import client_options, tool_pool
from phxq.topology import Topology

__all__ = ["KEEP", "topic_alter", "topic_create", "topic_describe", "topic_list"]

KEEP: Any = object()  # topic_alter: leave this setting as it is
CONFIRM_TIMEOUT = 10.0  # how long a change waits for the stores to serve it


def _row(topo: Topology, name: str) -> dict[str, Any]:
    t = topo.topic(name)
    return {
        "name": name,
        "queues": t.queues,
        "retention": t.retention,
        "max_message_bytes": t.max_message_bytes,
        "retention_bytes": t.retention_bytes,
        "sets": None if t.sets is None else list(t.sets),
        "placement": list(topo.placement[name]),
        # queues that moved: [set, last offset (None: open)] per segment, oldest first
        "segments": {
            str(q): [list(seg) for seg in topo.segments(name, q)]
            for q in sorted(topo.history.get(name, {}))
        },
        "moves": [m.to_wire() for (topic, _), m in sorted(topo.moves.items()) if topic == name],
        "map_version": topo.version,
    }


def _locks(cfg: ClusterConfig) -> Any:
    if not cfg.locks:
        raise BadArgument(f"{cfg.source}: no [[lock]] nodes: the cluster map lives there")
    from phxq.lock import LockClient

    return LockClient([lk.addr for lk in cfg.locks], **client_options(cfg))


_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")  # as a [[topic]] name


def _checked(spec: TopicConfig) -> TopicConfig:
    if not isinstance(spec.name, str) or not _NAME_RE.fullmatch(spec.name):
        raise BadArgument(
            f"topic name {spec.name!r}: expected 1-249 letters, digits, '.', '_' or '-'"
        )
    validate.integer(spec.queues, "queues", minimum=1, maximum=1 << 16)
    validate.integer(spec.max_message_bytes, "max_message_bytes", minimum=1)
    if spec.max_message_bytes > MESSAGE_BYTES_LIMIT:
        raise BadArgument(f"max_message_bytes must be at most {MESSAGE_BYTES_LIMIT}")
    validate.number(spec.retention, "retention", minimum=0, unit="seconds")
    if spec.retention_bytes is not None:
        validate.integer(spec.retention_bytes, "retention_bytes", minimum=1)
    return spec


async def _confirm(cfg: ClusterConfig, version: int) -> list[int]:
    """The stores serving map ``version`` (or newer), waiting up to ``CONFIRM_TIMEOUT`` for
    every store that answers at all."""
    deadline = time.monotonic() + CONFIRM_TIMEOUT
    async with tool_pool(cfg) as pool:
        while True:
            confirmed, waiting = [], 0
            for s in cfg.stores:
                try:
                    meta = await pool.call(s.addr, "meta", {}, timeout=1.0)
                except PhxqError:
                    continue  # down: it adopts the map when it returns
                if int(meta.get("map", {}).get("version", 0)) >= version:
                    confirmed.append(s.id)
                else:
                    waiting += 1
            if not waiting or time.monotonic() > deadline:
                return confirmed
            await asyncio.sleep(0.05)


async def _change(cfg: ClusterConfig, change: Any, name: str) -> dict[str, Any]:
    async with _locks(cfg) as locks:
        topo = await mapstore.update(locks, cfg, change)
    row = _row(topo, name)
    row["confirmed"] = await _confirm(cfg, topo.version)
    return row


async def topic_create(
    cfg: ClusterConfig,
    name: str,
    *,
    queues: int,
    retention: float | None = None,
    max_message_bytes: int | None = None,
    retention_bytes: int | None = None,
    sets: list[int] | tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Create topic ``name`` (defaults as a ``[[topic]]`` table's); ``BadArgument`` if it
    exists. Its queues go to the least-loaded of ``sets`` (default: every set)."""
    spec = _checked(
        TopicConfig(
            name=name,
            queues=queues,
            retention=parse_duration(DEFAULTS["topic.retention"])
            if retention is None
            else retention,
            max_message_bytes=parse_size(DEFAULTS["topic.max_message_bytes"])
            if max_message_bytes is None
            else max_message_bytes,
            retention_bytes=retention_bytes,
            sets=None if sets is None else tuple(sorted(set(sets))),
        )
    )
    return await _change(cfg, lambda topo: topo.with_topic(spec), name)


async def topic_alter(
    cfg: ClusterConfig,
    name: str,
    *,
    queues: int | None = None,
    retention: float | None = None,
    max_message_bytes: int | None = None,
    retention_bytes: Any = KEEP,
    sets: Any = KEEP,
) -> dict[str, Any]:
    """Change topic ``name``: more ``queues`` (never fewer), ``retention``,
    ``max_message_bytes``, ``retention_bytes`` (None: unlimited), ``sets`` (where new queues
    may go; None: every set). ``UnknownTopic`` if it does not exist."""
    changes: dict[str, Any] = {}
    if queues is not None:
        changes["queues"] = queues
    if retention is not None:
        changes["retention"] = retention
    if max_message_bytes is not None:
        changes["max_message_bytes"] = max_message_bytes
    if retention_bytes is not KEEP:
        changes["retention_bytes"] = retention_bytes
    if sets is not KEEP:
        changes["sets"] = None if sets is None else tuple(sorted(set(sets)))
    if not changes:
        raise BadArgument("nothing to alter: give --queues, --retention, --max-message-bytes...")

    def change(topo: Topology) -> Topology:
        _checked(replace(topo.topic(name), **changes))
        return topo.altered(name, **changes)

    return await _change(cfg, change, name)


async def topic_list(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """Every topic of the cluster map, by name (the map is seeded first if it is absent)."""
    async with _locks(cfg) as locks:
        topo = await mapstore.seed(locks, cfg)
    return [_row(topo, name) for name in sorted(topo.topics)]


async def topic_describe(cfg: ClusterConfig, name: str) -> dict[str, Any]:
    """One topic of the cluster map (``UnknownTopic`` if absent)."""
    async with _locks(cfg) as locks:
        topo = await mapstore.seed(locks, cfg)
    return _row(topo, name)
