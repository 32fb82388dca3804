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
and the request methods in :data:`REJOIN_METHODS` to :meth:`handle_rpc`.

Forgetting is handled here too (see :mod:`phxq.store.rejoin`): a node whose data directory is
new asks its peers whether the cluster is new or it must join; a replica that joins, or whose
log is damaged, neither serves nor votes until it rebuilt what it may have forgotten from every
other member. ``status`` (``member``, ``probing``, ``joining``) and each replica's ``repair``
show where that stands.
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

from phxq import metrics
from phxq.errors import BadArgument, PhxqError, ProtocolError, StorageError, Unavailable
from phxq.net.rpc import RpcPool
from phxq.net.server import LogLimiter
from phxq.paxos import GroupConfig, decode_message
from phxq.plog import LogWriter
from phxq.store import rejoin
from phxq.store.rejoin import GroupView, NodeStatus, PeerView
from phxq.store.replica import CATCHUP_MAX_BYTES, Applier, GroupReplica
from phxq.store.snapshot import encode_snapshot, read_snapshot

log = logging.getLogger("phxq.host")

TICK_MAX_SLEEP = 0.05
REJOIN_METHODS = frozenset({"rejoin_probe", "rejoin_read"})
REPAIR_CONCURRENCY = 4  # groups rebuilt at once


