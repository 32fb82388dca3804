"""The store daemon: one node's replicas of every Paxos group, served over RPC.

``async with StoreNode(cfg, node_id) as node:`` opens (and recovers) every group's PLog,
starts the RPC server on the node's configured address and the tick loop that drives leases,
heartbeats and elections, and serves until the context exits.

RPC methods (params and results are msgpack maps/lists; errors are ``PhxqError`` codes):

=========  ==============================================================================
meta       ``{}`` -> ``{groups, nodes{id: addr}, topics{name: queues}, masters{group: id}}``
enqueue    ``{topic, batches: [[queue, [[payload, key, headers, dedup_id], ...]], ...]}``;
           every queue in one group -> per batch ``[[offset, duplicate], ...]``
dequeue    ``{group, topic, queue, after, limit}`` -> ``[[offset, payload, key, headers, t]]``
commit     ``{group, topic, queue, offset, token}`` -> ``offset``
cursor     ``{group, topic, queue}`` -> ``offset | None``
seek       ``{group, topic, queue, offset | time}`` -> new cursor (one-shot replay entry)
status     ``{}`` -> this node's view of every group
=========  ==============================================================================

Any node answers ``meta`` and ``status``; the others are master-only and a follower answers
``NotMaster(hint)``. Paxos traffic between stores is one-way ``px`` notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from phxq import metrics
from phxq.config import ClusterConfig, NodeConfig
from phxq.errors import BadArgument, NotMaster, ProtocolError, StorageError, UnknownTopic
from phxq.net.rpc import RpcPool, RpcServer
from phxq.paxos import GroupConfig, decode_message
from phxq.plog import LogWriter
from phxq.store import service
from phxq.store.replica import GroupReplica
from phxq.store.routing import group_for_queue
from phxq.store.state import StoreState

log = logging.getLogger("phxq.store")

TICK_MAX_SLEEP = 0.01


class StoreNode:
    """A running store daemon (see the module docstring)."""

    def __init__(self, cluster: ClusterConfig, node_id: int, *, host: str | None = None) -> None:
        self.cluster = cluster
        self.node: NodeConfig = cluster.store(node_id)
        self.node_id = node_id
        self._addresses = {s.id: s.addr for s in cluster.stores}
        self._members = tuple(sorted(self._addresses))
        self._host = host
        self.replicas: dict[int, GroupReplica] = {}
        self._writer: LogWriter | None = None
        self._pool = RpcPool()
        self._server = RpcServer(self._handle, notify_handler=self._on_notify)
        self._tick_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.started_at = time.time()
        self.instance_id = uuid.uuid4().hex[:8]

    # ---------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> StoreNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        data = Path(self.node.data)
        data.mkdir(parents=True, exist_ok=True)
        self._writer = LogWriter(on_fsync=metrics.FSYNC_LATENCY.observe)
        await self._writer.start()
        c = self.cluster.cluster
        for group in range(c.groups):
            gcfg = GroupConfig(
                group=group,
                node_id=self.node_id,
                members=self._members,
                window=c.paxos_window,
                heartbeat_interval=c.heartbeat_interval,
                lease=c.lease,
            )
            state = StoreState(group, dedup_window=c.dedup_window)
            self.replicas[group] = await GroupReplica.open(
                gcfg,
                data / f"g{group:04d}",
                self._writer,
                state,
                self._send,
                address_of=self._addresses.get,
            )
        host, port = self.node.addr.rsplit(":", 1)
        await self._server.start(self._host or host, int(port))
        self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop())
        if self.node.metrics_addr:
            metrics.serve(self.node.metrics_addr)
        log.info("store %d serving %d groups on %s", self.node_id, c.groups, self._server.address)

    async def close(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        await self._server.close()
        for replica in self.replicas.values():
            await replica.close()
        await self._pool.close()
        if self._writer is not None:
            await self._writer.close()

    @property
    def address(self) -> str:
        return self._server.address

    # --------------------------------------------------------------------- paxos plumbing

    def _send(self, to: int, payload: bytes) -> None:
        addr = self._addresses.get(to)
        if addr is not None and to != self.node_id:
            self._pool.notify(addr, "px", payload)

    def _on_notify(self, method: str, params: Any) -> None:
        if method != "px" or not isinstance(params, bytes):
            return  # unknown notifications are ignored: notify has no reply channel
        try:
            msg = decode_message(params)
        except ProtocolError as exc:
            log.warning("store %d: dropped malformed paxos message: %s", self.node_id, exc)
            return
        replica = self.replicas.get(msg.group)
        if replica is None or msg.sender not in self._addresses:
            return
        replica.on_message(msg)
        self._wake.set()

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
            metrics.MASTERS_HELD.set(sum(r.paxos.is_master for r in self.replicas.values()))
            self._wake.clear()
            delay = max(0.0, soonest - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

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
        self._wake.set()
        return result

    def meta(self) -> dict[str, Any]:
        return {
            "groups": self.cluster.cluster.groups,
            "nodes": {str(k): v for k, v in self._addresses.items()},
            "topics": {t.name: t.queues for t in self.cluster.topics},
            "masters": {str(g): r.paxos.master for g, r in self.replicas.items()},
        }
