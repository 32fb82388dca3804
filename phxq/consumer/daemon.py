"""The consumer daemon: membership, assignment, and one :class:`PairWorker` per owned pair.

``async with ConsumerDaemon(cfg, "c1") as daemon:`` connects to the stores (``phxq.Client``)
and the lock service (``phxq.lock.LockClient``, or the ``locks`` given), and then runs:

- **heartbeat**: every ``heartbeat`` s it puts ``consumers/<name>`` = ``{weight, groups, owner,
  pairs, since}`` with ``ttl = member_ttl``, so a consumer that dies (SIGKILL) leaves the member
  list within ``member_ttl``;
- **rebalance**: every ``rebalance`` s it lists the members, computes the assignment
  (:func:`~phxq.consumer.assign.assign`, the same on every consumer; each consumer group's pairs
  go only to the members that serve that group, i.e. have it in their config) and starts a worker for
  each pair assigned to it (the worker waits for the pair's lock, which the previous owner
  releases after its handoff, or which expires ``lock_ttl`` after that owner died) and drains
  each worker whose pair moved away. It always counts itself as a member (it is alive), so a
  lock-service hiccup that drops its key does not make it drop its pairs;
- **settings**: every ``settings_poll`` s it reads ``settings/`` (rate limits, pause, resume)
  and applies them, with this consumer's share of each group's pairs, to every group;
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
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from phxq import metrics
from phxq.client import Client
from phxq.config import ClusterConfig
from phxq.consumer.admin import lag as read_lag
from phxq.consumer.assign import Pair, assign, owned_by, pairs_of
from phxq.consumer.group import GroupRuntime, Timings
from phxq.consumer.handlers import make_handler
from phxq.consumer.locking import LockApi
from phxq.consumer.pair import Ownership, PairWorker
from phxq.consumer.settings import (
    MEMBERS_PREFIX,
    SETTINGS_PREFIX,
    group_settings,
    member_groups,
    member_key,
    members,
)
from phxq.errors import BadArgument, PhxqError, Unavailable
from phxq.security.daemon import member_credentials
from phxq.security.signing import read_secret
from phxq.store.routing import group_for_queue

log = logging.getLogger("phxq.consumer")
T = TypeVar("T")


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation that comes just as
    # the event is set (the cancelled task would carry on).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _serves(groups: frozenset[str] | None, group: str) -> bool:
    return groups is None or group in groups


@dataclass(slots=True)
class _Running:
    worker: PairWorker
    task: asyncio.Task[None]


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
            log.warning("no [[consumer_group]] in %s: this consumer will idle", cluster.source)
        self.cluster = cluster
        self.name = name
        self.weight = weight
        self.owner = f"{name}#{uuid.uuid4().hex[:8]}"  # this incarnation, as lock owner
        self.timings = timings or Timings()
        self.drain_timeout = drain_timeout
        self.restart_delay = restart_delay
        self._metrics_addr = metrics_addr
        self._given_locks = locks
        self._locks: Any = locks
        self._lock_client: Any = None
        self._client: Client | None = None
        self._http: Any = None
        self._runtimes: dict[str, GroupRuntime] = {}
        self._pairs = pairs_of(cluster.consumer_groups, {t.name: t.queues for t in cluster.topics})
        self._workers: dict[Pair, _Running] = {}
        self._retry_after: dict[Pair, float] = {}
        self._assigned: set[Pair] = set()
        self._members: dict[str, float] = {}
        self._closing = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._started = time.time()
        self._rng = random.Random()

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
        while True:
            try:
                return await call()
            except Unavailable as exc:
                log.warning("consumer %s: waiting for %s: %s", self.name, what, exc.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        # A member: with [security] it dials with its member certificate (no token needed).
        member = member_credentials(self.cluster).ssl
        self._client = Client([s.addr for s in self.cluster.stores], ca=member)
        cmap = await self._retry("the stores", self._client.cluster_map)
        if self._locks is None:
            from phxq.lock import LockClient

            self._lock_client = LockClient([lk.addr for lk in self.cluster.locks], ca=member)
            self._locks = await self._lock_client.__aenter__()
        if any(g.handler.startswith(("http://", "https://")) for g in self.cluster.consumer_groups):
            import aiohttp

            self._http = aiohttp.ClientSession()
        settings = await self._retry("the lock service", self._read_settings)
        for group in self.cluster.consumer_groups:
            secret_file = group.signing_secret_file
            handler = make_handler(
                group.handler,
                timeout=group.handler_timeout,
                session=self._http,
                secret=None if secret_file is None else read_secret(secret_file),
            )
            self._runtimes[group.name] = GroupRuntime(
                group, handler, group_settings(group, settings)
            )
        self._paxos_groups = cmap.groups
        if self._metrics_addr:
            metrics.serve(self._metrics_addr)
        await self._retry("the lock service", self._heartbeat)
        self._main = asyncio.create_task(self._serve(), name=f"consumer {self.name}")
        log.info(
            "consumer %s (%s) serving %d pairs of %d consumer groups",
            self.name,
            self.owner,
            len(self._pairs),
            len(self._runtimes),
        )

    async def close(self) -> None:
        self._closing.set()
        if self._main is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._main), self.drain_timeout)
            except TimeoutError:
                log.warning(
                    "consumer %s: handoff took over %ss; cancelling", self.name, self.drain_timeout
                )
                self._main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._main
        if self._http is not None:
            await self._http.close()
        if self._lock_client is not None:
            await self._lock_client.__aexit__(None, None, None)
        if self._client is not None:
            await self._client.close()

    async def _serve(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self._heartbeat_loop())
            tg.create_task(self._settings_loop())
            tg.create_task(self._lag_loop())
            await self._rebalance_loop()
            with contextlib.suppress(PhxqError):  # best effort: it expires by itself anyway
                await self._locks.kv_delete(member_key(self.name))
            for running in self._workers.values():
                running.worker.drain()

    # -------------------------------------------------------------------------- loops

    async def _heartbeat(self) -> None:
        value = {
            "weight": self.weight,
            "groups": sorted(self._runtimes),
            "owner": self.owner,
            "pairs": sum(1 for r in self._workers.values() if r.worker.state is Ownership.OWNED),
            "since": self._started,
        }
        await self._locks.kv_put(member_key(self.name), value, ttl=self.timings.member_ttl)

    async def _heartbeat_loop(self) -> None:
        while not self._closing.is_set():
            await _wait_event(self._closing, self.timings.heartbeat)
            if self._closing.is_set():
                return
            try:
                await self._heartbeat()
            except PhxqError as exc:
                log.warning("consumer %s: heartbeat failed: %s", self.name, exc.message)

    async def _read_settings(self) -> dict[str, tuple[Any, int]]:
        entries: dict[str, tuple[Any, int]] = await self._locks.kv_list(SETTINGS_PREFIX)
        return entries

    async def _settings_loop(self) -> None:
        while not self._closing.is_set():
            await _wait_event(self._closing, self.timings.settings_poll)
            try:
                entries = await self._read_settings()
            except PhxqError as exc:
                log.warning("consumer %s: reading settings failed: %s", self.name, exc.message)
                continue
            self._apply_settings(entries)

    def _apply_settings(self, entries: dict[str, tuple[Any, int]] | None = None) -> None:
        for name, runtime in self._runtimes.items():
            settings = (
                runtime.settings if entries is None else group_settings(runtime.config, entries)
            )
            total = sum(1 for p in self._pairs if p[0] == name)
            mine = sum(1 for p in self._assigned if p[0] == name)
            runtime.apply(settings, max(mine, 1) / max(total, 1))

    async def _lag_loop(self) -> None:
        while not self._closing.is_set():
            await _wait_event(self._closing, self.timings.lag_interval)
            owned = {pair for pair, r in self._workers.items() if r.worker.state is Ownership.OWNED}
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

    async def _rebalance_loop(self) -> None:
        while not self._closing.is_set():
            try:
                entries = await self._locks.kv_list(MEMBERS_PREFIX)
            except PhxqError as exc:
                log.warning("consumer %s: listing members failed: %s", self.name, exc.message)
            else:
                self._rebalance(members(entries), member_groups(entries))
            await _wait_event(self._closing, self.timings.rebalance)

    def _rebalance(self, live: dict[str, float], serving: dict[str, frozenset[str] | None]) -> None:
        live[self.name] = self.weight  # we are alive, whatever the KV said a moment ago
        serving[self.name] = frozenset(self._runtimes)
        if live != self._members:
            log.info("consumer %s: members %s", self.name, sorted(live))
            self._members = dict(live)
        assigned: set[Pair] = set()
        for group in self._runtimes:
            eligible = {m: w for m, w in live.items() if _serves(serving.get(m), group)}
            group_pairs = [p for p in self._pairs if p[0] == group]
            assigned |= owned_by(assign(group_pairs, eligible), self.name)
        self._assigned = assigned
        self._apply_settings()
        now = time.monotonic()
        for pair, running in list(self._workers.items()):
            if running.task.done():
                del self._workers[pair]
            elif pair not in self._assigned and not running.worker.draining:
                log.info("consumer %s: handing over %s", self.name, running.worker.lock_name)
                running.worker.drain()
        for pair in sorted(self._assigned):
            if pair in self._workers or self._retry_after.get(pair, 0.0) > now:
                continue
            worker = PairWorker(
                pair,
                self._runtimes[pair[0]],
                client=self._client_or_fail(),
                locks=self._locks,
                owner=self.owner,
                timings=self.timings,
                paxos_group=group_for_queue(pair[2], self._paxos_groups),
                rng=self._rng,
            )
            task = self._tg.create_task(self._run_worker(worker), name=worker.lock_name)
            self._workers[pair] = _Running(worker, task)

    def _client_or_fail(self) -> Client:
        assert self._client is not None, "start() first"
        return self._client

    async def _run_worker(self, worker: PairWorker) -> None:
        try:
            await worker.run()
        except Exception:  # a bad pair must not stop the daemon: log it, restart it later
            log.exception("consumer %s: %s stopped on an error", self.name, worker.lock_name)
            self._retry_after[worker.pair] = time.monotonic() + self.restart_delay

    # ---------------------------------------------------------------------------- views

    def status(self) -> dict[str, Any]:
        """What this daemon owns right now (for logs, tests and ``phxq admin status``)."""
        return {
            "name": self.name,
            "owner": self.owner,
            "members": dict(self._members),
            "assigned": sorted(self._assigned),
            "pairs": {
                r.worker.lock_name: {
                    "state": r.worker.state.value,
                    "token": r.worker.token,
                    "cursor": r.worker.committed,
                    "blocked": r.worker.blocked,
                }
                for r in self._workers.values()
            },
        }
