"""The store daemon: one node's replicas of every Paxos group, served over RPC.

``async with StoreNode(cfg, node_id) as node:`` opens (and recovers) every group's PLog,
starts the RPC server on the node's configured address and the tick loop that drives leases,
heartbeats and elections, and serves until the context exits. It is a
:class:`~phxq.replication.daemon.ReplicatedDaemon` with :class:`~phxq.store.state.StoreState`
as the state machine of every group; what it adds is retention and the RPC handlers of
:mod:`phxq.store.service`.

RPC methods (params and results are msgpack maps/lists; errors are ``PhxqError`` codes):

=========  ==============================================================================
meta       ``{}`` -> ``{groups, nodes{id: addr}, sets{id: set}, set, topics{name: queues},
           masters{group: id} (this node's set), map}`` (``map``: ``Topology.to_wire()``)
enqueue    ``{topic, batches: [[queue, [[payload, key, headers, dedup_id], ...]], ...]}``;
           every queue in one group -> per batch ``[[offset, duplicate], ...]``
dequeue    ``{group, topic, queue, after, limit, wait?}`` -> ``[[offset, payload, key, headers,
           t]]``; with ``wait`` (seconds) an empty read long-polls until a message arrives
commit     ``{group, topic, queue, offset, token, expect?}`` -> ``offset``; with ``expect``
           (an offset or nil) the cursor must currently be ``expect`` (``VersionMismatch``)
cursor     ``{group, topic, queue}`` -> ``offset | None``
seek       ``{group, topic, queue, offset | time}`` -> new cursor (one-shot replay entry)
status     ``{}`` -> this node's view of every group
cancel_scheduled  ``{topic, queue, id}`` -> True if the scheduled message was pending (never
           released now), False if not (see ``phxq.store.scheduler``)
txn_*      transactions: prepare, decide, resolve, list, settle (see ``phxq.store.txn_service``)
move_seal, move_cancel, queue_end   queue moves (see ``phxq.store.move_service``)
=========  ==============================================================================

Peers also call ``rejoin_probe`` and ``rejoin_read`` (see ``phxq.replication.rejoin``).

Any node answers ``meta`` and ``status``; the others are master-only and a follower answers
``NotMaster(hint)``; a request for a queue another store set holds gets ``StaleMap`` (with the
set and the map version) so the client refreshes its cluster map. Paxos traffic between stores is one-way ``px`` notifications.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from phxq import mapstore, metrics, validate
from phxq.config import ClusterConfig, ConsumerGroupConfig
from phxq.errors import NotMaster, PhxqError, StaleMap, UnknownTopic
from phxq.net.frames import shown
from phxq.replication.daemon import Handler, ReplicatedDaemon
from phxq.replication.replica import GroupReplica
from phxq.routing import INDEX_BITS, group_for_queue
from phxq.security import STORE_RULES
from phxq.store import scheduler, service, txn_service
from phxq.store.mapfollow import MapFollower
from phxq.store.mover import Mover
from phxq.store.scheduler import Releaser
from phxq.store.state import StoreMachines, StoreState
from phxq.topology import Topology

log = logging.getLogger("phxq.store")


def _map_checked(handler: Handler) -> Handler:
    """``handler`` behind the map-version check of a request naming one (param ``map``)."""

    async def checked(node: Any, params: dict[str, Any]) -> Any:
        wanted = params.get("map")
        if wanted is not None and (type(wanted) is not int or wanted != node.maps.version):
            await node.maps.check(wanted)  # (not awaited at all when the versions agree)
        return await handler(node, params)

    return checked


class StoreNode(ReplicatedDaemon[StoreState]):
    """A running store daemon (see the module docstring)."""

    def __init__(self, cluster: ClusterConfig, node_id: int, *, host: str | None = None) -> None:
        c = cluster.cluster
        node = cluster.store(node_id)
        self.set = node.set
        super().__init__(
            "store",
            cluster,
            node,
            # Peers: only the stores of this node's set (each set is its own Paxos cluster).
            {s.id: s.addr for s in cluster.set_stores(node.set)},
            groups=c.groups,
            machines=StoreMachines(c.dedup_window),
            handlers={m: _map_checked(h) for m, h in service.HANDLERS.items()},
            rules=STORE_RULES,
            host=host,
        )
        # The cluster map (which set holds each queue), followed in the lock service's KV.
        tls = None if self.security is None else self.security.peer_ssl
        self.maps = MapFollower(
            cluster, node.data, mapstore.lock_home(cluster, tls), self._map_changed
        )
        self._retention = {g: self._retention_limits(g) for g in range(c.groups)}
        self._releaser = Releaser(self)
        self._txn_sweeper = txn_service.TxnSweeper(self)
        self._mover = Mover(self)
        metrics.STORE_INFO.labels(str(node_id), str(node.set)).set(1)

    def background(self) -> list[tuple[str, Any]]:
        interval = self.cluster.cluster.retention_interval
        return [
            ("retention", self.every(interval, self.apply_retention, "retention pass")),
            ("releaser", self._releaser.run()),
            ("transactions", self._txn_sweeper.run()),
            ("cluster map", self.maps.run()),
            ("queue moves", self._mover.run()),
        ]

    def moves_waiting(self) -> dict[str, str]:
        """Why each queue move this store drives is not done yet (move id -> last error)."""
        return self._mover.waiting()

    @property
    def topology(self) -> Topology:
        """The cluster map this store routes by (see ``phxq.store.mapfollow``)."""
        return self.maps.topology

    @property
    def consumer_groups(self) -> list[ConsumerGroupConfig]:
        """The config's consumer groups and those the cluster map adds (created online)."""
        mine = list(self.cluster.consumer_groups)
        known = {g.name for g in mine}
        return mine + [g for n, g in self.topology.groups.items() if n not in known]

    def _map_changed(self, topo: Topology) -> None:
        groups = self.cluster.cluster.groups
        self._retention = {g: self._retention_limits(g) for g in range(groups)}

    # ------------------------------------------------------------------------- retention

    def _retention_limits(self, group: int) -> tuple[float | None, int | None]:
        """(max age, max bytes) of ``group``'s log: the most generous of the topics with a
        queue in it (age: the longest retention; bytes: the sum of the queues' limits, None if
        any is unlimited)."""
        groups = self.cluster.cluster.groups
        ages: list[float] = []
        total: int | None = 0
        for topic in self.topology.topics.values():
            queues = sum(1 for q in self.local_queues(topic.name) if q % groups == group)
            if not queues:
                continue
            ages.append(topic.retention)
            if topic.retention_bytes is None or total is None:
                total = None
            else:
                total += topic.retention_bytes * queues
        if not ages:  # no queue lives here: only no-ops, keep them as long as any topic
            return max((t.retention for t in self.topology.topics.values()), default=None), None
        return max(ages), total

    def keep_from(self, group: int) -> int:
        """The lowest instance some consumer group of a queue in ``group`` has not consumed."""
        replica = self.replicas[group]
        glog = replica.glog
        keep = glog.chosen_up_to + 1
        groups = self.cluster.cluster.groups
        for cg in self.consumer_groups:
            for q in self.local_queues(cg.topic):
                if q % groups != group:
                    continue
                cursor = replica.state.cursor(cg.name, cg.topic, q)
                after = replica.state.moves.position_after((cg.topic, q), cursor)
                nxt = glog.positions((cg.topic, q), after, 1)
                if nxt:
                    keep = min(keep, nxt[0][0])
        return keep

    async def apply_retention(self) -> None:
        """One retention pass over every group (see ``GroupLog.retention_floor``): truncate
        what expired, after persisting a snapshot of the state it leaves behind."""
        for group, replica in self.replicas.items():
            if replica.failed is not None:
                continue
            max_age, max_bytes = self._retention[group]
            keep = self.keep_from(group)
            floor, forced = replica.glog.retention_floor(
                keep_from=keep, max_age=max_age, max_bytes=max_bytes, now_wall=time.time()
            )
            # Never a pending scheduled message's record, whatever the limits (cancelled and
            # released ones no longer hold it: a release entry carries its own copy); where
            # they hold the log, the master copies them further on first (scheduler.maybe_roll).
            oldest = replica.state.schedule.oldest_id()
            if oldest is not None and oldest >> INDEX_BITS < floor:
                try:
                    await scheduler.maybe_roll(replica, floor)
                except PhxqError as exc:  # NotMaster, Unavailable...: the next pass retries
                    log.info("group %d: rolling scheduled messages failed: %s", group, exc)
                oldest = replica.state.schedule.oldest_id()
            if oldest is not None:
                floor = min(floor, oldest >> INDEX_BITS)
            if floor <= replica.glog.first_instance:
                continue
            try:
                first = await replica.compact(floor)
            except PhxqError as exc:
                log.error("group %d: retention could not truncate: %s", group, exc)
                continue
            metrics.FIRST_INSTANCE.labels(str(group)).set(first)
            if forced and first > keep:
                metrics.RETENTION_FORCED.labels(str(group)).inc()
                log.warning(
                    "group %d: retention dropped instances %d..%d before every consumer group "
                    "consumed them",
                    group,
                    keep,
                    first - 1,
                )

    # ----------------------------------------------------------------------------- RPC

    def local_queues(self, topic: str) -> list[int]:
        """The queues of ``topic`` placed on this node's set (none for an unknown topic)."""
        placement = self.topology.placement.get(topic, ())
        return [q for q, s in enumerate(placement) if s == self.set]

    def replica_for(self, topic: str, queue: Any) -> GroupReplica[StoreState]:
        topology = self.maps.topology
        spec = topology.topics.get(topic) if type(topic) is str else None
        if spec is None:
            raise UnknownTopic(f"unknown topic {shown(topic)}")
        if type(queue) is not int or not 0 <= queue < spec.queues:  # (one test when valid)
            validate.integer(queue, "queue", maximum=spec.queues - 1)
        home = topology.placement[topic][queue]
        group = group_for_queue(queue, self.cluster.cluster.groups)
        if home != self.set and (topic, queue) not in self.replicas[group].state.moves.tenures:
            # (A queue sealed here by a move stays readable up to its seal; one adopted here
            # is served before the map says so: see phxq.store.move_state.)
            raise StaleMap(
                f"queue {queue} of topic {topic!r} lives on store set {home}, not on set "
                f"{self.set} (cluster map version {self.topology.version})",
                {"set": home, "version": self.topology.version},
            )
        return self.replicas[group]

    def master_replica(self, topic: str, queue: Any) -> GroupReplica[StoreState]:
        replica = self.replica_for(topic, queue)
        if replica.failed is not None:
            # This replica neither serves nor votes in the group (storage failure, damaged log):
            # send the caller elsewhere. No hint: what it knows of the master may be stale.
            raise NotMaster(
                f"group {replica.group} is not served here: {replica.failed.message}",
                {"failed": True},
            )
        if not replica.serving:
            raise NotMaster(hint=replica.master_address())
        return replica

    def meta(self) -> dict[str, Any]:
        """``nodes``: every store of every set (``sets``: each one's set); ``masters``: of
        this node's set's groups; ``map``: the cluster map (``Topology.to_wire``)."""
        return {
            "groups": self.cluster.cluster.groups,
            "nodes": {str(s.id): s.addr for s in self.cluster.stores},
            "sets": {str(s.id): s.set for s in self.cluster.stores},
            "set": self.set,
            "topics": {name: t.queues for name, t in self.topology.topics.items()},
            "masters": {str(g): r.paxos.master for g, r in self.replicas.items()},
            "map": self.topology.to_wire(),
        }