class PaxosHost:
    """Every group's replica on one node, their log writer, peer traffic and tick loop."""

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
        dial: Mapping[int, str] | None = None,
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
        self.replicas: dict[int, GroupReplica] = {}
        self.writer: LogWriter | None = None
        self._pool = RpcPool()
        self._tick_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock_fd: int | None = None
        self._next_tick = 0.0  # when the tick loop runs next (monotonic)
        self._masters_held = -1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bad_log = LogLimiter()  # malformed peer notifications
        self.status = NodeStatus.MEMBER
        self.boot_id = rejoin.new_boot_id()  # identifies this process while it probes
        self._fresh_peers: dict[int, int] = {}  # from MEMBER: probing peers seen when fresh
        self._rejoin_task: asyncio.Task[None] | None = None
        self._missing_groups: set[int] = set()

    async def start(self) -> None:
        """Open (and recover) every group's log and start the tick loop. ``StorageError`` if
        another process holds the data directory (two daemons on one log would corrupt it)."""
        self.data.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.data)
        self.writer = LogWriter(on_fsync=metrics.FSYNC_LATENCY.observe)
        await self.writer.start()
        self._missing_groups = await asyncio.to_thread(self._groups_without_log)
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
        await asyncio.to_thread(self._decide_status)
        loop = asyncio.get_running_loop()
        self._tick_task = loop.create_task(self._tick_loop())
        if self.status is not NodeStatus.MEMBER or any(
            r.repair is not None for r in self.replicas.values()
        ):
            self._rejoin_task = loop.create_task(self._rejoin_loop())

    async def close(self) -> None:
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rejoin_task
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

    # ------------------------------------------------------------------ rejoin (see module)

    def _decide_status(self) -> None:
        """Blocking (files): member, joining or probing, from the markers and the logs."""
        member = rejoin.read_marker(self.data, rejoin.MEMBER_FILE)
        if member is not None:
            self._fresh_peers = {int(n): int(b) for n, b in member.get("fresh_peers", {}).items()}
            for g in sorted(self._missing_groups):
                # A member's group directory without a log was removed or lost: whatever that
                # replica promised is forgotten, so it joins that group.
                r = self.replicas[g]
                if r.repair is None and r.failed is None:
                    r.hold("joining", f"group {g}: its log was missing; joining (not voting)")
                    log.warning(
                        "%s %d: group %d has no log: joining it", self._name, self.node_id, g
                    )
            return
        if rejoin.read_marker(self.data, rejoin.JOINING_FILE) is not None:
            self._start_joining("a join was under way when the daemon stopped")
            return
        if any(r.glog.has_state for r in self.replicas.values()):
            log.warning(
                "%s %d: data directory %s has state but no %s file (written by an older "
                "version): taking it as a member's",
                self._name,
                self.node_id,
                self.data,
                rejoin.MEMBER_FILE,
            )
            self._write_member("existing")
            return
        if len(self.members) == 1:
            self._write_member("fresh")  # nobody to ask, nobody to disagree with
            return
        self.status = NodeStatus.PROBING
        for r in self.replicas.values():
            r.hold("probing", f"group {r.group}: new data directory, asking peers (not voting)")
        log.warning(
            "%s %d: new data directory %s: asking peers whether the cluster is new (boot id %x)",
            self._name,
            self.node_id,
            self.data,
            self.boot_id,
        )

    def _groups_without_log(self) -> set[int]:
        """Groups whose directory holds no segment file (before they are opened)."""
        return {g for g in range(self.groups) if not any((self.data / f"g{g:04d}").glob("*.plog"))}

    def _write_member(self, born: str) -> None:
        body = {
            "node": self.node_id,
            "born": born,
            "since": time.time(),
            "fresh_peers": {str(n): b for n, b in self._fresh_peers.items()},
        }
        rejoin.write_marker(self.data, rejoin.MEMBER_FILE, body)
        self.status = NodeStatus.MEMBER

    def _start_joining(self, why: str) -> None:
        """Blocking: the JOINING file is durable before any record a join adopts."""
        rejoin.write_marker(self.data, rejoin.JOINING_FILE, {"node": self.node_id, "why": why})
        self.status = NodeStatus.JOINING
        for r in self.replicas.values():
            if r.failed is None or r.repair is not None:  # a storage failure stays one
                r.hold("joining", f"group {r.group}: joining ({why}); not voting until rebuilt")
        log.warning("%s %d: joining every group: %s", self._name, self.node_id, why)

    async def handle_rpc(self, method: str, params: Any) -> Any:
        """The rejoin request methods a peer calls while it rebuilds (``REJOIN_METHODS``)."""
        if not isinstance(params, dict):
            raise BadArgument(f"{method}: params must be a map")
        if method == "rejoin_probe":
            groups = params.get("groups", [])
            if not isinstance(groups, list) or not all(_is_int(g) for g in groups):
                raise BadArgument("rejoin_probe: groups must be a list of ints")
            return rejoin.encode_view(self._view(groups))
        if method == "rejoin_read":
            group, start = params.get("group"), params.get("from")
            if not (isinstance(group, int) and isinstance(start, int)):
                raise BadArgument("rejoin_read: group and from must be ints")
            if not (_is_int(group) and _is_int(start)) or start < 1:
                raise BadArgument("rejoin_read: group and from must be ints (from >= 1)")
            return await self._serve_read(group, start)
        raise BadArgument(f"unknown method {method!r}")

    def _view(self, groups: list[int]) -> PeerView:
        views: dict[int, GroupView] = {}
        for g in groups:
            r = self.replicas.get(g)
            if r is None:
                raise BadArgument(f"rejoin_probe: no group {g}")
            whole = self.status is NodeStatus.MEMBER and r.failed is None and r.diverged is None
            p = r.paxos
            accepted = tuple(
                (i, (b.round, b.node), v) for i, (b, v) in sorted(p.acceptor.accepted.items())
            )
            views[g] = GroupView(
                whole,
                (p.promised.round, p.promised.node),
                p.chosen_up_to,
                p.checksum,
                r.glog.first_instance,
                accepted if whole else (),
            )
        boot = self.boot_id if self.status is NodeStatus.PROBING else None
        return PeerView(self.node_id, self.status, boot, dict(self._fresh_peers), views)

    async def _serve_read(self, group: int, start: int) -> dict[str, Any]:
        r = self.replicas.get(group)
        if r is None:
            raise BadArgument(f"rejoin_read: no group {group}")
        if r.failed is not None:
            raise Unavailable(f"group {group}: not whole here: {r.failed.message}")
        if start < r.glog.first_instance:
            snap = await asyncio.to_thread(read_snapshot, r.glog.directory)
            if snap is None:
                raise Unavailable(f"group {group}: instance {start} truncated and no snapshot")
            return {"snapshot": encode_snapshot(snap)}
        records = await r.glog.read_chosen(start, rejoin.READ_MAX_COUNT, CATCHUP_MAX_BYTES)
        return {"entries": [[x.instance, x.value, x.checksum] for x in records]}

    async def _probe(self, groups: list[int]) -> tuple[dict[int, PeerView], dict[int, str]]:
        """Ask every other member; (answers, {peer: why it did not answer})."""
        peers = [m for m in self.members if m != self.node_id]

        async def one(peer: int) -> PeerView:
            addr = self._dial[peer]
            raw = await self._pool.call(
                addr,
                "rejoin_probe",
                {"node": self.node_id, "groups": groups},
                timeout=rejoin.PROBE_TIMEOUT,
            )
            return rejoin.decode_view(raw)

        results = await asyncio.gather(*(one(p) for p in peers), return_exceptions=True)
        views: dict[int, PeerView] = {}
        missing: dict[int, str] = {}
        for peer, result in zip(peers, results, strict=True):
            if isinstance(result, PeerView):
                views[peer] = result
            elif isinstance(result, (PhxqError, OSError)):
                missing[peer] = rejoin.describe(result)
            else:
                raise result
        return views, missing

    async def _read(self, peer: int, group: int, start: int) -> dict[str, Any]:
        raw = await self._pool.call(
            self._dial[peer],
            "rejoin_read",
            {"group": group, "from": start},
            timeout=rejoin.READ_TIMEOUT,
        )
        if not isinstance(raw, dict):
            raise ProtocolError("rejoin_read: answer must be a map")
        return raw

    async def _rejoin_loop(self) -> None:
        while True:
            try:
                await self._rejoin()
                return
            except Exception:  # a bug must not leave the node silently not voting: log, retry
                log.exception("%s %d: rejoin failed; retrying", self._name, self.node_id)
                await asyncio.sleep(rejoin.RETRY_MAX)

    async def _rejoin(self) -> None:
        if self.status is NodeStatus.PROBING:
            await self._probe_until_decided()
        pending = {g for g, r in self.replicas.items() if r.repair in ("joining", "repairing")}
        backoff = rejoin.Backoff()
        limit = asyncio.Semaphore(REPAIR_CONCURRENCY)
        notes = {g: rejoin.Backoff() for g in pending}
        while pending:
            order = sorted(pending)
            results = await asyncio.gather(*(self._repair_group(g, limit, notes[g]) for g in order))
            pending = {g for g, done in zip(order, results, strict=True) if not done}
            if pending:
                await backoff.sleep()
        stuck = [g for g, r in self.replicas.items() if r.failed is not None]
        if stuck:  # diverged or a storage failure: not without an operator
            log.critical(
                "%s %d: groups %s cannot rejoin (see their status); the node stays %s",
                self._name,
                self.node_id,
                stuck,
                self.status.value,
            )
        elif self.status is NodeStatus.JOINING:
            await asyncio.to_thread(self._finish_joining)

    def _finish_joining(self) -> None:
        self._write_member("joined")
        rejoin.remove_marker(self.data, rejoin.JOINING_FILE)
        log.warning("%s %d: joined every group; a full member again", self._name, self.node_id)

    async def _probe_until_decided(self) -> None:
        backoff = rejoin.Backoff(logging.INFO)  # peers still starting is the common case
        what = f"{self._name} {self.node_id}"
        while True:
            views, missing = await self._probe([])
            if not rejoin.is_fresh_cluster(views, self.node_id, self.boot_id):
                others = {p: v.status.value for p, v in views.items()}
                await asyncio.to_thread(self._start_joining, f"peers have history: {others}")
                return
            if missing:  # "new cluster" needs every other member's word
                reason = "no answer from " + ", ".join(f"{p} ({w})" for p, w in missing.items())
                backoff.note(what, reason)
                for r in self.replicas.values():
                    r.repair_reason = reason
                await backoff.sleep()
                continue
            self._fresh_peers = {
                p: v.boot
                for p, v in views.items()
                if v.status is NodeStatus.PROBING and v.boot is not None
            }
            await asyncio.to_thread(self._write_member, "fresh")
            log.warning("%s: every peer is new too: a new cluster, voting", what)
            for r in self.replicas.values():
                r.resume()
            return

    async def _repair_group(
        self, group: int, limit: asyncio.Semaphore, note: rejoin.Backoff
    ) -> bool:
        """One attempt at rebuilding ``group``'s replica; True when it votes again (or can
        never: a divergence, reported loudly)."""
        replica = self.replicas[group]
        what = f"{self._name} {self.node_id} group {group}"
        async with limit:
            try:
                views, missing = await self._probe([group])
                reason = ""
                if missing:
                    reason = "no answer from " + ", ".join(f"{p} ({w})" for p, w in missing.items())
                else:
                    unfit = [
                        f"{p} ({v.status.value})"
                        for p, v in views.items()
                        if v.status is not NodeStatus.MEMBER
                        or group not in v.groups
                        or not v.groups[group].whole
                    ]
                    if unfit:
                        reason = "peers not whole in this group: " + ", ".join(unfit)
                if reason:
                    replica.repair_reason = reason
                    note.note(what, reason)
                    return False
                adoption = rejoin.adopt({p: v.groups[group] for p, v in views.items()})
                await rejoin.rebuild(replica, adoption, self._read)
                await replica.glog.mark_repaired()
            except rejoin.Diverged as exc:
                replica.hold("diverged", exc.message)
                replica.repair_reason = exc.message
                metrics.DIVERGENCE.labels(str(group)).inc()
                log.critical("%s: DIVERGENCE while rebuilding: %s", what, exc.message)
                return True
            except (PhxqError, OSError) as exc:
                replica.repair_reason = rejoin.describe(exc)
                note.note(what, f"rebuild attempt failed: {replica.repair_reason}")
                return False
            replica.resume()
            return True


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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
