"""The failover hedge of :class:`phxq.Client`: a request to a master that went silent (paused,
SIGSTOPped, cut off: its sockets stay open and say nothing) is given up as soon as another
store of its set says it is master now, instead of after ``request_timeout``.

A request registers in ``Client._inflight`` (:class:`phxq.client.sweep.InFlight`: two dict
operations, no timer of its own) with ``(cmap, route, addr, long_poll)``; one still unanswered
``HEDGE_AFTER`` s later gets a watch (:meth:`HedgeMixin._watch`). The watch asks the other
stores of the set every ``HEDGE_EVERY`` s who is master; once one says it is itself, the watch
cancels the request (``_call_master`` retries it there: a retry re-sends the same dedup ids, and
a dequeue is a read).

A long poll (``long_poll``: a dequeue's ``wait``, up to 60 s) is silent for its whole wait on a
healthy master with nothing to read, and asking the other stores twice each ``HEDGE_EVERY`` s
for every poll in flight would load them with ``meta`` calls for nothing. So a long poll is
watched only from ``HEDGE_AFTER`` s past ``min(wait, LONG_POLL_CHECK)`` (a consumer daemon's
polls of 0.5 s, answered in time by a healthy master, start no watch at all), and its watch first
only checks that the polled store is alive and still master (:meth:`HedgeMixin._still_master`,
every ``LONG_POLL_CHECK`` s; one ``meta`` per store per check, shared by every long poll the
client has in flight to that store). Only when that store does not answer within
``META_TIMEOUT``, or answers that it is no longer master of the group, does the watch ask the
others as above, until the poll ends. A long poll is thus left at most about
``LONG_POLL_CHECK + META_TIMEOUT`` s after its master went silent (or the election, if later),
and never cancelled while its master answers and no other store claims the group.
"""

from __future__ import annotations

import asyncio
from typing import Any

from phxq.client.sweep import InFlight
from phxq.client.types import ClusterMap, Route
from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool
from phxq.tasks import TaskScope

META_TIMEOUT = 0.5
HEDGE_AFTER = 0.2  # an attempt unanswered this long: ask the other stores who is master now
HEDGE_EVERY = 0.1
LONG_POLL_CHECK = 0.5  # a long poll's master is asked whether it is alive this often


class HedgeMixin:
    """The failover watch of :class:`phxq.Client` (see the module docstring)."""

    _pool: RpcPool
    _tasks: TaskScope
    _inflight: InFlight

    def _hedge(self, task: asyncio.Task[Any], info: tuple[ClusterMap, Route, str, float]) -> None:
        """``task``'s request is unanswered after ``HEDGE_AFTER`` s: watch it."""
        if not self._tasks.closed:
            coro = self._watch(task, *info)
            watch = self._tasks.spawn(coro, name="phxq.Client failover watch")
            self._inflight.watches[task] = watch

    async def _watch(
        self, task: asyncio.Task[Any], cmap: ClusterMap, route: Route, addr: str, long_poll: float
    ) -> None:
        """Every ``HEDGE_EVERY`` s ask the stores of ``route``'s set but ``addr`` who is
        master; once one says it is itself, make it the master and end ``task``'s request to
        ``addr`` (cancel it: ``_call_master`` raises ``_Moved``). For a long poll, first wait
        until ``addr`` stops being master or answering (see the module docstring)."""
        ids = [n for n in cmap.set_nodes(route[0]) or sorted(cmap.nodes) if cmap.nodes[n] != addr]
        group = str(route[1])
        if long_poll:
            polled = next((n for n, a in cmap.nodes.items() if a == addr), None)
            while await self._still_master(addr, polled, group):
                await asyncio.sleep(LONG_POLL_CHECK)

        async def claims(node: int) -> bool:
            data = await self._meta(cmap.nodes[node])
            try:
                return bool(data is not None and data.get("masters", {}).get(group) == node)
            except (AttributeError, TypeError):
                return False  # malformed: it does not claim the group

        while True:
            said = await asyncio.gather(*(claims(n) for n in ids))
            claimant = next((n for n, yes in zip(ids, said, strict=True) if yes), None)
            if claimant is not None:
                cmap.masters[route] = claimant
                # (the request's end cancels this watch: a request still registered is its)
                if task in self._inflight.due:
                    self._inflight.moved.add(task)
                    task.cancel()
                return
            await asyncio.sleep(HEDGE_EVERY)

    async def _still_master(self, addr: str, node: int | None, group: str) -> bool:
        """Whether the store at ``addr`` (store ``node``) answers ``meta`` within
        ``META_TIMEOUT`` saying it is master of ``group``. The answer of a check started less
        than ``LONG_POLL_CHECK`` s ago is shared (awaited if still under way)."""
        loop = asyncio.get_running_loop()
        checks = self._inflight.checks
        latest = checks.get(addr)
        if latest is None or loop.time() - latest[0] >= LONG_POLL_CHECK:
            check = self._tasks.spawn(self._meta(addr), name="phxq.Client master check")
            latest = checks[addr] = (loop.time(), check)
        data = await asyncio.shield(latest[1])  # (a watch ending must not end others' check)
        try:
            return bool(data is not None and data.get("masters", {}).get(group) == node)
        except (AttributeError, TypeError):
            return False  # malformed: it does not say it is master

    async def _meta(self, addr: str) -> Any:
        """``addr``'s ``meta`` answer, or None when it does not answer within
        ``META_TIMEOUT`` (connecting included)."""
        try:
            async with asyncio.timeout(META_TIMEOUT):
                return await self._pool.call(addr, "meta", {}, timeout=META_TIMEOUT)
        except (PhxqError, TimeoutError):
            return None  # silent, or it could not answer: the callers treat it as no claim
