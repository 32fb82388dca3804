"""The lock daemon: one node of a small Paxos cluster (3 or 5 nodes) that serves lease locks
and a versioned KV from its master.

``async with LockNode(cluster, node_id) as node:`` opens (and recovers) the node's log, starts
the RPC server on its ``[[lock]]`` address and serves until the context exits. It runs one
Paxos group (G = 1) through the store's :class:`~phxq.store.host.PaxosHost`, with
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
  by at most about one master lease (1 s by default) during a failover, never more. Every
  decision (acquire, renew, release, compare-and-set) goes through the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from phxq import metrics
from phxq.config import ClusterConfig, NodeConfig
from phxq.errors import BadArgument, NotMaster, PhxqError, StorageError, Unavailable
from phxq.lock import service
from phxq.lock.entries import Entry, Epoch, EpochStart, Sweep, encode_entry
from phxq.lock.state import LockState
from phxq.net.frames import shown
from phxq.net.rpc import RpcServer
from phxq.security import LOCK_RULES, NodeSecurity
from phxq.store.host import PaxosHost
from phxq.store.membership import REJOIN_METHODS
from phxq.store.replica import GroupReplica

log = logging.getLogger("phxq.lock")

KEEPER_INTERVAL = 0.02  # seconds between checks for "propose my epoch" / "sweep due"
EPOCH_WAIT = 1.0  # how long a request waits for a new master's epoch before Unavailable
SWEEP_MIN_INTERVAL = 0.05
KEEP_INSTANCES = 10_000  # recent instances kept in the log when compacting (for catch-up)


class _WatchedState:
    """The Applier given to the replica: applies to the state, then (when it is the replica's
    live state, not a copy being built for a snapshot) wakes KV watchers and epoch waiters."""

    def __init__(self, state: LockState, node: LockNode) -> None:
        self.state = state
        self._node = node

    def apply(self, instance: int, items: Any) -> list[Any]:
        epoch = self.state.epoch
        results = self.state.apply(instance, items)
        changed = self.state.drain_changed()
        if self._node._is_live(self):
            self._node._changed(changed, epoch != self.state.epoch)
        return results

    def index_entries(self, instance: int, items: Any) -> list[tuple[Any, int, float]]:
        return self.state.index_entries(instance, items)

    @property
    def applied_up_to(self) -> int:
        return self.state.applied_up_to

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def forget_below(self, instance: int) -> None:
        self.state.forget_below(instance)


class LockNode:
    """A running lock daemon (see the module docstring)."""

    def __init__(self, cluster: ClusterConfig, node_id: int, *, host: str | None = None) -> None:
        self.cluster = cluster
        self.node: NodeConfig = cluster.lock(node_id)
        self.node_id = node_id
        self.addresses = {n.id: n.addr for n in cluster.locks}
        self._host = host
        self.security = NodeSecurity.build(cluster, self.node, LOCK_RULES, "lock")
        c = cluster.cluster
        self.paxos_host = PaxosHost.from_config(
            c,
            self.node,
            self.addresses,
            groups=1,
            state_for=lambda group: _WatchedState(LockState(), self),
            restore_state=lambda group, data: _WatchedState(LockState.restore(data), self),
            name="lock",
            transport_factory=self.security and self.security.peer_credentials.transport_factory(),
        )
        self._server = RpcServer(
            self._handle,
            notify_handler=self.paxos_host.on_notify,
            ssl=self.security and self.security.server_ssl,
            guard=self.security and self.security.guard,
        )
        self._watchers: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._epoch_event = asyncio.Event()
        self._epoch_proposed: Epoch | None = None
        self._sweeping = False
        self._last_sweep = 0.0
        self._keeper: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._compact_interval = c.retention_interval
        self.keep_instances = KEEP_INSTANCES
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> LockNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.paxos_host.start()
        loop = asyncio.get_running_loop()
        self._keeper = loop.create_task(self._keep())
        self._compactor = loop.create_task(self._compact_loop())
        host, port = self.node.addr.rsplit(":", 1)
        await self._server.start(self._host or host, int(port))
        if self.node.metrics_addr:
            metrics.serve(self.node.metrics_addr)
        log.info("lock %d serving on %s", self.node_id, self._server.address)

    async def close(self) -> None:
        await self._server.close()
        for task in (self._keeper, self._compactor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.paxos_host.close()

    @property
    def address(self) -> str:
        return self._server.address

    @property
    def replica(self) -> GroupReplica:
        return self.paxos_host.replicas[0]

    @property
    def state(self) -> LockState:
        """The replica's live state (a snapshot install from a peer replaces it)."""
        applier = self.replica.state
        assert isinstance(applier, _WatchedState)
        return applier.state

    def _is_live(self, applier: _WatchedState) -> bool:
        replica = self.paxos_host.replicas.get(0)
        return replica is not None and replica.state is applier

    # ----------------------------------------------------------------------- compaction

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self._compact_interval)
            try:
                await self.compact()
            except PhxqError as exc:
                log.error("lock %d: log compaction failed: %s", self.node_id, exc)

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
        while True:
            try:
                self._keep_once()
            except Exception:  # a bug here must not stop epochs and sweeps for good: log it
                log.exception("lock %d: keeper step failed", self.node_id)
            await asyncio.sleep(KEEPER_INTERVAL)

    def _keep_once(self) -> None:
        r = self.replica
        if not r.serving:
            return
        epoch = self._ballot()
        if self.state.epoch != epoch:
            if self._epoch_proposed != epoch:
                self._epoch_proposed = epoch
                self._spawn(self._propose_epoch(epoch))
            return
        due = self.state.next_expiry()
        now = time.monotonic()
        if (
            due is not None
            and due <= now
            and not self._sweeping
            and now - self._last_sweep >= SWEEP_MIN_INTERVAL
        ):
            self._sweeping = True
            self._last_sweep = now
            self._spawn(self._sweep(epoch))

    async def _propose_epoch(self, epoch: Epoch) -> None:
        try:
            result = await self.replica.propose(encode_entry(EpochStart(epoch, time.monotonic())))
            if isinstance(result, PhxqError):
                raise result
            log.info("lock %d: epoch %s started", self.node_id, epoch)
        except PhxqError as exc:
            log.warning("lock %d: epoch %s not started: %s", self.node_id, epoch, exc)
            if self._epoch_proposed == epoch:
                self._epoch_proposed = None  # the keeper tries again while still master

    async def _sweep(self, epoch: Epoch) -> None:
        try:
            await self.replica.propose(encode_entry(Sweep(epoch, time.monotonic())))
        except PhxqError as exc:
            log.info("lock %d: sweep not applied: %s", self.node_id, exc)
        finally:
            self._sweeping = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _changed(self, keys: list[str], epoch_changed: bool) -> None:
        for key in keys:
            for future in self._watchers.pop(key, ()):
                if not future.done():
                    future.set_result(None)
        if epoch_changed:
            self._epoch_event.set()
            self._epoch_event = asyncio.Event()

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._epoch_event.wait(), min(remaining, KEEPER_INTERVAL))

    async def propose(self, entry: Entry, *, confirm: bool = False) -> Any:
        """Propose ``entry`` and return its apply result (raising an error result). With
        ``confirm``, a success is returned only if this node is still master in the entry's
        epoch (a grant must not be reported by a master that may have been deposed)."""
        result = await self.replica.propose(encode_entry(entry))
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

    async def _handle(self, method: str, params: Any) -> Any:
        if method in REJOIN_METHODS:
            return await self.paxos_host.handle_rpc(method, params)
        handler = service.HANDLERS.get(method)
        if handler is None:
            raise BadArgument(f"unknown method {shown(method)}")
        if not isinstance(params, dict):
            raise BadArgument(f"{method}: params must be a map")
        result = await handler(self, params)
        self.paxos_host.wake()
        return result

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
