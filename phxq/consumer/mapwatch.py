"""The consumer tier follows the cluster map: topics and queues added online reach the members
without a restart (DESIGN.md §5.1, §7)::

    watch = MapWatch(locks, on_change)   # on_change(Topology) is awaited for every newer map
    await watch.run()                    # long-polls the map's KV entry until cancelled
    watch.version                        # the newest map version handed to on_change (0: none)
    await served(client, version)        # until a store serves that map version (bounded)

It is the watch the stores use (:mod:`phxq.store.mapfollow`): a ``kv_wait`` long poll on
``cluster/map`` (:data:`phxq.mapstore.MAP_KEY`) in the lock service the consumers already talk
to. It never writes the map (the stores and ``phxq admin`` seed it). The first answer hands over
the current map at once; after that every new version does, in order, at most one call at a
time; a call that raises a ``PhxqError`` is retried with the same map. While the lock service is down the members keep the pairs they know and the watch retries
with backoff (0.2 s doubling to 5 s). A map the watch cannot read (a newer, incompatible writer)
is logged and skipped until the next version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from phxq import mapstore
from phxq.errors import PhxqError
from phxq.topology import Topology

__all__ = ["MapWatch", "served"]

log = logging.getLogger("phxq.consumer")

WAIT = 30.0  # seconds per kv_wait long poll
SERVED_TIMEOUT = 10.0  # how long served() waits for a store to serve a new map


async def served(client: Any, version: int, timeout: float = SERVED_TIMEOUT) -> bool:
    """Refresh ``client``'s cluster map until it is at least ``version`` (a store adopted the
    new map, so requests for new queues route), for at most ``timeout`` s; True if it is.
    Stores adopt a new map within their own long poll, normally milliseconds after it is
    written."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await client.cluster_map(refresh=True, timeout=2.0)).version >= version:
                return True
        except PhxqError:
            pass  # no store answers right now: retry until the deadline
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


class MapWatch:
    """See the module docstring. ``locks``: anything with ``kv_wait(key, after, timeout)``."""

    def __init__(self, locks: Any, on_change: Callable[[Topology], Awaitable[None]]) -> None:
        self._locks = locks
        self._on_change = on_change
        self.version = 0

    async def run(self) -> None:
        """Follow the map until cancelled (see the module docstring)."""
        kv_version = 0
        backoff = 0.2
        failing = False
        while True:
            try:
                value, kv_version = await self._locks.kv_wait(mapstore.MAP_KEY, kv_version, WAIT)
            except PhxqError as exc:
                if not failing:
                    log.warning(
                        "cannot follow the cluster map (keeping its version %d): %s",
                        self.version,
                        exc,
                    )
                    failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if failing:
                log.info("the cluster map's home answers again")
                failing = False
            backoff = 0.2
            if value is None:
                continue  # not seeded yet: the stores seed it at their start
            try:
                topo = Topology.from_wire(value)
            except PhxqError as exc:
                log.warning("skipping an unreadable cluster map: %s", exc)
                continue
            if topo.version <= self.version:
                continue
            try:
                await self._on_change(topo)
            except PhxqError as exc:
                # E.g. the lock service went away meanwhile: hand this map over again.
                log.warning("cluster map version %d not applied yet: %s", topo.version, exc)
                kv_version = 0  # the next kv_wait answers at once
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.version = topo.version
