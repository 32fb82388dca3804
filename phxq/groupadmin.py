"""Consumer groups in the cluster map: ``phxq admin group create|list`` as functions returning
data (re-exported by :mod:`phxq.admin`)::

    await group_create(cfg, name, topic=, handler=, **settings) -> dict
    await group_list(cfg) -> list[dict]
    await with_map_groups(cfg) -> ClusterConfig   # cfg plus the map's groups and topics
    merge_map(cfg, topo) -> ClusterConfig         # the same, given the map (pure)

``settings`` are the other keys of a ``[[consumer_group]]`` table, with the same names, rules
and defaults (``rate_limit``, ``max_attempts``, ``on_failure``, ``dead_letter``, ``ordering``,
``concurrency``, ``handler_timeout`` in seconds...). Like the TOML, a group that dead-letters
without naming a topic uses ``<topic>.dlq``, created with the topic's settings if the map lacks
it. The group is stored in the cluster map (compare-and-set, :mod:`phxq.mapstore`; seeded from
the config first); running consumer daemons follow the map and start serving it without a
restart, and the stores keep its unconsumed messages past retention checks like a configured
group's. Rows: the group's table (``name, topic, handler, max_attempts, ...``; unset keys left
out) and ``map_version``.

``with_map_groups`` is how ``phxq admin lag|replay|limit|pause|resume|status|reconcile`` know
groups created online: the config with the groups and topics the map adds (the config's own
win); the config as it is without ``[[lock]]`` nodes, a map, or an answer within
``MAP_READ_TIMEOUT`` seconds (so an admin command against a cluster whose lock service is down
costs 2 s, not the lock client's whole retry budget).

Errors: ``ConfigError`` (a bad setting, named like the TOML key), ``BadArgument`` (the group
exists; no such dead-letter topic), ``UnknownTopic``, ``Unavailable`` (no lock service),
``Forbidden`` (needs ``admin``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from phxq import mapstore
from phxq.config import DLQ_SUFFIX, ClusterConfig, ConsumerGroupConfig
from phxq.errors import PhxqError
from phxq.groupspecs import group_from_table, group_to_wire
from phxq.topics import _confirm, _locks
from phxq.topology import Topology

__all__ = ["MAP_READ_TIMEOUT", "group_create", "group_list", "merge_map", "with_map_groups"]

MAP_READ_TIMEOUT = 2.0


def _row(topo: Topology, name: str) -> dict[str, Any]:
    return {**group_to_wire(topo.groups[name]), "map_version": topo.version}


def _with_group(topo: Topology, spec: ConsumerGroupConfig) -> Topology:
    if spec.on_failure == "dead_letter" and spec.dead_letter is None:
        dlq = spec.topic + DLQ_SUFFIX
        spec = replace(spec, dead_letter=dlq)
        if dlq not in topo.topics:  # declared implicitly, as in the TOML
            topo = topo.with_topic(replace(topo.topic(spec.topic), name=dlq))
    return topo.with_group(spec)


async def group_create(
    cfg: ClusterConfig, name: str, *, topic: str, handler: str, **settings: Any
) -> dict[str, Any]:
    """Add consumer group ``name`` to the cluster map (see the module docstring)."""
    table = {"name": name, "topic": topic, "handler": handler}
    table.update({k: v for k, v in settings.items() if v is not None})
    spec = group_from_table(table, source="admin group create")
    async with _locks(cfg) as locks:
        topo = await mapstore.update(locks, cfg, lambda t: _with_group(t, spec))
    row = _row(topo, name)
    row["confirmed"] = await _confirm(cfg, topo.version)
    return row


async def group_list(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """Every consumer group of the cluster map, by name (the map is seeded first if absent)."""
    async with _locks(cfg) as locks:
        topo = await mapstore.seed(locks, cfg)
    return [_row(topo, name) for name in sorted(topo.groups)]


async def with_map_groups(cfg: ClusterConfig) -> ClusterConfig:
    """``cfg`` with the consumer groups (and topics) the cluster map adds (see the module
    docstring)."""
    if not cfg.locks:
        return cfg
    try:
        async with asyncio.timeout(MAP_READ_TIMEOUT), _locks(cfg) as locks:
            topo, _ = await mapstore.load(locks)
    except (PhxqError, TimeoutError):
        return cfg  # the map's home is down: the config's groups still work as they are
    return cfg if topo is None else merge_map(cfg, topo)


def merge_map(cfg: ClusterConfig, topo: Topology) -> ClusterConfig:
    """``cfg`` plus the consumer groups and topics ``topo`` adds (the config's own win)."""
    groups = {g.name for g in cfg.consumer_groups}
    topics = {t.name for t in cfg.topics}
    return replace(
        cfg,
        topics=(*cfg.topics, *(t for n, t in topo.topics.items() if n not in topics)),
        consumer_groups=(
            *cfg.consumer_groups,
            *(g for n, g in topo.groups.items() if n not in groups),
        ),
    )
