"""Routing for :class:`phxq.Client`: the cluster map, and calling a queue's group master.

- ``cluster_map()`` fetches the map (``meta``: groups, every store and its set, topics, the set
  of each queue, the map version, the masters that store knows) from any reachable store and
  caches it; a map older than the one held is ignored, masters of other sets are kept.
- ``_call_master(topic, queue, ...)`` sends to the master of ``queue``'s (set, group):
  ``NotMaster(hint)`` updates the master cache and re-sends at once (a hint naming the store
  asked -- a new master still applying what its predecessor chose -- re-sends to it after the
  jittered backoff instead); ``StaleMap`` (the request
  named an older map version than the store's, or the queue lives on another set) refetches the
  map, first from the store that refused, and re-sends; ``Unavailable`` is retried with
  exponential backoff (at most ``RETRY_BACKOFF_MAX``) until ``retry_timeout``. Requests carry
  the map version (param ``map``).
- Failover: after a failed attempt every store of the set is asked who is master (a store that
  says it is itself master ends the asking at once, and is tried next without a pause); a hint
  naming a store that just failed (no answer) is not followed for a while, but a store that
  only knew no master a moment ago is followed as soon as it or others say it is master
  (:mod:`phxq.client.avoid`). An attempt unanswered after ``HEDGE_AFTER``
  s (a paused or cut-off master: its sockets stay silent) asks the other stores every
  ``HEDGE_EVERY`` s, and is given up as soon as one of them says it is master now, instead of
  after ``request_timeout`` (the retry re-sends the same dedup ids: nothing is stored twice).
  Long polls too, once their master stops answering (:mod:`phxq.client.hedge`); a long poll
  re-sent waits only what is left of its wait.
- A topic or queue the map does not have refetches it once (at most every ``MAP_RECHECK`` s):
  topics are created and grown online.
- A moved queue (``phxq admin queue move``): reads and commits name an offset and go to the
  set holding it (``ClusterMap.set_for``, from the map's segment history; ``after=``);
  ``QueueMoved`` from a sealed set (a ``StaleMap`` naming the new set) sends the next
  attempts there at once, before the map says so. A multi-queue enqueue batch gets
  ``QueueMoved`` raised (``follow_moves=False``) so the sender splits it per queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Container
from typing import Any

from phxq.budget import Budget, bounded, describe
from phxq.client.avoid import Avoid
from phxq.client.hedge import HEDGE_AFTER, LONG_POLL_CHECK, META_TIMEOUT, HedgeMixin
from phxq.client.sweep import InFlight
from phxq.client.types import ClusterMap, Route
from phxq.errors import (
    BadArgument,
    Forbidden,
    NotMaster,
    PhxqError,
    QueueMoved,
    StaleMap,
    Unauthenticated,
    Unavailable,
    UnknownTopic,
)
from phxq.net.rpc import RpcPool
from phxq.routing import queue_for_key
from phxq.tasks import TaskScope

RETRY_BACKOFF_MAX = 0.1  # between attempts while no master is known (an election takes ~0.1 s)
MAP_RECHECK = 1.0  # an unknown topic or queue refetches the map at most this often


class RoutingMixin(HedgeMixin):
    """The routing half of :class:`phxq.Client` (see the module docstring)."""

    _seeds: list[str]
    _pool: RpcPool
    _map: ClusterMap | None
    _map_lock: asyncio.Lock
    _miss_refreshed: float
    _request_timeout: float
    _retry_timeout: float
    _tasks: TaskScope
    _inflight: InFlight

    async def cluster_map(
        self, *, refresh: bool = False, timeout: float | None = None
    ) -> ClusterMap:
        """The cluster map, fetched from any reachable store (cached; ``refresh`` asks again).
        ``Unavailable`` when no store answers within ``timeout`` (default ``retry_timeout``;
        each store gets at most ``META_TIMEOUT``); ``Unauthenticated`` / ``Forbidden`` at once."""
        return await self._map_within(Budget.start(timeout, self._retry_timeout), refresh)

    async def _map_within(
        self, budget: Budget | None, refresh: bool = False, last_ask: set[str] | None = None
    ) -> ClusterMap:
        """The map (see :meth:`cluster_map`); the stores in ``last_ask`` (that just failed) are
        asked after every other."""
        if self._map is not None and not refresh:
            return self._map
        async with self._map_lock:
            if self._map is not None and not refresh:
                return self._map
            last: PhxqError | None = None
            seeds = list(self._map.nodes.values()) if self._map else []
            addrs = list(dict.fromkeys([*self._seeds, *seeds]))
            if last_ask:
                addrs.sort(key=lambda a: a in last_ask)
            for addr in addrs:
                # Short: a paused (SIGSTOPped) seed must not hold up routing for long.
                wait = META_TIMEOUT if budget is None else min(META_TIMEOUT, budget.remaining())
                if wait <= 0:
                    break
                try:
                    data = await self._pool.call(addr, "meta", {}, timeout=wait)
                except (Unauthenticated, Forbidden):
                    raise  # every store would refuse the same credentials
                except PhxqError as exc:
                    last = exc
                    continue
                self._adopt_map(ClusterMap.from_wire(data))
                assert self._map is not None
                return self._map
            raise Unavailable(f"no store reachable at {self._seeds}: {last}")

    def _adopt_map(self, new: ClusterMap) -> None:
        """Use ``new`` (a store's answer), keeping the masters it cannot know (other sets')."""
        old = self._map
        if old is not None:
            if new.version < old.version:
                return  # a store behind the map we hold: ours is newer
            for route, node in old.masters.items():
                new.masters.setdefault(route, node)
        self._map = new

    async def _known(self, cmap: ClusterMap, topic: str, queue: int | None) -> ClusterMap:
        """``cmap``, or a fresh map when it lacks ``topic`` or ``queue`` (a topic created or
        grown online since it was fetched); refetched so at most every ``MAP_RECHECK`` s."""
        queues = cmap.topics.get(topic)
        if queues is not None and (not isinstance(queue, int) or queue < queues):
            return cmap
        if time.monotonic() - self._miss_refreshed < MAP_RECHECK:
            return cmap
        self._miss_refreshed = time.monotonic()
        with contextlib.suppress(Unavailable):
            return await self.cluster_map(refresh=True)
        return cmap

    def _queue_of(self, cmap: ClusterMap, topic: str, key: str | None, queue: int | None) -> int:
        queues = cmap.topics.get(topic)
        if queues is None:
            raise UnknownTopic(f"unknown topic {topic!r}")
        if queue is not None:
            if not isinstance(queue, int) or not 0 <= queue < queues:
                raise BadArgument(f"queue must be an int in [0, {queues}), got {queue!r}")
            return queue
        if key is None:
            return random.randrange(queues)
        return queue_for_key(key, queues)

    def _master_addr(self, cmap: ClusterMap, route: Route, avoid: Avoid | None = None) -> str:
        node = cmap.masters.get(route)
        known = cmap.nodes.get(node) if node is not None else None
        if known is not None and (avoid is None or known not in avoid):
            return known  # (a master that is down was put back by a map refresh: skip it)
        # Unknown master: ask the preferred one (group % N within the set); it answers or
        # redirects. Skip the nodes `avoid` skips (down, or knew no master: a store cut off
        # from its peers answers NotMaster without a hint forever, while the others know the
        # new master).
        ids = cmap.set_nodes(route[0]) or sorted(cmap.nodes)
        group = route[1]
        order = [cmap.nodes[ids[(group + i) % len(ids)]] for i in range(len(ids))]
        if avoid is None:
            return order[0]
        if all(avoid.skips(a) for a in order):
            avoid.clear()
            return known or order[0]
        return next(a for a in order if not avoid.skips(a))

    def _learn_master(self, cmap: ClusterMap, route: Route, addr: str) -> None:
        for node, node_addr in cmap.nodes.items():
            if node_addr == addr:
                cmap.masters[route] = node
                return

    def _learn_hint(self, cmap: ClusterMap, route: Route, exc: NotMaster) -> None:
        hint = exc.hint
        for node, addr in cmap.nodes.items():
            if addr == hint:
                cmap.masters[route] = node
                return
        cmap.masters.pop(route, None)

    async def _call_master(
        self,
        topic: str,
        queue: int,
        method: str,
        params: Any,
        *,
        extra_time: float = 0.0,
        budget: Budget | None = None,
        after: Any = ...,
        follow_moves: bool = True,
        to_set: int | None = None,
    ) -> Any:
        """Call ``method`` on the master of the group holding ``queue`` of ``topic`` (in the
        store set the cluster map places it on), following NotMaster and StaleMap (the map is
        refreshed) and retrying Unavailable with backoff until the ``budget`` runs out (default
        ``retry_timeout`` plus ``extra_time``); then ``Unavailable`` saying which stores of the
        set answered what ("no majority" when fewer than a majority answered at all). After a
        failed attempt every store of the set is asked at once who the master is (``meta``).
        ``extra_time`` is added to each call's timeout (for a long poll: ``params['wait']``,
        which a retry shortens to what is left of it)."""
        if budget is None:
            budget = Budget.start(None, self._retry_timeout, extra_time)
        backoff = 0.02
        avoid: Avoid | None = None  # made at the first failure (none on the common path)
        moved_to = to_set  # the set a QueueMoved named (the map may lag behind)
        while True:
            cmap = self._map if self._map is not None else await self._map_within(budget)
            if moved_to is not None:
                route = (moved_to, queue % cmap.groups)
            elif after is not ...:
                route = (cmap.set_for(topic, queue, after), queue % cmap.groups)
            else:
                route = cmap.route(topic, queue)
            if cmap.version and isinstance(params, dict):
                params["map"] = cmap.version  # a store with a newer map answers StaleMap
            addr = self._master_addr(cmap, route, avoid)
            timeout = min(self._request_timeout + extra_time, budget.deadline - time.monotonic())
            if timeout <= 0:
                raise self._no_master(cmap, route, budget)
            try:
                # The failover hedge (phxq.client.hedge): a request unanswered after
                # HEDGE_AFTER s is watched; if, meanwhile, another store of the set says it is
                # master, the watch cancels this task (``moved``) and the request is left as
                # ``_Moved``: a paused or cut-off master is left once the others elected a new
                # one, not after ``request_timeout``. Its answer, if it ever comes, is dropped:
                # safe, as the retry re-sends the same dedup ids (a long poll is a read). While
                # answers come in time this costs two dict operations (``sweep.InFlight``: one
                # timer for every request in flight), no timer or coroutine of its own.
                loop = asyncio.get_running_loop()
                task = asyncio.current_task(loop)
                assert task is not None  # called from a task (the sender's or the caller's)
                inflight = self._inflight
                # A long poll is silent for its wait on a healthy master: overdue only past it
                # (a short one, like the consumer's 0.5 s, then never starts a watch at all).
                due = loop.time() + HEDGE_AFTER
                if extra_time:
                    due += min(extra_time, LONG_POLL_CHECK)
                inflight.due[task] = (due, (cmap, route, addr, extra_time))
                if due < inflight.at:
                    inflight.arm(loop, due)
                cancelling = task.cancelling()  # cancels already pending when it started
                try:
                    reply = await self._pool.call(addr, method, params, timeout=timeout)
                except asyncio.CancelledError:
                    # Our own cancel (the watch saw another master) unless someone else's
                    # is pending.
                    if task in inflight.moved and task.uncancel() <= cancelling:
                        raise _Moved from None
                    raise
                finally:
                    del inflight.due[task]
                    if inflight.watches or inflight.moved:
                        inflight.ended(task)
                if route not in cmap.masters:
                    # Only the master answers: ask it first next time (else every call asked a
                    # node that knew no master first, e.g. a preferred node cut off from its peers).
                    self._learn_master(cmap, route, addr)
                return reply
            except QueueMoved as exc:
                # Sealed here by a queue move: go to the set it names (it serves the queue as
                # soon as it adopted it), and refresh the map for the calls after this one.
                if not follow_moves or budget.remaining() < backoff:
                    raise
                target = exc.data.get("set")
                moved_to = target if isinstance(target, int) and target != route[0] else None
                await self._refresh_after_stale(cmap, addr)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
            except StaleMap as exc:
                # The queue lives elsewhere in a newer map: fetch it and route again (from a
                # store of another set if this one's map is older than ours).
                if budget.remaining() < backoff:
                    raise
                if exc.data.get("set") is not None:
                    moved_to = None  # "not here": the map decides (only the version: stay)
                await self._refresh_after_stale(cmap, addr)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
            except _Moved:  # (raised above, by the hedge)
                budget.no_answer(addr, "silent while another store became master")
                avoid = avoid or Avoid()
                avoid.failed(addr)
            except NotMaster as exc:
                budget.answered(addr, f"not master, {_master_said(cmap, exc.hint)}")
                avoid = avoid or Avoid()
                if exc.hint == addr:
                    # Master, but not serving yet (still applying what its predecessor chose):
                    # ask it again after a pause, not in a busy loop while it catches up.
                    self._learn_hint(cmap, route, exc)
                    pause = min(backoff * (0.5 + random.random()), budget.remaining())
                    await asyncio.sleep(max(0.0, pause))
                    backoff = min(backoff * 2, RETRY_BACKOFF_MAX)
                elif exc.hint is None or exc.hint in avoid:
                    # Knows no master, or names one that just failed: ask every store.
                    if exc.hint is None:
                        avoid.knows_no_master(addr)
                    cmap.masters.pop(route, None)
                    backoff = await self._regroup(cmap, route, budget, avoid, backoff)
                else:
                    self._learn_hint(cmap, route, exc)
            except Unavailable as exc:
                if exc.data.get("addr") == addr:  # no answer (timeout, refused, lost)
                    budget.no_answer(addr, describe(exc))
                else:  # the store answered that it could not do it (e.g. nothing chosen)
                    budget.answered(addr, describe(exc))
                avoid = avoid or Avoid()
                avoid.failed(addr)
                cmap.masters.pop(route, None)
                if budget.remaining() <= 0:
                    raise self._no_master(cmap, route, budget) from None
                backoff = await self._regroup(cmap, route, budget, avoid, backoff)
                if route not in cmap.masters:
                    # A dead master may have vanished from the map we hold; refresh lazily.
                    with contextlib.suppress(Unavailable):
                        await self._map_within(budget, refresh=True, last_ask=avoid.down())
            if budget.expired():
                raise self._no_master(cmap, route, budget)
            if extra_time and isinstance(params, dict) and "wait" in params:
                # (only after a failed attempt) A long poll re-sent waits what is left of its
                # wait, so that the call still ends when the wait it was given has passed.
                start = budget.deadline - budget.seconds
                params["wait"] = max(0.0, start + extra_time - time.monotonic())

    async def _regroup(
        self, cmap: ClusterMap, route: Route, budget: Budget, avoid: Container[str], backoff: float
    ) -> float:
        """After a failed attempt: ask every store who is master (:meth:`_probe`); unless one
        said it is, pause ``backoff`` (jittered) first. Returns the next backoff."""
        await self._probe(cmap, route, budget, avoid)
        if route in cmap.masters:
            return backoff
        pause = min(backoff * (0.5 + random.random()), budget.remaining())
        await asyncio.sleep(max(0.0, pause))
        return min(backoff * 2, RETRY_BACKOFF_MAX)

    async def _probe(
        self, cmap: ClusterMap, route: Route, budget: Budget, avoid: Container[str]
    ) -> None:
        """Ask every store of ``route``'s set at once (``meta``, at most ``META_TIMEOUT``) who
        is master of its group: the answers go to ``budget`` (for the error, if the call gives
        up). A store that says it is master itself (and did not just fail: ``avoid``) ends the
        asking at once and is the next one asked (a silent store is not waited for); else the
        master most of them name, unless it just failed."""
        wait = min(META_TIMEOUT, budget.remaining())
        if wait <= 0:
            return
        set_number, group = route
        named: list[int] = []
        claimant: list[int] = []
        ids = cmap.set_nodes(set_number) or sorted(cmap.nodes)

        async def ask(node: int, scope: asyncio.Timeout) -> None:
            addr = cmap.nodes[node]
            try:
                data = await self._pool.call(addr, "meta", {}, timeout=wait)
                master = data.get("masters", {}).get(str(group))
            except PhxqError as exc:
                budget.no_answer(addr, describe(exc))
                return
            except (AttributeError, TypeError):  # a malformed answer: nothing to learn
                budget.answered(addr, "a malformed meta answer")
                return
            except asyncio.CancelledError:
                if not claimant:  # the wait ran out (still connecting): it did not answer
                    budget.no_answer(addr, f"meta timed out after {wait:g}s")
                raise
            budget.answered(addr, _master_said(cmap, master))
            if isinstance(master, int) and master in cmap.nodes and cmap.nodes[master] not in avoid:
                named.append(master)
                if master == node and not claimant:
                    claimant.append(node)
                    scope.reschedule(asyncio.get_running_loop().time())

        try:
            async with asyncio.timeout(wait) as scope:
                await asyncio.gather(*(ask(n, scope) for n in ids))
        except TimeoutError:
            pass  # a store claimed the group (the others need not answer), or time ran out
        if claimant:
            cmap.masters[route] = claimant[0]
        elif named:
            cmap.masters[route] = max(set(named), key=named.count)

    def _no_master(self, cmap: ClusterMap, route: Route, budget: Budget) -> Unavailable:
        """``Unavailable`` for a call to ``route``'s master that ran out of time."""
        ids = cmap.set_nodes(route[0]) or sorted(cmap.nodes)
        members = [cmap.nodes[n] for n in ids]
        names = {cmap.nodes[n]: f"store {n}" for n in ids}
        many_sets = len(set(cmap.sets.values())) > 1
        what = f"group {route[1]}" + (f" of store set {route[0]}" if many_sets else "")
        return budget.error(what, members, names)

    def _expired(self, budget: Budget) -> Unavailable:
        """``Unavailable`` for a public call whose ``timeout`` passed (see ``budget.bounded``)."""
        topic, queue = budget.where
        cmap = self._map
        if cmap is None:
            return Unavailable(
                f"no store answered within {budget.seconds:g}s (asked {self._seeds})",
                budget.data(self._seeds),
            )
        if queue is None or topic not in cmap.topics:
            members = list(cmap.nodes.values())
            names = {a: f"store {n}" for n, a in cmap.nodes.items()}
            return budget.error(f"topic {topic!r}", members, names)
        return self._no_master(cmap, cmap.route(topic, queue), budget)

    def _within(self, timeout: float | None, extra: float = 0.0) -> Budget:
        """A call's budget: ``timeout`` seconds (default ``retry_timeout``) plus ``extra``."""
        return Budget.start(timeout, self._retry_timeout, extra)

    def _bounded(
        self, budget: Budget, topic: str, queue: int | None
    ) -> contextlib.AbstractAsyncContextManager[Budget]:
        """The hard limit around a public call about ``queue`` of ``topic`` (None: not chosen
        yet): ``Unavailable`` at the budget's deadline."""
        budget.where = (topic, queue if type(queue) is int else None)
        return bounded(budget, lambda: self._expired(budget))

    async def _refresh_after_stale(self, cmap: ClusterMap, addr: str) -> None:
        """Refresh the map after ``StaleMap`` from ``addr`` (``Unavailable`` is left for the
        next attempt: the request is retried with whatever map the client then holds)."""
        with contextlib.suppress(PhxqError):
            # First from the store that refused: its map is at least as new as the request's.
            data = await self._pool.call(addr, "meta", {}, timeout=META_TIMEOUT)
            fresh = ClusterMap.from_wire(data)
            if fresh.version > cmap.version:
                async with self._map_lock:
                    self._adopt_map(fresh)
                return
        with contextlib.suppress(Unavailable):
            await self.cluster_map(refresh=True)


class _Moved(Exception):
    """An attempt given up: another store became master while it was unanswered."""


def _master_said(cmap: ClusterMap, master: object) -> str:
    """What a store said about a group's master (a node id, an address or None)."""
    if master is None:
        return "knows no master"
    for node, addr in cmap.nodes.items():
        if master in (node, addr):
            return f"says store {node} is master"
    return f"says {master} is master"
