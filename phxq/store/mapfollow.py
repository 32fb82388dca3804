"""A store's copy of the cluster map: seeded, watched and kept (see :mod:`phxq.mapstore`).

A :class:`MapFollower` holds the :class:`~phxq.topology.Topology` a store routes by:

- at start, the last map it saved in its data directory (``cluster-map.json``), else the one
  the config implies (version 0);
- :meth:`run` (a store background loop, only with ``[[lock]]`` nodes) seeds the lock-service
  map if it is absent, then long-polls its KV entry (``kv_wait``) and adopts every newer
  version, saving it first. While the lock service is down the store keeps serving with the
  last map it has, and the loop retries with backoff;
- :meth:`check` runs before a request that names the map version its client routed with
  (param ``map``): older than ours -> ``StaleMap`` (with our version; the client refreshes
  and re-sends); newer -> we fetch the map now (bounded) before serving it.

``on_change`` is called with every adopted map (the store recomputes what depends on it).
``open_home(tls)`` opens a client of the map's home (``phxq.mapstore.lock_home``: the lock
service's KV, dialed with the store's member TLS context); the store package does not import
the lock service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phxq import mapstore
from phxq.config import ClusterConfig
from phxq.errors import PhxqError, StaleMap
from phxq.topology import Topology

__all__ = ["MAP_FILE", "MapFollower"]

log = logging.getLogger("phxq.store.map")

MAP_FILE = "cluster-map.json"
WAIT = 30.0  # seconds per kv_wait long poll
CATCH_UP_TIMEOUT = 1.0  # a request with a newer map waits at most this long for it


class MapFollower:
    """One store's cluster map (see the module docstring)."""

    def __init__(
        self,
        cluster: ClusterConfig,
        data: Path,
        open_home: Callable[[], Any] | None,
        on_change: Callable[[Topology], None],
    ) -> None:
        self._cluster = cluster
        self._path = Path(data) / MAP_FILE
        self._open_home = open_home  # None: no lock service, the config's map is the map
        self._on_change = on_change
        saved = mapstore.load_local(self._path)
        self.topology: Topology = saved if saved is not None else Topology.from_config(cluster)
        self._locks: Any = None
        self._saving = asyncio.Lock()

    @property
    def home(self) -> Any:
        """The client of the map's home while :meth:`run` holds one (None: not connected, or
        no lock service)."""
        return self._locks

    @property
    def version(self) -> int:
        return self.topology.version

    async def adopt(self, topo: Topology) -> bool:
        """Use ``topo`` if it is newer than ours (saved to disk first); True if adopted.
        Callers may race (the watch loop, a request naming a newer map, the queue mover):
        one save at a time, so two never share the temporary file."""
        if topo.version <= self.topology.version:
            return False
        async with self._saving:
            if topo.version <= self.topology.version:
                return False  # a newer one was adopted while we waited
            await asyncio.to_thread(mapstore.save_local, self._path, topo)
            self.topology = topo
        self._on_change(topo)
        log.info("cluster map version %d adopted", topo.version)
        return True

    async def run(self) -> None:
        """Seed, then follow the lock-service map until cancelled (see the module docstring)."""
        if self._open_home is None:
            return
        async with self._open_home() as locks:
            self._locks = locks
            seeded = False
            kv_version = 0
            backoff = 0.2
            failing = False
            while True:
                try:
                    if not seeded:
                        await self.adopt(await mapstore.seed(locks, self._cluster))
                        seeded = True
                    value, kv_version = await locks.kv_wait(mapstore.MAP_KEY, kv_version, WAIT)
                    if value is not None:
                        await self.adopt(Topology.from_wire(value))
                    backoff = 0.2
                    if failing:
                        log.info("the cluster map's home answers again")
                        failing = False
                except PhxqError as exc:
                    # The lock service is down or unreachable: keep serving with our map.
                    if not failing:
                        log.warning(
                            "cannot follow the cluster map (serving with version %d): %s",
                            self.topology.version,
                            exc,
                        )
                        failing = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    async def check(self, wanted: Any) -> None:
        """Before a request routed with map version ``wanted`` (see the module docstring)."""
        if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted == self.version:
            return
        if wanted < self.version:
            raise StaleMap(
                f"the request was routed with cluster map version {wanted}; it is "
                f"{self.version} now",
                {"version": self.version},
            )
        locks = self._locks
        if locks is None:
            return  # no lock service to ask: serve with what we have
        try:
            value, _ = await asyncio.wait_for(
                locks.kv_get(mapstore.MAP_KEY), timeout=CATCH_UP_TIMEOUT
            )
        except (PhxqError, TimeoutError):
            return  # the watch loop catches up; placement checks still guard the request
        if value is not None:
            await self.adopt(Topology.from_wire(value))
