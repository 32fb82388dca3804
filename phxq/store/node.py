"""The store daemon: one node's replicas of every Paxos group, served over RPC.

``async with StoreNode(cfg, node_id) as node:`` opens (and recovers) every group's PLog,
starts the RPC server on the node's configured address and the tick loop that drives leases,
heartbeats and elections, and serves until the context exits.

RPC methods (params and results are msgpack maps/lists; errors are ``PhxqError`` codes):

=========  ==============================================================================
meta       ``{}`` -> ``{groups, nodes{id: addr}, topics{name: queues}, masters{group: id}}``
enqueue    ``{topic, batches: [[queue, [[payload, key, headers, dedup_id], ...]], ...]}``;
           every queue in one group -> per batch ``[[offset, duplicate], ...]``
dequeue    ``{group, topic, queue, after, limit, wait?}`` -> ``[[offset, payload, key, headers,
           t]]``; with ``wait`` (seconds) an empty read long-polls until a message arrives
commit     ``{group, topic, queue, offset, token, expect?}`` -> ``offset``; with ``expect``
           (an offset or nil) the cursor must currently be ``expect`` (``VersionMismatch``)
cursor     ``{group, topic, queue}`` -> ``offset | None``
seek       ``{group, topic, queue, offset | time}`` -> new cursor (one-shot replay entry)
status     ``{}`` -> this node's view of every group
=========  ==============================================================================

Any node answers ``meta`` and ``status``; the others are master-only and a follower answers
``NotMaster(hint)``. Paxos traffic between stores is one-way ``px`` notifications.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from phxq import metrics
from phxq.config import ClusterConfig, NodeConfig
from phxq.errors import BadArgument, NotMaster, StorageError, UnknownTopic
from phxq.net.rpc import RpcServer
from phxq.store import service
from phxq.store.host import PaxosHost
from phxq.store.replica import GroupReplica
from phxq.store.routing import group_for_queue
from phxq.store.state import StoreState

log = logging.getLogger("phxq.store")


class StoreNode:
    """A running store daemon (see the module docstring)."""

    def __init__(self, cluster: ClusterConfig, node_id: int, *, host: str | None = None) -> None:
        self.cluster = cluster
        self.node: NodeConfig = cluster.store(node_id)
        self.node_id = node_id
        self._addresses = {s.id: s.addr for s in cluster.stores}
        self._host = host
        c = cluster.cluster
        self.paxos_host = PaxosHost(
            node_id,
            self._addresses,
            Path(self.node.data),
            groups=c.groups,
            window=c.paxos_window,
            heartbeat_interval=c.heartbeat_interval,
            lease=c.lease,
            state_for=lambda group: StoreState(group, dedup_window=c.dedup_window),
            name="store",
        )
        self.replicas = self.paxos_host.replicas
        self._server = RpcServer(self._handle, notify_handler=self.paxos_host.on_notify)
        self.started_at = time.time()
        self.instance_id = uuid.uuid4().hex[:8]

    # ---------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> StoreNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.paxos_host.start()
        host, port = self.node.addr.rsplit(":", 1)
        await self._server.start(self._host or host, int(port))
        if self.node.metrics_addr:
            metrics.serve(self.node.metrics_addr)
        log.info(
            "store %d serving %d groups on %s",
            self.node_id,
            self.cluster.cluster.groups,
            self._server.address,
        )

    async def close(self) -> None:
        await self._server.close()
        await self.paxos_host.close()

    @property
    def address(self) -> str:
        return self._server.address

    # ----------------------------------------------------------------------------- RPC

    def replica_for(self, topic: str, queue: Any) -> GroupReplica:
        spec = self.cluster.topics_by_name.get(topic) if isinstance(topic, str) else None
        if spec is None:
            raise UnknownTopic(f"unknown topic {topic!r}")
        if not isinstance(queue, int) or isinstance(queue, bool) or not 0 <= queue < spec.queues:
            raise BadArgument(f"queue must be an int in [0, {spec.queues}), got {queue!r}")
        return self.replicas[group_for_queue(queue, self.cluster.cluster.groups)]

    def master_replica(self, topic: str, queue: Any) -> GroupReplica:
        replica = self.replica_for(topic, queue)
        if replica.failed is not None:
            raise StorageError(f"group {replica.group} is not serving: {replica.failed.message}")
        if not replica.serving:
            raise NotMaster(hint=replica.master_address())
        return replica

    async def _handle(self, method: str, params: Any) -> Any:
        handler = service.HANDLERS.get(method)
        if handler is None:
            raise BadArgument(f"unknown method {method!r}")
        if not isinstance(params, dict):
            raise BadArgument(f"{method}: params must be a map")
        result = await handler(self, params)
        self.paxos_host.wake()
        return result

    def meta(self) -> dict[str, Any]:
        return {
            "groups": self.cluster.cluster.groups,
            "nodes": {str(k): v for k, v in self._addresses.items()},
            "topics": {t.name: t.queues for t in self.cluster.topics},
            "masters": {str(g): r.paxos.master for g, r in self.replicas.items()},
        }
