"""Consumer groups in the cluster map: ``phxq admin group create|list|delete`` as functions
returning data (re-exported by :mod:`phxq.admin`)::

    await group_create(cfg, name, topic=, handler=, **settings) -> dict
    await group_list(cfg) -> list[dict]
    await group_delete(cfg, name) -> dict
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

**Delete** removes a group created online from the map (compare-and-set) and its runtime
settings (``phxq admin limit|pause|resume``: the lock service's ``settings/<group>/`` keys), so
a group re-created under that name starts from its table's settings. Running consumer daemons
stop serving it (each of its queues is handed over as in a rebalance: in-flight messages
finish, the cursor is committed and the queue lock released), the gateway stops listing it,
and the stores stop keeping its unconsumed messages past retention. Its topic and
dead-letter topic stay. **Committed cursors stay in the stores** (the stores have no call that
drops a cursor; they are a few bytes per queue in the log's state): a group re-created under the
same name resumes at them, unlike Kafka's ``--delete``; ``phxq admin replay`` moves them. A
group of the config file (a ``[[consumer_group]]`` table) is refused (``BadArgument``): every
start and every admin command seeds the map with the config's groups, so it would come back;
remove the table from the config first. ``Client.consume`` groups are not in the map (any name
works), so there is nothing to delete for them. The row: the deleted group's table,
``map_version``, ``settings_removed`` (how many settings keys) and ``confirmed`` (the stores
serving the new map).

``with_map_groups`` is how ``phxq admin lag|replay|limit|pause|resume|status|reconcile`` know
groups created online: the config with the groups and topics the map adds (the config's own
win); the config as it is without ``[[lock]]`` nodes, a map, or an answer within
``MAP_READ_TIMEOUT`` seconds (so an admin command against a cluster whose lock service is down
costs 2 s, not the lock client's whole retry budget).

Errors: ``ConfigError`` (a bad setting, named like the TOML key), ``BadArgument`` (the group
exists; no such dead-letter topic; delete of a config group), ``NotFound`` (delete of a group
the map lacks), ``UnknownTopic``, ``Unavailable`` (no lock service), ``Forbidden`` (needs
``admin``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from phxq import mapstore
from phxq.config import DLQ_SUFFIX, ClusterConfig, ConsumerGroupConfig
from phxq.consumer.settings import SETTINGS_PREFIX
from phxq.errors import BadArgument, PhxqError
from phxq.groupspecs import group_from_table, group_to_wire
from phxq.topics import _confirm, _locks
from phxq.topology import Topology

__all__ = [
    "MAP_READ_TIMEOUT",
    "group_create",
    "group_delete",
    "group_list",
    "merge_map",
    "with_map_groups",
]

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


def _without_group(cfg: ClusterConfig, topo: Topology, name: str) -> Topology:
    if any(g.name == name for g in cfg.consumer_groups):
        raise BadArgument(
            f"consumer group {name!r} is defined in {cfg.source} ([[consumer_group]]): remove it"
            " from the config first (every start re-seeds the config's groups into the map)",
            {"group": name},
        )
    return topo.without_group(name)


async def group_delete(cfg: ClusterConfig, name: str) -> dict[str, Any]:
    """Remove consumer group ``name`` from the cluster map and its runtime settings (see the
    module docstring: its committed cursors stay)."""
    async with _locks(cfg) as locks:
        before: list[Topology] = []

        def change(topo: Topology) -> Topology:
            before[:] = [topo]
            return _without_group(cfg, topo, name)

        topo = await mapstore.update(locks, cfg, change)
        prefix = f"{SETTINGS_PREFIX}{name}/"
        keys = sorted(await locks.kv_list(prefix))
        for key in keys:
            await locks.kv_delete(key)
    row = {**group_to_wire(before[-1].groups[name]), "map_version": topo.version}
    row["settings_removed"] = len(keys)
    row["confirmed"] = await _confirm(cfg, topo.version)
    return row


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
