"""The lock daemon: one node of a small Paxos cluster (3 or 5 nodes) that serves lease locks
and a versioned KV from its master.

``async with LockNode(cluster, node_id) as node:`` opens (and recovers) the node's log, starts
the RPC server on its ``[[lock]]`` address and serves until the context exits. It runs one
Paxos group (G = 1): a :class:`~phxq.replication.daemon.ReplicatedDaemon` with
:class:`~phxq.lock.state.LockState` as the replicated state machine. RPC methods: see
:mod:`phxq.lock.service`.

What the runtime adds to the pure state machine:

- **Epochs.** When this node becomes master and has caught up (``replica.serving``), it
  proposes ``EpochStart(ballot, now)`` and serves nothing until that entry is applied. Every
  entry it then proposes carries its ballot and ``time.monotonic()``.
- **Answers only from the epoch that made them.** A grant or renewal is reported to the caller
  only while this node is still master under the ballot that proposed it; otherwise the caller
  gets ``Unavailable`` (retry: acquire and renew are idempotent for the holder).
- **Sweeps.** When a lease or KV ttl entry is due (on the master's clock) the master proposes a
  ``Sweep``, so expiry becomes a log event that wakes ``kv_wait`` watchers.
- **Compaction.** Every ``cluster.retention_interval`` the node snapshots its state and drops
  whole log segments below the last ``KEEP_INSTANCES`` instances (renewals and heartbeats
  would otherwise grow the log, and the restart time, forever). A follower behind every peer's
  log start receives a snapshot.
- **Reads** (``get``, ``kv_get``, ``kv_list``, ``kv_wait``) are served by the master from its
  applied state, only while it is serving in its own epoch. That relies on the Paxos master
  lease: a deposed master stops within one lease of losing its majority, so a read can be stale
  by at most about one master lease (600 ms by default) during a failover, never more. Every
  decision (acquire, renew, release, compare-and-set) goes through the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from phxq.config import ClusterConfig
from phxq.errors import NotMaster, PhxqError, StorageError, Unavailable
from phxq.lock import service
from phxq.lock.entries import Entry, Epoch, EpochStart, Sweep, encode_entry
from phxq.lock.state import LockState
from phxq.replication.daemon import ReplicatedDaemon
from phxq.replication.replica import GroupReplica
from phxq.security import LOCK_RULES

log = logging.getLogger("phxq.lock")

EPOCH_WAIT = 1.0  # how long a request waits for a new master's epoch before Unavailable
SWEEP_MIN_INTERVAL = 0.05
KEEPER_IDLE = 1.0  # the keeper's longest sleep without an input (a safety net, not a poll)
KEEP_INSTANCES = 10_000  # recent instances kept in the log when compacting (for catch-up)


class LockMachines:
    """Makes the lock group's ``LockState`` (the replication runtime's ``Machines``)."""

    def fresh(self, group: int) -> LockState:
        return LockState()

    def restore(self, group: int, data: bytes) -> LockState:
        return LockState.restore(data)


class LockNode(ReplicatedDaemon[LockState]):
    """A running lock daemon (see the module docstring)."""

    def __init__(self, cluster: ClusterConfig, node_id: int, *, host: str | None = None) -> None:
        super().__init__(
            "lock",
            cluster,
            cluster.lock(node_id),
            {n.id: n.addr for n in cluster.locks},
            groups=1,
            machines=LockMachines(),
            handlers=service.HANDLERS,
            rules=LOCK_RULES,
            host=host,
            on_input=self._on_input,
        )
        self._watchers: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._input = asyncio.Event()  # replaced (after being set) on an input while awaited
        self._input_waited = False
        self._kick = asyncio.Event()  # wakes the keeper
        self._epoch_proposed: Epoch | None = None
        self._sweeping = False
        self._last_sweep = 0.0
        self._compact_interval = cluster.cluster.retention_interval
        self.keep_instances = KEEP_INSTANCES

    def background(self) -> list[tuple[str, Any]]:
        return [
            ("keeper", self._keep()),
            ("compaction", self.every(self._compact_interval, self.compact, "log compaction")),
        ]

    @property
    def replica(self) -> GroupReplica[LockState]:
        return self.replicas[0]

    @property
    def state(self) -> LockState:
        """The replica's live state (a snapshot install from a peer replaces it)."""
        return self.replica.state

    def _on_input(self, replica: GroupReplica[LockState]) -> None:
        """After every input of the lock group: wake KV watchers of changed keys, epoch
        waiters and the keeper (no polling: every change of role, readiness or state comes
        through here)."""
        for key in replica.state.drain_changed():
            for future in self._watchers.pop(key, ()):
                if not future.done():
                    future.set_result(None)
        self._kick.set()
        if self._input_waited:
            self._input_waited = False
            self._input.set()
            self._input = asyncio.Event()

    # ----------------------------------------------------------------------- compaction

    async def compact(self) -> int:
        """Snapshot the state and drop whole log segments below the last ``keep_instances``
        chosen instances (kept for followers catching up). The first retained instance."""
        replica = self.replica
        floor = replica.paxos.chosen_up_to + 1 - self.keep_instances
        if floor <= replica.glog.first_instance:
            return replica.glog.first_instance
        return await replica.compact(floor)

    # --------------------------------------------------------------------------- epochs

    def _ballot(self) -> Epoch:
        b = self.replica.paxos.ballot
        return (b.round, b.node)

    def epoch_ready(self) -> bool:
        """Serving: master, caught up, and this mastership's epoch is applied."""
        r = self.replica
        return r.serving and self.state.epoch == self._ballot()

    async def _keep(self) -> None:
        """Propose this mastership's epoch, and a sweep when a lease or KV ttl is due; sleeps
        until an input of the group (``_on_input``) or the next expiry."""
        while True:
            self._kick.clear()
            try:
                sleep = self._keep_once()
            except Exception:  # a bug here must not stop epochs and sweeps for good: log it
                log.exception("lock %d: keeper step failed", self.node_id)
                sleep = KEEPER_IDLE
            with contextlib.suppress(
                TimeoutError
            ):  # an expiry came due (or the safety net): the next step looks
                await asyncio.wait_for(self._kick.wait(), sleep)

    def _keep_once(self) -> float:
        """One keeper step; how long it may sleep if nothing happens meanwhile."""
        r = self.replica
        if not r.serving:
            return KEEPER_IDLE
        epoch = self._ballot()
        if self.state.epoch != epoch:
            if self._epoch_proposed != epoch:
                self._epoch_proposed = epoch
                self.spawn(self._propose_epoch(epoch), "epoch start")
            return KEEPER_IDLE
        due = self.state.next_expiry()
        if due is None or self._sweeping:
            return KEEPER_IDLE
        now = time.monotonic()
        at = max(due, self._last_sweep + SWEEP_MIN_INTERVAL)
        if at > now:
            return min(KEEPER_IDLE, at - now)
        self._sweeping = True
        self._last_sweep = now
        self.spawn(self._sweep(epoch), "sweep")
        return KEEPER_IDLE

    async def _propose_epoch(self, epoch: Epoch) -> None:
        try:
            entry = encode_entry(EpochStart(epoch, time.monotonic()))
            result = await self.replica.propose_one(entry)
            if isinstance(result, PhxqError):
                raise result
            log.info("lock %d: epoch %s started", self.node_id, epoch)
        except PhxqError as exc:
            log.warning("lock %d: epoch %s not started: %s", self.node_id, epoch, exc)
            if self._epoch_proposed == epoch:
                self._epoch_proposed = None  # the keeper tries again while still master
                self._kick.set()

    async def _sweep(self, epoch: Epoch) -> None:
        try:
            await self.replica.propose_one(encode_entry(Sweep(epoch, time.monotonic())))
        except PhxqError as exc:
            log.info("lock %d: sweep not applied: %s", self.node_id, exc)
        finally:
            self._sweeping = False
            self._kick.set()

    # ------------------------------------------------------------------------ serving

    async def serving_epoch(self) -> Epoch:
        """The epoch to propose under; waits briefly for a new master's epoch to start.
        ``NotMaster(hint)`` on a follower, ``Unavailable`` if the epoch does not start."""
        r = self.replica
        deadline = time.monotonic() + EPOCH_WAIT
        while True:
            if r.failed is not None:
                raise StorageError(f"lock log is not serving: {r.failed.message}")
            if not r.paxos.is_master:
                raise NotMaster(hint=r.master_address())
            if self.epoch_ready():
                return self._ballot()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable("the lock master is still starting its epoch; retry")
            self._input_waited = True
            with contextlib.suppress(TimeoutError):  # the loop raises Unavailable
                await asyncio.wait_for(self._input.wait(), remaining)

    async def propose(self, entry: Entry, *, confirm: bool = False) -> Any:
        """Propose ``entry`` and return its apply result (raising an error result). With
        ``confirm``, a success is returned only if this node is still master in the entry's
        epoch (a grant must not be reported by a master that may have been deposed)."""
        result = await self.replica.propose_one(encode_entry(entry))
        if isinstance(result, PhxqError):
            raise result
        if confirm and not (self.replica.paxos.is_master and self._ballot() == entry.epoch):
            raise Unavailable("the lock master changed before the result was confirmed; retry")
        return result

    async def wait_change(self, key: str, timeout: float) -> None:
        """Return when ``key`` changes in the log, or after ``timeout`` seconds."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers[key].add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass  # the caller re-reads the key either way
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(future)
                if not watchers:
                    del self._watchers[key]

    # ----------------------------------------------------------------------------- RPC

    def meta(self) -> dict[str, Any]:
        r = self.replica
        return {
            "nodes": {str(k): v for k, v in self.addresses.items()},
            "master": r.paxos.master,
            "serving": self.epoch_ready(),
        }

    def status(self) -> dict[str, Any]:
        r = self.replica
        return {
            **self.meta(),
            "node": self.node_id,
            "ballot": list(self._ballot()),
            "epoch": None if self.state.epoch is None else list(self.state.epoch),
            "chosen_up_to": r.paxos.chosen_up_to,
            "applied_up_to": self.state.applied_up_to,
            "locks": self.state.locks_held,
            "keys": self.state.kv_keys,
            "failed": None if r.failed is None else r.failed.message,
            "repair": r.repair,
            "membership": self.paxos_host.status.value,
            "cert": None if self.security is None else self.security.cert_status(),
        }
