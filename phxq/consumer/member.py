"""One member of the consumer tier: membership, balanced assignment and a worker per owned pair.

Both the consumer daemon (:class:`~phxq.consumer.daemon.ConsumerDaemon`, handlers from the
config) and ``Client.consume`` (the messages go to the caller's ``async for``) are a
:class:`GroupMember`::

    member = GroupMember(name, owner=..., weight=1.0, client=client, locks=locks,
                         runtimes={group: GroupRuntime}, pairs=[...], paxos_groups=16)
    await member.join()          # the first heartbeat (raises if the lock service cannot answer)
    await member.run()           # until member.leave(); then hands every pair over
    member.owned() -> set[Pair]  # pairs held right now;  member.status() -> dict
    member.set_pairs(pairs)      # the pairs grew (queues added online): the next rebalance
                                 # assigns them
    member.add_group(runtime)    # a consumer group created online (its pairs: set_pairs)
    member.remove_group(name)    # one deleted online: its pairs are handed over

While it runs (one ``asyncio.TaskGroup`` owns every task):

- **heartbeat**: every ``heartbeat`` s it puts ``consumers/<name>`` = ``{weight, groups, owner,
  pairs, since}`` with ``ttl = member_ttl``, so a member that dies leaves the list within
  ``member_ttl``;
- **rebalance**: every ``rebalance`` s it lists the members and computes the assignment
  (:func:`~phxq.consumer.assign.assign`, the same on every member; each consumer group's pairs
  go only to the members that serve that group), starts a :class:`PairWorker` for each pair
  assigned to it (the worker waits for the pair's lock, which the previous owner releases after
  its handoff, or which expires ``lock_ttl`` after that owner died) and drains each worker whose
  pair moved away. It always counts itself as a member (it is alive), so a lock-service hiccup
  that drops its key does not make it drop its pairs;
- **settings**: every ``settings_poll`` s it reads ``settings/`` (rate limits, pause, resume)
  and applies them, with this member's share of each group's pairs, to every group.

Leaving is a clean handoff: the member key is deleted first so the others start asking for the
pairs, then every worker finishes its in-flight messages, commits and releases its lock. A
worker that ends with an unexpected error is logged with its traceback and restarted by the next
rebalance after ``restart_delay``: a bad pair never stops the member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phxq.client import Client
from phxq.consumer.assign import Pair, assign, owned_by
from phxq.consumer.group import GroupRuntime, Timings
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
from phxq.errors import BadArgument, PhxqError
from phxq.routing import group_for_queue

log = logging.getLogger("phxq.consumer")


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait up to ``timeout`` for ``event``."""
    # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation that comes just as
    # the event is set (the cancelled task would carry on).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _serves(groups: frozenset[str] | None, group: str) -> bool:
    return groups is None or group in groups


@dataclass(slots=True)
class Running:
    worker: PairWorker
    task: asyncio.Task[None]


