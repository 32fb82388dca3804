"""The consumer groups (and topics) the gateway knows: the config's plus those the cluster map
adds online (``phxq admin group create``, ``phxq admin topic create``), so a group created
or deleted (``phxq admin group delete``) while the gateway runs is served, or no longer
served, without a restart::

    known = KnownGroups(config, locks)   # locks: () -> the gateway's LockClient
    await known.config()                 # the config with the map's groups and topics (cached)
    await known.config(refresh=True)     # read the map again first
    await known.require("billing")       # the group's spec; the map is read again if the
                                         # cached view lacks it or is older than VIEW_MAX_AGE
                                         # (a config group needs no read); problem not_found
                                         # (404) if the map lacks it

The map is read from its home, the lock service's KV (:mod:`phxq.mapstore`), where ``group
create`` writes it: a group is known to the gateway as soon as ``group create`` returned.
Concurrent refreshes share one read. Without ``[[lock]]`` nodes the config is all there is.
When the map's home does not answer (within ``MAP_READ_TIMEOUT``), :meth:`config` keeps the last view (the config's groups
still work as they are) while :meth:`require` of a group that view lacks raises the error
(``Unavailable``, 503): the gateway cannot tell that the group does not exist. A group the last
view has is still served then (it may have been deleted meanwhile: the gateway cannot tell).
A group deleted online is 404 within ``VIEW_MAX_AGE`` seconds (listings read the map each
time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Final

from phxq import mapstore
from phxq.config import ClusterConfig, ConsumerGroupConfig
from phxq.errors import PhxqError
from phxq.gateway.problems import problem
from phxq.groupadmin import merge_map
from phxq.topology import Topology

__all__ = ["MAP_READ_TIMEOUT", "VIEW_MAX_AGE", "KnownGroups"]

# Seconds a map read may take: with the lock service down, /v1/topics and /v1/status answer
# from the last view after this, not after the lock client's whole retry budget.
MAP_READ_TIMEOUT: Final = 2.0
# Seconds require() trusts the cached map for a group created online (at most one map read per
# this interval on the routes that name a group; a group deleted online is 404 after it).
VIEW_MAX_AGE: Final = 1.0


class KnownGroups:
    """See the module docstring."""

    def __init__(
        self,
        config: ClusterConfig,
        locks: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = config
        self._view = config
        self._locks = locks
        self._clock = clock
        self._read_at: float | None = None  # clock() of the last completed map read
        self._reads = 0  # completed map reads (a waiter whose read someone else did reuses it)
        self._lock = asyncio.Lock()

    async def config(self, *, refresh: bool = False) -> ClusterConfig:
        """The config with the map's groups and topics; ``refresh`` reads the map first (the
        last view if its home does not answer)."""
        if refresh:
            # The map's home is down: the last view (at least the config) still holds.
            with contextlib.suppress(PhxqError):
                await self._refresh()
        return self._view

    async def require(self, name: str) -> ConsumerGroupConfig:
        """Group ``name``'s spec (see the module docstring)."""
        spec = _find(self._base, name)
        if spec is not None:
            return spec  # the config's: served whatever the map says
        spec = _find(self._view, name)
        fresh = self._read_at is not None and self._clock() - self._read_at < VIEW_MAX_AGE
        if spec is not None and fresh:
            return spec
        try:
            view = await self._refresh()
        except PhxqError:
            if spec is None:
                raise  # cannot tell that it does not exist (503)
            return spec  # the map's home is down: the last view holds
        spec = _find(view, name)
        if spec is None:
            raise problem("not_found", f"no consumer group {name!r} in the cluster")
        return spec

    async def _refresh(self) -> ClusterConfig:
        if not self._base.locks:
            return self._view
        seen = self._reads
        async with self._lock:
            if self._reads == seen:  # nobody read the map while this call waited
                value, _ = await self._locks().kv_get(mapstore.MAP_KEY, timeout=MAP_READ_TIMEOUT)
                if value is not None:
                    self._view = merge_map(self._base, Topology.from_wire(value))
                self._reads += 1
                self._read_at = self._clock()
        return self._view


def _find(cfg: ClusterConfig, name: str) -> ConsumerGroupConfig | None:
    return next((g for g in cfg.consumer_groups if g.name == name), None)
