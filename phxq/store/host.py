"""The Paxos runtime one daemon process shares by all its groups: the store and the lock daemon.

A :class:`PaxosHost` owns, for one node:

- one :class:`~phxq.plog.LogWriter` (one writer thread, group commit across every group);
- one :class:`~phxq.store.replica.GroupReplica` per group, each with the state machine that
  ``state_for(group)`` builds (``StoreState`` for the store, the lock state for the lock daemon);
- the Paxos traffic between peers: one-way ``px`` notifications through an
  :class:`~phxq.net.rpc.RpcPool` (fire-and-forget: Paxos tolerates loss);
- the tick loop that drives leases, heartbeats, elections and retries. It sleeps until the
  soonest deadline of any group (at most ``TICK_MAX_SLEEP``). After every input a replica
  processes, only that replica's deadline is compared with the loop's next wake-up (the loop is
  woken only when it moved earlier), so ordinary traffic never costs a scan of every group;
  :meth:`wake` forces a scan.

The daemon around it owns the RPC server; it routes ``px`` notifications to :meth:`on_notify`
and the rejoin request methods (``membership.REJOIN_METHODS``) to :meth:`handle_rpc`.

Forgetting is handled by its :class:`~phxq.store.membership.Membership` (see
:mod:`phxq.store.rejoin`): a node whose data directory is new asks its peers whether the
cluster is new or it must join; a replica that joins, or whose log is damaged, neither serves
nor votes until it rebuilt what it may have forgotten from every other member. ``status``
(``member``, ``probing``, ``joining``) and each replica's ``repair`` show where that stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from phxq import metrics, trace
from phxq.config import ClusterSettings, NodeConfig
from phxq.errors import ProtocolError, StorageError
from phxq.net.rpc import RpcPool
from phxq.net.server import LogLimiter
from phxq.net.transport import TransportFactory
from phxq.paxos import GroupConfig, decode_message
from phxq.plog import LogWriter
from phxq.store.membership import Membership
from phxq.store.rejoin import NodeStatus
from phxq.store.replica import Applier, GroupReplica

log = logging.getLogger("phxq.host")

TICK_MAX_SLEEP = 0.05


class PaxosHost:
    """Every group's replica on one node, their log writer, peer traffic and tick loop."""

    @classmethod
    def from_config(
        cls,
        settings: ClusterSettings,
        node: NodeConfig,
        addresses: Mapping[int, str],
        *,
        groups: int,
        state_for: Callable[[int], Applier],
        restore_state: Callable[[int, bytes], Applier],
        name: str,
        transport_factory: TransportFactory | None = None,
    ) -> PaxosHost:
        """The host of a daemon's ``node`` (a store or a lock node; ``addresses``: every node of
        its kind), with the ``[cluster]`` settings both kinds share."""
        return cls(
            node.id,
            addresses,
            Path(node.data),
            groups=groups,
            window=settings.paxos_window,
            heartbeat_interval=settings.heartbeat_interval,
            lease=settings.lease,
            state_for=state_for,
            restore_state=restore_state,
            segment_bytes=settings.segment_bytes,
            journal_bytes=settings.journal_bytes,
            name=name,
            dial=dict(node.peers),
            transport_factory=transport_factory,
        )

    def __init__(
        self,
        node_id: int,
        addresses: Mapping[int, str],
        data: Path,
        *,
        groups: int,
        window: int,
        heartbeat_interval: float,
        lease: float,
        state_for: Callable[[int], Applier],
        propose_timeout: float = 1.5,
        name: str = "node",
        restore_state: Callable[[int, bytes], Applier] | None = None,
        segment_bytes: int = 64 << 20,
        journal_bytes: int = 8 << 20,
        dial: Mapping[int, str] | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.node_id = node_id
        self.addresses = dict(addresses)
        # Where peers are dialed: ``addresses`` unless overridden (a proxy in between); master
        # hints for clients keep using ``addresses``.
        self._dial = {**self.addresses, **(dial or {})}
        self.members = tuple(sorted(self.addresses))
        self.data = data
        self.groups = groups
        self._window = window
        self._heartbeat = heartbeat_interval
        self._lease = lease
        self._state_for = state_for
        self._propose_timeout = propose_timeout
        self._name = name
        self._restore_state = restore_state
        self._segment_bytes = segment_bytes
        self._journal_bytes = journal_bytes
        self.replicas: dict[int, GroupReplica] = {}
        self.writer: LogWriter | None = None
        # Peer traffic; with [security] the factory dials TLS with this member's certificate.
        self._pool = RpcPool(transport_factory=transport_factory)
        self._tick_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock_fd: int | None = None
        self._next_tick = 0.0  # when the tick loop runs next (monotonic)
        self._masters_held = -1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bad_log = LogLimiter()  # malformed peer notifications
        self.membership = Membership(self)

    async def start(self) -> None:
        """Open (and recover) every group's log and start the tick loop. ``StorageError`` if
        another process holds the data directory (two daemons on one log would corrupt it)."""
        self.data.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.data)
        self.writer = LogWriter(
            on_fsync=metrics.FSYNC_LATENCY.observe,
            # One group: every batch touches one segment file, and the journal would only
            # add a write (the lock service's single group, or a 1-group store cluster). A
            # journal left by an earlier run is redone all the same (journal_bytes 0).
            journal_dir=self.data,
            journal_bytes=self._journal_bytes if self.groups > 1 else 0,
        )
        await self.writer.start()
        await asyncio.to_thread(self.membership.note_groups_without_log)
        for group in range(self.groups):
            gcfg = GroupConfig(
                group=group,
                node_id=self.node_id,
                members=self.members,
                window=self._window,
                heartbeat_interval=self._heartbeat,
                lease=self._lease,
            )
            self.replicas[group] = await GroupReplica.open(
                gcfg,
                self.data / f"g{group:04d}",
                self.writer,
                self._state_for(group),
                self.send,
                propose_timeout=self._propose_timeout,
                address_of=self.addresses.get,
                segment_bytes=self._segment_bytes,
                snapshots=None if self._restore_state is None else _Snapshots(self, group),
            )
        for replica in self.replicas.values():
            replica.after_input = self._deadline_moved
        await asyncio.to_thread(self.membership.decide)
        self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop())
        self.membership.start()

    async def close(self) -> None:
        await self.membership.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for replica in self.replicas.values():
            await replica.close()
        await self._pool.close()
        if self.writer is not None:
            await self.writer.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @property
    def status(self) -> NodeStatus:
        """``member``, ``probing`` or ``joining`` (see :mod:`phxq.store.membership`)."""
        return self.membership.status

    async def handle_rpc(self, method: str, params: Any) -> Any:
        """The rejoin request methods peers call (``REJOIN_METHODS``)."""
        return await self.membership.handle_rpc(method, params)

    def wake(self) -> None:
        """Run the tick loop now (an input may have moved a deadline)."""
        self._wake.set()

    def _deadline_moved(self, replica: GroupReplica) -> None:
        deadline = replica.next_deadline()
        if deadline is not None and deadline < self._next_tick:
            self._wake.set()

    # --------------------------------------------------------------------- paxos plumbing

    def send(self, to: int, payload: bytes, lazy: bool = False) -> None:
        """Send an encoded Paxos message to node ``to``; ``lazy``: it may wait a few ms for the
        next message to that node (see ``RpcPool.notify``)."""
        addr = self._dial.get(to)
        if addr is not None and to != self.node_id:
            self._pool.notify(addr, "px", payload, lazy=lazy)

    def send_snapshot(self, to: int, group: int, data: bytes) -> None:
        addr = self._dial.get(to)
        if addr is not None and to != self.node_id:
            self._pool.notify(addr, "snap", [group, data])

    def on_notify(self, method: str, params: Any) -> None:
        """The RPC server's notify handler: Paxos messages (``px``) and snapshots (``snap``,
        ``[group, encoded snapshot]``) from peers."""
        if method == "snap":
            self._on_snapshot(params)
            return
        if method != "px" or not isinstance(params, bytes):
            return  # unknown notifications are ignored: notify has no reply channel
        try:
            msg = decode_message(params)
        except ProtocolError as exc:
            self._dropped("paxos message", exc)
            return
        if trace.ON:
            trace.mark(f"in.{type(msg).__name__}")
        replica = self.replicas.get(msg.group)
        if replica is None or msg.sender not in self.addresses:
            self._dropped("paxos message", f"no group {msg.group} or no member {msg.sender} here")
            return
        replica.on_message(msg)

    def _on_snapshot(self, params: Any) -> None:
        if not (isinstance(params, list) and len(params) == 2 and isinstance(params[1], bytes)):
            self._dropped("snapshot notification", "not [group, bytes]")
            return
        replica = self.replicas.get(params[0]) if isinstance(params[0], int) else None
        if replica is None:
            return
        task = asyncio.get_running_loop().create_task(replica.install_snapshot(params[1]))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _dropped(self, what: str, why: object) -> None:
        """Count a malformed peer notification; warn at a limited rate (no reply channel, and
        anyone who can reach the port can send them: the log must not be theirs to fill)."""
        metrics.BAD_PEER_MESSAGES.labels("paxos" if what == "paxos message" else "snapshot").inc()
        suppressed = self._bad_log.allow()
        if suppressed is not None:
            more = f" ({suppressed} more suppressed)" if suppressed else ""
            log.warning(
                "%s %d: dropped a malformed %s: %s%s", self._name, self.node_id, what, why, more
            )

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s %d: snapshot install failed",
                self._name,
                self.node_id,
                exc_info=task.exception(),
            )

    async def _tick_loop(self) -> None:
        while True:
            now = time.monotonic()
            soonest = now + TICK_MAX_SLEEP
            for replica in self.replicas.values():
                deadline = replica.next_deadline()
                if deadline is not None and deadline <= now:
                    replica.on_tick(now)
                    deadline = replica.next_deadline()
                if deadline is not None:
                    soonest = min(soonest, deadline)
            held = sum(r.paxos.is_master for r in self.replicas.values())
            if held != self._masters_held:
                self._masters_held = held
                metrics.MASTERS_HELD.set(held)
            self._next_tick = soonest
            self._wake.clear()
            delay = max(0.0, soonest - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)


def _lock_directory(data: Path) -> int:
    """Take an exclusive advisory lock on ``data/LOCK`` for this process's life."""
    fd = os.open(data / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StorageError(
            f"data directory {data} is in use by another process ({exc.strerror}); "
            "two daemons must never share one"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class _Snapshots:
    """A group's :class:`~phxq.store.replica.SnapshotSupport` on this host."""

    def __init__(self, host: PaxosHost, group: int) -> None:
        self._host = host
        self._group = group

    def fresh(self) -> Applier:
        return self._host._state_for(self._group)

    def restore(self, data: bytes) -> Applier:
        assert self._host._restore_state is not None
        return self._host._restore_state(self._group, data)

    def send(self, to: int, group: int, data: bytes) -> None:
        self._host.send_snapshot(to, group, data)
