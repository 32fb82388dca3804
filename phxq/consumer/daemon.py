"""The consumer daemon: the config's consumer groups, their handlers, and one
:class:`~phxq.consumer.member.GroupMember` that delivers them.

``async with ConsumerDaemon(cfg, "c1") as daemon:`` connects to the stores (``phxq.Client``)
and the lock service (``phxq.lock.LockClient``, or the ``locks`` given), builds each
``[[consumer_group]]``'s handler, and runs its member (heartbeat, rebalance, settings, one
:class:`PairWorker` per owned pair: see :mod:`phxq.consumer.member`) plus:

- **the cluster map**: a :class:`~phxq.consumer.mapwatch.MapWatch` long-polls the map in the
  lock service; when a topic gains queues (``phxq admin topic create|alter``) or a consumer
  group is created (``phxq admin group create``) online, the daemon waits (at most
  ``MAP_SYNC`` s) until a store serves that map version, so its workers route the new queues,
  builds the new groups' handlers and hands the member the new pair list: the next rebalance
  assigns the new pairs, no restart. A group both in the config and in the map runs with the
  config's settings (the map's copy was seeded from a config). A group created online and
  deleted online (``phxq admin group delete``) is no longer served: the member hands its pairs
  over (drained like a rebalance: in-flight messages finish, cursors committed, locks
  released). A group of this daemon's config is served whatever the map says;
- **lag**: every ``lag_interval`` s it asks the stores for each queue's cursor and lag (the
  ``status`` RPC, answered by each queue's master) and sets ``phxq_consumer_lag_messages`` for
  the pairs it owns.

Worst-case takeover after a SIGKILL: ``lock_ttl`` (the dead owner's leases run out; the other
consumers see it gone after ``member_ttl`` and are already retrying the locks) plus
``rebalance`` + ``acquire_retry``: about 4 s with the default timings.

Leaving (``close`` / context exit, SIGTERM in ``phxq consumer``) is a clean handoff: the member
key is deleted first so the others start asking for the pairs, then every worker finishes its
in-flight messages, commits and releases its lock (bounded by ``drain_timeout``, after which the
workers are cancelled and their leases simply expire).

Start-up waits (retrying) for the stores and the lock service to answer. A worker that ends
with an unexpected error is logged with its traceback and restarted by the
next rebalance after ``restart_delay``: a bad pair never stops the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from phxq import metrics
from phxq.client import Client
from phxq.config import ClusterConfig, ConsumerGroupConfig
from phxq.consumer.admin import lag as read_lag
from phxq.consumer.assign import Pair, pairs_of
from phxq.consumer.group import GroupRuntime, Timings
from phxq.consumer.handlers import make_handler
from phxq.consumer.locking import LockApi
from phxq.consumer.mapwatch import MapWatch, served
from phxq.consumer.member import GroupMember, wait_event
from phxq.consumer.settings import (
    SETTINGS_PREFIX,
    group_settings,
)
from phxq.errors import BadArgument, PhxqError, Unavailable
from phxq.security.daemon import MemberSecurity
from phxq.security.signing import read_secret
from phxq.tasks import TaskScope
from phxq.topology import Topology

log = logging.getLogger("phxq.consumer")
T = TypeVar("T")

MAP_SYNC = 10.0  # seconds a new map waits for a store to serve it before its pairs start


class ConsumerDaemon:
    """See the module docstring."""

    def __init__(
        self,
        cluster: ClusterConfig,
        name: str,
        *,
        weight: float = 1.0,
        locks: LockApi | None = None,
        timings: Timings | None = None,
        metrics_addr: str | None = None,
        drain_timeout: float = 10.0,
        restart_delay: float = 1.0,
    ) -> None:
        if not name or "/" in name:
            raise BadArgument(f"a consumer name must be non-empty and without '/': {name!r}")
        if not cluster.consumer_groups:
            log.warning(
                "no [[consumer_group]] in %s: this consumer idles until the cluster map has one",
                cluster.source,
            )
        self.cluster = cluster
        self.name = name
        self.weight = weight
        self.owner = f"{name}#{uuid.uuid4().hex[:8]}"  # this incarnation, as lock owner
        self.timings = timings or Timings()
        self.drain_timeout = drain_timeout
        self.restart_delay = restart_delay
        self._metrics_addr = metrics_addr
        # With [security]: the member certificate, reloaded in place on SIGHUP (phxq consumer).
        self.security = MemberSecurity.build(cluster)
        self._locks: Any = locks
        self._lock_client: Any = None
        self._client: Client | None = None
        self._http: Any = None
        # The config's groups, then those the cluster map adds (phxq admin group create).
        self._groups: list[ConsumerGroupConfig] = list(cluster.consumer_groups)
        self._pairs = pairs_of(self._groups, {t.name: t.queues for t in cluster.topics})
        self.member: GroupMember | None = None
        self._closing = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._scope = TaskScope(f"consumer {name}", log)  # owns _main (which owns the rest)

    # ----------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> ConsumerDaemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until it succeeds: daemons may start before the stores or lock nodes
        serve (``phxq dev`` starts everything at once), so waiting is not an error."""
        delay = 0.1
        since = time.monotonic()
        while True:
            try:
                return await call()
            except Unavailable as exc:
                # Daemons started together wait a little for each other: INFO; a long wait
                # is worth a WARNING.
                level = logging.WARNING if time.monotonic() - since > 10 else logging.INFO
                log.log(level, "consumer %s: waiting for %s: %s", self.name, what, exc.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        # A member: with [security] it dials with its member certificate (no token needed).
        member = None if self.security is None else self.security.ssl
        self._client = Client([s.addr for s in self.cluster.stores], ca=member)
        cmap = await self._retry("the stores", self._client.cluster_map)
        # The cluster map's queue counts (topics grow online: phxq admin topic alter).
        self._pairs = self._pairs_in(cmap.topics)
        if self._locks is None:
            from phxq.lock import LockClient

            self._lock_client = LockClient([lk.addr for lk in self.cluster.locks], ca=member)
            self._locks = await self._lock_client.__aenter__()
        settings = await self._retry(
            "the lock service", lambda: self._locks.kv_list(SETTINGS_PREFIX)
        )
        runtimes = {g.name: self._runtime(g, settings) for g in self._groups}
        self.member = GroupMember(
            self.name,
            owner=self.owner,
            weight=self.weight,
            client=self._client,
            locks=self._locks,
            runtimes=runtimes,
            pairs=self._pairs,
            paxos_groups=cmap.groups,
            timings=self.timings,
            restart_delay=self.restart_delay,
        )
        if self._metrics_addr:
            metrics.serve(self._metrics_addr, "consumer")
        await self._retry("the lock service", self.member.join)
        # Unwatched: should the daemon's task group fail, the scope logs it at once (close()
        # raises it as well), instead of the daemon idling with the error unseen.
        self._main = self._scope.spawn(self._serve(), name=f"consumer {self.name}")
        log.info(
            "consumer %s (%s) serving %d pairs of %d consumer groups",
            self.name,
            self.owner,
            len(self._pairs),
            len(runtimes),
        )

    async def close(self) -> None:
        """Hand every pair over (bounded by ``drain_timeout``) and close the connections. Raises
        what stopped the daemon's tasks, if anything did (it was logged when it happened)."""
        self._closing.set()
        if self.member is not None:
            self.member.leave()
        try:
            if self._main is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._main), self.drain_timeout)
                except TimeoutError:
                    log.warning(
                        "consumer %s: handoff took over %ss; cancelling",
                        self.name,
                        self.drain_timeout,
                    )
        finally:
            await self._scope.aclose()
            if self._http is not None:
                await self._http.close()
            if self._lock_client is not None:
                await self._lock_client.__aexit__(None, None, None)
            if self._client is not None:
                await self._client.close()

    async def _serve(self) -> None:
        assert self.member is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._lag_loop(), name=f"lag {self.name}")
            watch = MapWatch(self._locks, self._map_changed)
            following = tg.create_task(watch.run(), name=f"map {self.name}")
            await self.member.run()
            following.cancel()  # the member has handed everything over: stop following

    def _runtime(
        self, group: ConsumerGroupConfig, settings: dict[str, tuple[Any, int]]
    ) -> GroupRuntime:
        """``group``'s handler and runtime state (``settings``: the KV's ``settings/``)."""
        if self._http is None and group.handler.startswith(("http://", "https://")):
            import aiohttp

            self._http = aiohttp.ClientSession()
        secret_file = group.signing_secret_file
        handler = make_handler(
            group.handler,
            timeout=group.handler_timeout,
            session=self._http,
            secret=None if secret_file is None else read_secret(secret_file),
        )
        return GroupRuntime(group, handler, group_settings(group, settings))

    def _pairs_in(self, topics: dict[str, int]) -> list[Pair]:
        """The pairs of the groups served over ``topics`` (name -> queues; the config's
        topics fill in what it lacks)."""
        queues = {t.name: t.queues for t in self.cluster.topics} | topics
        return pairs_of([g for g in self._groups if g.topic in queues], queues)

    async def _map_changed(self, topo: Topology) -> None:
        """A newer cluster map: wait until a store serves it (bounded by ``MAP_SYNC``), then
        give the member the pairs it implies (see the module docstring)."""
        await served(self._client_or_fail(), topo.version, MAP_SYNC)
        assert self.member is not None
        added = [g for name, g in topo.groups.items() if name not in self.member.runtimes]
        if added:
            settings = await self.member.read_settings()  # raises: the watch retries the map
            for group in added:
                try:
                    runtime = self._runtime(group, settings)
                except (PhxqError, OSError) as exc:  # e.g. its signing secret is not here
                    log.error("consumer %s: cannot serve group %s: %s", self.name, group.name, exc)
                    continue
                self._groups.append(group)
                self.member.add_group(runtime)
                log.info(
                    "consumer %s: serving consumer group %s (created online)", self.name, group.name
                )
        kept = set(topo.groups) | {g.name for g in self.cluster.consumer_groups}
        gone = [g.name for g in self._groups if g.name not in kept]
        for name in gone:
            self._groups = [g for g in self._groups if g.name != name]
            self.member.remove_group(name)
            log.info("consumer %s: consumer group %s deleted: handing it over", self.name, name)
        pairs = self._pairs_in({name: t.queues for name, t in topo.topics.items()})
        if pairs != self._pairs:
            fresh = len(set(pairs) - set(self._pairs))
            log.info(
                "consumer %s: cluster map version %d: %d new pairs",
                self.name,
                topo.version,
                fresh,
            )
            self._pairs = pairs
            self.member.set_pairs(pairs)

    # -------------------------------------------------------------------------- loops

    async def _lag_loop(self) -> None:
        while not self._closing.is_set():
            await wait_event(self._closing, self.timings.lag_interval)
            owned = set() if self.member is None else self.member.owned()
            if not owned:
                continue
            try:
                rows = await read_lag(self.cluster, self._client_or_fail())
            except PhxqError as exc:
                log.warning("consumer %s: reading lag failed: %s", self.name, exc.message)
                continue
            for row in rows:
                if (row.group, row.topic, row.queue) in owned and row.lag is not None:
                    metrics.CONSUMER_LAG.labels(row.group, row.topic, str(row.queue)).set(row.lag)

    def _client_or_fail(self) -> Client:
        assert self._client is not None, "start() first"
        return self._client

    # ---------------------------------------------------------------------------- views

    def status(self) -> dict[str, Any]:
        """What this daemon owns right now (for logs, tests and ``phxq admin status``)."""
        return {} if self.member is None else self.member.status()
