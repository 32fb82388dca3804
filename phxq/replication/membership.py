"""A node's membership: whether its data directory may vote, and the rebuilds that make it so.

:class:`Membership` is the part of a :class:`~phxq.replication.host.PaxosHost` that applies the
rules of :mod:`phxq.replication.rejoin` (read that module first). Its dependencies are explicit:
the node's id, members, data directory (marker files), replicas and a ``call`` to a peer.

- at start (:meth:`Membership.decide`, blocking, after the logs are recovered): ``member``
  (``MEMBER`` file, or a directory with state from before the file existed), ``joining``
  (``JOINING`` file) or ``probing`` (a new, empty directory). Replicas that must not vote are
  held (``GroupReplica.hold``): all of them while probing or joining; on a member, damaged ones
  and groups whose log is missing;
- :meth:`Membership.run` (the host runs it as a task when :meth:`must_rebuild`) probes the peers until the cluster is known new (write ``MEMBER``, vote) or not
  (write ``JOINING``), then rebuilds every held replica from every other member (a few groups
  at a time, each retried with backoff while a peer is down or not whole) and resumes it; when
  all are whole a joining node writes ``MEMBER`` and removes ``JOINING``;
- the peers' side: ``rejoin_probe`` (this node's status and its replicas' promised ballot,
  chosen_up_to, checksum and accepted values) and ``rejoin_read`` (chosen values, or the
  snapshot when they are truncated) through :meth:`Membership.handle_rpc`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, Protocol

from phxq import metrics
from phxq.errors import BadArgument, PhxqError, ProtocolError, Unavailable
from phxq.replication import rejoin
from phxq.replication.rejoin import GroupView, NodeStatus, PeerView
from phxq.replication.replica import CATCHUP_MAX_BYTES, GroupReplica
from phxq.replication.snapshot import encode_snapshot

__all__ = ["REJOIN_METHODS", "REPAIR_CONCURRENCY", "Membership"]

log = logging.getLogger("phxq.host")

REJOIN_METHODS = frozenset({"rejoin_probe", "rejoin_read"})
REPAIR_CONCURRENCY = 4  # groups rebuilt at once


class CallPeer(Protocol):
    """A request to peer ``to`` (``Peers.call``)."""

    def __call__(self, to: int, method: str, params: Any, *, timeout: float) -> Awaitable[Any]: ...


class Membership:
    """Membership status and rebuilds of one node (see the module docstring)."""

    def __init__(
        self,
        node_id: int,
        members: tuple[int, ...],
        data: Path,
        replicas: Mapping[int, GroupReplica[Any]],
        call: CallPeer,
        *,
        name: str,
        missing_groups: set[int],
    ) -> None:
        self.node_id = node_id
        self.members = members
        self.data = data
        self.replicas = replicas
        self._call = call
        self._what = f"{name} {node_id}"
        self.status = NodeStatus.MEMBER
        self.boot_id = rejoin.new_boot_id()  # identifies this process while it probes
        self._fresh_peers: dict[int, int] = {}  # from MEMBER: probing peers seen when fresh
        self._missing_groups = set(missing_groups)  # groups whose log was absent at start

    def must_rebuild(self) -> bool:
        """After :meth:`decide`: something does not vote, so :meth:`run` has work to do."""
        replicas = self.replicas.values()
        return self.status is not NodeStatus.MEMBER or any(r.repair is not None for r in replicas)

    async def run(self) -> None:
        """Probe and rebuild until every replica that can vote again does (retried on bugs)."""
        while True:
            try:
                await self._rejoin()
                return
            except Exception:  # a bug must not leave the node silently not voting: log, retry
                log.exception("%s: rejoin failed; retrying", self._what)
                await asyncio.sleep(rejoin.RETRY_MAX)

    def decide(self) -> None:
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
                    log.warning("%s: group %d has no log: joining it", self._what, g)
            return
        if rejoin.read_marker(self.data, rejoin.JOINING_FILE) is not None:
            self._start_joining("a join was under way when the daemon stopped")
            return
        if any(r.glog.has_state for r in self.replicas.values()):
            log.warning(
                "%s: data directory %s has state but no %s file (written by an older "
                "version): taking it as a member's",
                self._what,
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
        # INFO: every first start of a cluster does this; what follows says if it is unusual.
        log.info(
            "%s: new data directory %s: asking peers whether the cluster is new (boot id %x)",
            self._what,
            self.data,
            self.boot_id,
        )

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
        log.warning("%s: joining every group: %s", self._what, why)

    async def handle_rpc(self, method: str, params: Any) -> Any:
        """The rejoin request methods a peer calls while it rebuilds (``REJOIN_METHODS``)."""
        if not isinstance(params, dict):
            raise BadArgument(f"{method}: params must be a map")
        if method == "rejoin_probe":
            groups = params.get("groups", [])
            if not isinstance(groups, list) or not all(_is_int(g) for g in groups):
                raise BadArgument("rejoin_probe: groups must be a list of ints")
            if len(groups) > len(self.replicas):
                raise BadArgument(f"rejoin_probe: at most {len(self.replicas)} groups")
            return rejoin.encode_view(self._view(sorted(set(groups))))
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
            snap = await r.snapshots.read()
            if snap is None:
                raise Unavailable(f"group {group}: instance {start} truncated and no snapshot")
            return {"snapshot": encode_snapshot(snap)}
        records = await r.glog.read_chosen(start, rejoin.READ_MAX_COUNT, CATCHUP_MAX_BYTES)
        return {"entries": [[x.instance, x.value, x.checksum] for x in records]}

    async def _probe(self, groups: list[int]) -> tuple[dict[int, PeerView], dict[int, str]]:
        """Ask every other member; (answers, {peer: why it did not answer})."""
        peers = [m for m in self.members if m != self.node_id]

        async def one(peer: int) -> PeerView:
            raw = await self._call(
                peer,
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
        raw = await self._call(
            peer,
            "rejoin_read",
            {"group": group, "from": start},
            timeout=rejoin.READ_TIMEOUT,
        )
        if not isinstance(raw, dict):
            raise ProtocolError("rejoin_read: answer must be a map")
        return raw

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
                "%s: groups %s cannot rejoin (see their status); the node stays %s",
                self._what,
                stuck,
                self.status.value,
            )
        elif self.status is NodeStatus.JOINING:
            await asyncio.to_thread(self._finish_joining)

    def _finish_joining(self) -> None:
        self._write_member("joined")
        rejoin.remove_marker(self.data, rejoin.JOINING_FILE)
        log.warning("%s: joined every group; a full member again", self._what)

    async def _probe_until_decided(self) -> None:
        backoff = rejoin.Backoff(logging.INFO)  # peers still starting is the common case
        what = self._what
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
            log.info("%s: every peer is new too: a new cluster, voting", what)
            for r in self.replicas.values():
                r.resume()
            return

    async def _repair_group(
        self, group: int, limit: asyncio.Semaphore, note: rejoin.Backoff
    ) -> bool:
        """One attempt at rebuilding ``group``'s replica; True when it votes again (or can
        never: a divergence, reported loudly)."""
        replica = self.replicas[group]
        what = f"{self._what} group {group}"
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
