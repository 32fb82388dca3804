"""The replication runtime of one daemon process: every group's replica, peers, tick loop.

A :class:`PaxosHost` owns, for one node (a store node or a lock node alike):

- the node's :class:`~phxq.replication.storage.Storage` (the PLog: one writer thread, group
  commit across every group) and one :class:`~phxq.replication.replica.GroupReplica` per
  group, each with the state machine its :class:`~phxq.replication.machine.Machines` makes;
- the Paxos traffic between peers through :class:`~phxq.replication.peers.Peers`: one-way
  ``px`` notifications (fire-and-forget: Paxos tolerates loss) and ``snap`` snapshots. What
  every group sends a peer while the host handles one received notification (the replies it
  caused) or one pass of the tick loop (heartbeats) leaves as one ``px`` notification at its
  end (a :mod:`~phxq.paxos.bundle`: one frame, one decode at the peer; earlier when
  ``BUNDLE_BYTES`` wait for that peer). Other sends (a proposal's Accepts, a reply after a
  write became durable) leave at once, so no send waits a loop turn more than before; the
  transport still puts everything of one turn into one write;
- the tick loop that drives leases, heartbeats, elections and retries. It sleeps until the
  soonest deadline of any group (at most ``TICK_MAX_SLEEP``). After every input a replica
  processes, only that replica's deadline is compared with the loop's next wake-up (the loop is
  woken only when it moved earlier), so ordinary traffic never costs a scan of every group;
- its :class:`~phxq.replication.membership.Membership` (may this data directory vote; rebuilds
  of replicas that forgot what they voted for: see :mod:`phxq.replication.rejoin`).

The daemon around it owns the RPC server: it routes ``px``/``snap`` notifications to
:meth:`on_notify` and the rejoin request methods (``REJOIN_METHODS``) to :meth:`handle_rpc`.
Every task the host starts belongs to its :class:`~phxq.tasks.TaskScope`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic

from phxq import metrics, trace
from phxq.config import ClusterSettings, NodeConfig
from phxq.net.server import LogLimiter
from phxq.net.transport import TransportFactory
from phxq.paxos import GroupConfig
from phxq.paxos.bundle import MAX_BUNDLE, bundle, unbundle
from phxq.replication.machine import M, Machines
from phxq.replication.membership import Membership
from phxq.replication.peers import Peers, RpcPeers
from phxq.replication.rejoin import NodeStatus
from phxq.replication.replica import GroupReplica
from phxq.replication.storage import PlogStorage, Storage
from phxq.tasks import TaskScope

__all__ = ["BUNDLE_BYTES", "TICK_MAX_SLEEP", "PaxosHost"]

log = logging.getLogger("phxq.host")

TICK_MAX_SLEEP = 0.05
BUNDLE_BYTES = 256 << 10  # encoded messages waiting for one peer before they leave at once


class PaxosHost(Generic[M]):
    """Every group's replica on one node, their storage, peer traffic and tick loop."""

    @classmethod
    def from_config(
        cls,
        settings: ClusterSettings,
        node: NodeConfig,
        addresses: Mapping[int, str],
        *,
        groups: int,
        machines: Machines[M],
        name: str,
        on_input: Callable[[GroupReplica[M]], None] | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> PaxosHost[M]:
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
            machines=machines,
            segment_bytes=settings.segment_bytes,
            journal_bytes=settings.journal_bytes,
            name=name,
            peers=RpcPeers(
                {**addresses, **dict(node.peers)}, node.id, transport_factory=transport_factory
            ),
            on_input=on_input,
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
        machines: Machines[M],
        propose_timeout: float = 1.5,
        name: str = "node",
        segment_bytes: int = 64 << 20,
        journal_bytes: int = 8 << 20,
        dial: Mapping[int, str] | None = None,
        storage: Storage | None = None,
        peers: Peers | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_input: Callable[[GroupReplica[M]], None] | None = None,
        replica_type: type[GroupReplica[M]] = GroupReplica,
    ) -> None:
        """``storage``/``peers``/``clock`` default to the PLog in ``data``, RPC to
        ``addresses`` (or ``dial``) and ``time.monotonic``; the runtime simulation passes its
        own, and plants bugs in a ``replica_type`` subclass."""
        self.node_id = node_id
        self.addresses = dict(addresses)
        self.members = tuple(sorted(self.addresses))
        self.data = data
        self.groups = groups
        self.name = name
        self._window = window
        self._heartbeat = heartbeat_interval
        self._lease = lease
        self._machines = machines
        self._propose_timeout = propose_timeout
        self.storage: Storage = storage or PlogStorage(
            data, groups=groups, segment_bytes=segment_bytes, journal_bytes=journal_bytes
        )
        # Peers are dialed at ``addresses`` unless overridden (a proxy in between); master
        # hints for clients keep using ``addresses``.
        self.peers: Peers = peers or RpcPeers({**self.addresses, **(dial or {})}, node_id)
        self._clock = clock
        self._on_input = on_input
        self._replica_type = replica_type
        self.replicas: dict[int, GroupReplica[M]] = {}
        self.membership: Membership | None = None
        self._tasks = TaskScope(f"{name} {node_id}", log)
        self._wake = asyncio.Event()
        self._next_tick = 0.0  # when the tick loop runs next (clock time)
        self._masters_held = -1
        self._bad_log = LogLimiter()  # malformed peer notifications
        # Per peer: encoded messages waiting for the end of bundling() (urgent, lazy) and
        # their bytes (see ``send``).
        self._outgoing: dict[int, tuple[list[bytes], list[bytes]]] = {}
        self._outgoing_bytes: dict[int, int] = {}
        self._queued = False  # something waits in _outgoing
        self._collecting = False  # inside bundling(): sends wait for its end

    async def start(self) -> None:
        """Open (and recover) every group's log, decide membership and start the tick loop.
        ``StorageError`` if another process holds the data directory."""
        await self.storage.start()
        self.storage.on_durable(self._on_durable)
        missing = await asyncio.to_thread(self.storage.groups_without_log, self.groups)
        for group in range(self.groups):
            gcfg = GroupConfig(
                group=group,
                node_id=self.node_id,
                members=self.members,
                window=self._window,
                heartbeat_interval=self._heartbeat,
                lease=self._lease,
            )
            self.replicas[group] = await self._replica_type.open(
                gcfg,
                self.storage.group_directory(group),
                functools.partial(self.storage.open_group, group),
                self._machines,
                self.send,
                self.send_snapshot,
                propose_timeout=self._propose_timeout,
                address_of=self.addresses.get,
                clock=self._clock,
                after_input=self._after_input,
            )
        self.membership = Membership(
            self.node_id,
            self.members,
            self.data,
            self.replicas,
            self.peers.call,
            name=self.name,
            missing_groups=missing,
        )
        await asyncio.to_thread(self.membership.decide)
        self._tasks.spawn(self._tick_loop(), name="tick loop")
        if self.membership.must_rebuild():
            self._tasks.spawn(self.membership.run(), name="rejoin")

    async def close(self) -> None:
        await self._tasks.aclose()
        for replica in self.replicas.values():
            await replica.close()
        await self.peers.close()
        await self.storage.close()

    @property
    def status(self) -> NodeStatus:
        """``member``, ``probing`` or ``joining`` (see :mod:`phxq.replication.membership`)."""
        return NodeStatus.MEMBER if self.membership is None else self.membership.status

    async def handle_rpc(self, method: str, params: Any) -> Any:
        """The rejoin request methods peers call (``REJOIN_METHODS``)."""
        assert self.membership is not None, "start() first"
        return await self.membership.handle_rpc(method, params)

    def _after_input(self, replica: GroupReplica[M]) -> None:
        deadline = replica.next_deadline()
        if deadline is not None and deadline < self._next_tick:
            self._wake.set()
        if self._on_input is not None:
            self._on_input(replica)

    def _on_durable(self) -> None:
        """Appends became durable: every replica tells its core in this loop callback (no
        turn through future callbacks), and the replies that causes leave bundled, one ``px``
        per peer for every group the storage batch covered."""
        outer, self._collecting = self._collecting, True  # bundling() inline: per fdatasync
        try:
            for replica in self.replicas.values():
                replica.durable.drain()
        finally:
            self._collecting = outer
            if not outer:
                self.flush()

    # --------------------------------------------------------------------- paxos plumbing

    def send(self, to: int, payload: bytes, lazy: bool = False) -> None:
        """Send an encoded Paxos message to node ``to`` (inside :meth:`bundling`, at its end);
        ``lazy``: it may wait a few ms for the next message to that node. In a bundle the
        urgent messages go first (each kind in order), as the transport orders its bodies."""
        if to == self.node_id:
            return
        if not self._collecting:
            self.peers.notify(to, "px", payload, lazy=lazy)
            return
        waiting = self._outgoing.get(to)
        if waiting is None:
            waiting = self._outgoing[to] = ([], [])
        size = self._outgoing_bytes.get(to, 0) + len(payload)
        if size > BUNDLE_BYTES or len(waiting[0]) + len(waiting[1]) >= MAX_BUNDLE - 1:
            self._flush_peer(to, waiting)
            size = len(payload)
        waiting[1 if lazy else 0].append(payload)
        self._outgoing_bytes[to] = size
        self._queued = True

    @contextlib.contextmanager
    def bundling(self) -> Iterator[None]:
        """What is sent inside leaves at the end, one ``px`` notification per peer."""
        outer, self._collecting = self._collecting, True
        try:
            yield
        finally:
            self._collecting = outer
            if not outer:
                self.flush()

    def flush(self) -> None:
        """Send every peer's waiting messages now (one notification per peer)."""
        if not self._queued:
            return
        self._queued = False
        for to, waiting in self._outgoing.items():
            if waiting[0] or waiting[1]:
                self._flush_peer(to, waiting)

    def _flush_peer(self, to: int, waiting: tuple[list[bytes], list[bytes]]) -> None:
        urgent, lazy = waiting
        payloads = urgent + lazy if urgent and lazy else urgent or lazy
        self._outgoing_bytes[to] = 0
        if payloads:
            self.peers.notify(to, "px", bundle(payloads), lazy=not urgent)
            if urgent:
                urgent.clear()
            if lazy:
                lazy.clear()

    def send_snapshot(self, to: int, group: int, data: bytes) -> None:
        if to != self.node_id:
            self.flush()  # the messages before it go first
            self.peers.notify(to, "snap", [group, data])

    def on_notify(self, method: str, params: Any) -> None:
        """The RPC server's notify handler: Paxos messages (``px``) and snapshots (``snap``,
        ``[group, encoded snapshot]``) from peers."""
        if method == "snap":
            self._on_snapshot(params)
            return
        if method != "px" or not isinstance(params, bytes):
            return  # unknown notifications are ignored: notify has no reply channel
        messages, error = unbundle(params)
        replicas, members = self.replicas, self.addresses
        self._collecting = True  # bundling() inline: this runs for every notification
        try:
            for msg in messages:
                if trace.ON:
                    trace.mark(f"in.{type(msg).__name__}")
                replica = replicas.get(msg.group)
                if replica is None or msg.sender not in members:
                    why = f"no group {msg.group} or no member {msg.sender}"
                    self._dropped("paxos message", why)
                    continue
                replica.on_message(msg)
        finally:
            self._collecting = False
            self.flush()  # the replies these messages caused leave together, now
        if error is not None:
            self._dropped("paxos message", error)

    def _on_snapshot(self, params: Any) -> None:
        if not (isinstance(params, list) and len(params) == 2 and isinstance(params[1], bytes)):
            self._dropped("snapshot notification", "not [group, bytes]")
            return
        replica = self.replicas.get(params[0]) if isinstance(params[0], int) else None
        if replica is not None:
            self._tasks.spawn(replica.install_snapshot(params[1]), name="snapshot install")

    def _dropped(self, what: str, why: object) -> None:
        """Count a malformed peer notification; warn at a limited rate (no reply channel, and
        anyone who can reach the port can send them: the log must not be theirs to fill)."""
        metrics.BAD_PEER_MESSAGES.labels("paxos" if what == "paxos message" else "snapshot").inc()
        suppressed = self._bad_log.allow()
        if suppressed is not None:
            more = f" ({suppressed} more suppressed)" if suppressed else ""
            log.warning(
                "%s %d: dropped a malformed %s: %s%s", self.name, self.node_id, what, why, more
            )

    async def _tick_loop(self) -> None:
        while True:
            now = self._clock()
            soonest = now + TICK_MAX_SLEEP
            with self.bundling():  # every group's heartbeats to a peer in one notification
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
            delay = max(0.0, soonest - self._clock())
            with contextlib.suppress(
                TimeoutError
            ):  # the soonest deadline came: the next pass ticks it
                await asyncio.wait_for(self._wake.wait(), delay)
