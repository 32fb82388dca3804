"""The cluster map's home: one key of the lock service's KV (Paxos-replicated), read, seeded and
changed with compare-and-set (DESIGN.md §5.1)::

    MAP_KEY = "cluster/map"                        # writable by members and admin principals
    await load(locks) -> (Topology | None, kv_version)
    await seed(locks, cfg) -> Topology             # idempotent: first start writes version 1
    await update(locks, cfg, change) -> Topology   # change(Topology) -> Topology, CAS-retried
    save_local(path, topo) / load_local(path) -> Topology | None   # a store's last map on disk
    lock_home(cfg, tls) -> (() -> LockClient) | None                # what a store follows

**Seeding.** The first caller (a store at start, or an admin command) writes the config's
``[[topic]]`` tables as map version 1 with ``kv_put(expect_version=0)``; when several race, one
wins and the others read its map. Seeding an existing map adds only what the map lacks: a
``[[topic]]`` it has never seen (dealt over the least-loaded sets), a ``[[consumer_group]]`` it
has never seen, and store sets added to the config (so new queues can go there). A topic or
group the map already has keeps the map's settings: after the first start, ``phxq admin topic
alter`` changes topics, not the TOML.

**Versions.** ``Topology.version`` (inside the document) is the map version stores and clients
compare; every change is a CAS on the KV entry's own version, so two admins altering at once
both succeed one after the other (each change is re-applied to the map it read) or fail
with the change's own error (e.g. the topic exists).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from phxq.config import ClusterConfig
from phxq.errors import ProtocolError, VersionMismatch
from phxq.topology import Topology

__all__ = ["MAP_KEY", "load", "load_local", "lock_home", "save_local", "seed", "update"]

log = logging.getLogger("phxq.mapstore")

MAP_KEY = "cluster/map"
CAS_ATTEMPTS = 50


async def load(locks: Any) -> tuple[Topology | None, int]:
    """The map in the KV and the KV entry's version (``(None, 0)``: never seeded)."""
    value, version = await locks.kv_get(MAP_KEY)
    if value is None:
        return None, 0
    return Topology.from_wire(value), version


def _merge_config(topo: Topology, cfg: ClusterConfig) -> Topology:
    """``topo`` plus the config's sets and topics it does not have yet (same value if none)."""
    new_sets = tuple(sorted(set(topo.sets) | set(cfg.sets)))
    if new_sets != topo.sets:
        topo = replace(topo, version=topo.version + 1, sets=new_sets)
    for spec in cfg.topics:
        if spec.name not in topo.topics:
            topo = topo.with_topic(spec)
    for group in cfg.consumer_groups:
        if group.name not in topo.groups:
            topo = topo.with_group(group)
    return topo


async def seed(locks: Any, cfg: ClusterConfig) -> Topology:
    """The map in the KV, written from ``cfg`` if absent and completed with what ``cfg`` adds
    (see the module docstring). Raises what the lock client raises (``Unavailable``...)."""
    return await update(locks, cfg, lambda topo: topo)


async def update(
    locks: Any, cfg: ClusterConfig, change: Callable[[Topology], Topology]
) -> Topology:
    """Apply ``change`` to the current map (seeded from ``cfg`` first if needed) and store the
    result with compare-and-set, retried on a concurrent write. ``change`` returning its
    argument unchanged writes nothing. Errors raised by ``change`` propagate."""
    for _ in range(CAS_ATTEMPTS):
        current, kv_version = await load(locks)
        if current is None:
            base = replace(Topology.from_config(cfg), version=1)
        else:
            base = _merge_config(current, cfg)
        new = change(base)
        if current is not None and new == current:
            return current
        if current is not None and new.version <= current.version:
            raise ProtocolError("a map change must raise the map version")
        try:
            await locks.kv_put(MAP_KEY, new.to_wire(), expect_version=kv_version)
        except VersionMismatch:
            continue  # someone else wrote meanwhile: apply the change to their map
        log.info("cluster map version %d written", new.version)
        return new
    raise VersionMismatch(f"the cluster map changed {CAS_ATTEMPTS} times while updating it")


def lock_home(cfg: ClusterConfig, tls: Any) -> Callable[[], Any] | None:
    """What a store opens to follow the map: a ``LockClient`` of ``cfg``'s lock nodes dialing
    with ``tls`` (its member context; None: plaintext); None without ``[[lock]]`` nodes."""
    if not cfg.locks:
        return None
    from phxq.lock import LockClient  # here: phxq.store must not import the lock service

    addrs = [lk.addr for lk in cfg.locks]
    return lambda: LockClient(addrs, ca=tls, retry_timeout=5.0)


def save_local(path: Path, topo: Topology) -> None:
    """Write ``topo`` to ``path`` atomically (a store's last map, served while the lock
    service is down, also after a restart)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(topo.to_wire(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_local(path: Path) -> Topology | None:
    """The map :func:`save_local` wrote, or None if there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Topology.from_wire(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ProtocolError) as exc:  # a damaged copy: the KV has the map
        log.warning("%s: ignoring the saved cluster map: %s", path, exc)
        return None