class GroupMember:
    """See the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        owner: str,
        weight: float,
        client: Client,
        locks: LockApi,
        runtimes: Mapping[str, GroupRuntime],
        pairs: Sequence[Pair],
        paxos_groups: int,
        timings: Timings,
        restart_delay: float = 1.0,
        rng: random.Random | None = None,
        balanced: bool = True,
    ) -> None:
        if not name or "/" in name:
            raise BadArgument(f"a consumer name must be non-empty and without '/': {name!r}")
        self.name = name
        self.owner = owner
        self.weight = weight
        self.timings = timings
        self.restart_delay = restart_delay
        # balanced=False: no membership; every pair given is this member's (it waits for each
        # lock while someone else holds it). ``Client.consume(queues=...)`` works this way.
        self.balanced = balanced
        self.runtimes = dict(runtimes)
        self.pairs = list(pairs)
        self.workers: dict[Pair, Running] = {}
        self._client = client
        self._locks = locks
        self._paxos_groups = paxos_groups
        self._rng = rng or random.Random()
        self._retry_after: dict[Pair, float] = {}
        self._assigned: set[Pair] = set()
        self._members: dict[str, float] = {}
        self._leaving = asyncio.Event()
        self._started = time.time()
        self._tg: asyncio.TaskGroup | None = None

    # ----------------------------------------------------------------------- life cycle

    async def read_settings(self) -> dict[str, tuple[Any, int]]:
        """The ``settings/`` entries of the KV (raises if the lock service cannot answer)."""
        entries: dict[str, tuple[Any, int]] = await self._locks.kv_list(SETTINGS_PREFIX)
        return entries

    async def join(self) -> None:
        """Put the first heartbeat (raises if the lock service cannot answer)."""
        if self.balanced:
            await self._heartbeat()

    def leave(self) -> None:
        """Ask :meth:`run` to hand every pair over and return. Idempotent."""
        self._leaving.set()

    def set_pairs(self, pairs: Sequence[Pair]) -> None:
        """Balance over ``pairs`` from the next rebalance on (queues and topics are added
        online; a pair no longer listed is handed over like one assigned elsewhere)."""
        self.pairs = list(pairs)

    def add_group(self, runtime: GroupRuntime) -> None:
        """Serve one more consumer group (announced with the next heartbeat)."""
        self.runtimes[runtime.name] = runtime

    def remove_group(self, name: str) -> None:
        """Stop serving consumer group ``name`` (deleted online): from the next rebalance its
        pairs are assigned to nobody, so each worker of it is drained like a pair assigned
        elsewhere (in-flight messages finish, the cursor is committed, the lock released),
        and the next heartbeat no longer announces it. No-op if it is not served."""
        self.runtimes.pop(name, None)
        self.pairs = [p for p in self.pairs if p[0] != name]

    @property
    def leaving(self) -> bool:
        return self._leaving.is_set()

    async def run(self) -> None:
        """Heartbeat, settings, rebalance and workers until :meth:`leave`; then hand over."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if self.balanced:
                tg.create_task(self._heartbeat_loop(), name=f"heartbeat {self.name}")
            tg.create_task(self._settings_loop(), name=f"settings {self.name}")
            await self._rebalance_loop()
            if self.balanced:
                with contextlib.suppress(PhxqError):  # best effort: it expires by itself anyway
                    await self._locks.kv_delete(member_key(self.name))
            for running in self.workers.values():
                running.worker.drain()

    # -------------------------------------------------------------------------- loops

    async def _heartbeat(self) -> None:
        value = {
            "weight": self.weight,
            "groups": sorted(self.runtimes),
            "owner": self.owner,
            "pairs": len(self.owned()),
            "since": self._started,
        }
        await self._locks.kv_put(member_key(self.name), value, ttl=self.timings.member_ttl)

    async def _heartbeat_loop(self) -> None:
        while not self._leaving.is_set():
            await wait_event(self._leaving, self.timings.heartbeat)
            if self._leaving.is_set():
                return
            try:
                await self._heartbeat()
            except PhxqError as exc:
                log.warning("consumer %s: heartbeat failed: %s", self.name, exc.message)

    async def _settings_loop(self) -> None:
        while not self._leaving.is_set():
            await wait_event(self._leaving, self.timings.settings_poll)
            try:
                entries = await self.read_settings()
            except PhxqError as exc:
                log.warning("consumer %s: reading settings failed: %s", self.name, exc.message)
                continue
            self._apply_settings(entries)

    def _apply_settings(self, entries: dict[str, tuple[Any, int]] | None = None) -> None:
        for name, runtime in self.runtimes.items():
            settings = (
                runtime.settings if entries is None else group_settings(runtime.config, entries)
            )
            total = sum(1 for p in self.pairs if p[0] == name)
            mine = sum(1 for p in self._assigned if p[0] == name)
            runtime.apply(settings, max(mine, 1) / max(total, 1))

    async def _rebalance_loop(self) -> None:
        while not self._leaving.is_set():
            if not self.balanced:
                self._rebalance({self.name: self.weight}, {})
                await wait_event(self._leaving, self.timings.rebalance)
                continue
            try:
                entries = await self._locks.kv_list(MEMBERS_PREFIX)
            except PhxqError as exc:
                log.warning("consumer %s: listing members failed: %s", self.name, exc.message)
            else:
                self._rebalance(members(entries), member_groups(entries))
            await wait_event(self._leaving, self.timings.rebalance)

    def _rebalance(self, live: dict[str, float], serving: dict[str, frozenset[str] | None]) -> None:
        assert self._tg is not None, "run() first"
        live[self.name] = self.weight  # we are alive, whatever the KV said a moment ago
        serving[self.name] = frozenset(self.runtimes)
        if live != self._members:
            log.info("consumer %s: members %s", self.name, sorted(live))
            self._members = dict(live)
        assigned: set[Pair] = set()
        for group in self.runtimes:
            eligible = {m: w for m, w in live.items() if _serves(serving.get(m), group)}
            group_pairs = [p for p in self.pairs if p[0] == group]
            assigned |= owned_by(assign(group_pairs, eligible), self.name)
        self._assigned = assigned
        self._apply_settings()
        now = time.monotonic()
        for pair, running in list(self.workers.items()):
            if running.task.done():
                del self.workers[pair]
            elif pair not in self._assigned and not running.worker.draining:
                log.info("consumer %s: handing over %s", self.name, running.worker.lock_name)
                running.worker.drain()
        for pair in sorted(self._assigned):
            if pair in self.workers or self._retry_after.get(pair, 0.0) > now:
                continue
            worker = PairWorker(
                pair,
                self.runtimes[pair[0]],
                client=self._client,
                locks=self._locks,
                owner=self.owner,
                timings=self.timings,
                paxos_group=group_for_queue(pair[2], self._paxos_groups),
                rng=self._rng,
            )
            task = self._tg.create_task(self._run_worker(worker), name=worker.lock_name)
            self.workers[pair] = Running(worker, task)

    async def _run_worker(self, worker: PairWorker) -> None:
        try:
            await worker.run()
        except Exception:  # a bad pair must not stop the member: log it, restart it later
            log.exception("consumer %s: %s stopped on an error", self.name, worker.lock_name)
            self._retry_after[worker.pair] = time.monotonic() + self.restart_delay

    # ---------------------------------------------------------------------------- views

    def owned(self) -> set[Pair]:
        """The pairs whose lock this member holds right now (and is not handing over)."""
        return {p for p, r in self.workers.items() if r.worker.state is Ownership.OWNED}

    def status(self) -> dict[str, Any]:
        """What this member owns right now (for logs, tests and ``phxq admin status``)."""
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
                for r in self.workers.values()
            },
        }
