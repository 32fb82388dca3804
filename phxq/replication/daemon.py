"""The skeleton both replicated daemons share (the store and the lock service).

A :class:`ReplicatedDaemon` is a :class:`~phxq.replication.host.PaxosHost` for its node, an
RPC server on the node's address that routes Paxos notifications to the host, rejoin requests
to its membership and every other method to the daemon's handler table, optional Prometheus
metrics, and the daemon's own background loops -- all owned by one
:class:`~phxq.tasks.TaskScope`. With ``[security]`` every link is TLS and requests pass the
permission guard of the daemon's rules (:mod:`phxq.security`). ``async with`` starts and stops it.

A subclass passes its state machines and handlers and lists its loops in :meth:`background`;
it does not copy the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Generic

from phxq import metrics
from phxq.config import ClusterConfig, NodeConfig
from phxq.errors import BadArgument, PhxqError
from phxq.net.frames import shown
from phxq.net.rpc import RpcServer
from phxq.replication.host import PaxosHost
from phxq.replication.machine import M, Machines
from phxq.replication.membership import REJOIN_METHODS
from phxq.replication.replica import GroupReplica
from phxq.security import NodeSecurity
from phxq.security.policy import Rule
from phxq.tasks import TaskScope

__all__ = ["Handler", "ReplicatedDaemon"]

log = logging.getLogger("phxq.daemon")

Handler = Callable[[Any, dict[str, Any]], Awaitable[Any]]  # (daemon, params) -> result


class ReplicatedDaemon(Generic[M]):
    """One node of a replicated service (see the module docstring); ``kind`` names it in logs
    (``"store"``, ``"lock"``)."""

    def __init__(
        self,
        kind: str,
        cluster: ClusterConfig,
        node: NodeConfig,
        addresses: Mapping[int, str],
        *,
        groups: int,
        machines: Machines[M],
        handlers: Mapping[str, Handler],
        rules: Mapping[str, Rule],
        host: str | None = None,
        on_input: Callable[[GroupReplica[M]], None] | None = None,
    ) -> None:
        self.kind = kind
        self.cluster = cluster
        self.node = node
        self.node_id = node.id
        self.addresses = dict(addresses)
        self._bind_host = host
        # With [security]: TLS for clients and peers, and the permission guard of ``rules``.
        self.security = sec = NodeSecurity.build(cluster, node, rules, kind)
        self.paxos_host: PaxosHost[M] = PaxosHost.from_config(
            cluster.cluster,
            node,
            self.addresses,
            groups=groups,
            machines=machines,
            name=kind,
            on_input=on_input,
            transport_factory=None if sec is None else sec.peer_credentials.transport_factory(),
        )
        self.replicas = self.paxos_host.replicas
        self._handlers = handlers
        self._server = RpcServer(
            self._handle,
            notify_handler=self.paxos_host.on_notify,
            ssl=None if sec is None else sec.server_ssl,
            guard=None if sec is None else sec.guard,
        )
        self._tasks = TaskScope(f"{kind} {node.id}", log)
        self.started_at = time.time()

    # ---------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> ReplicatedDaemon[M]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.paxos_host.start()
        host, port = self.node.addr.rsplit(":", 1)
        await self._server.start(self._bind_host or host, int(port))
        if self.node.metrics_addr:
            metrics.serve(self.node.metrics_addr, self.kind)
        for name, loop in self.background():
            self._tasks.spawn(loop, name=name)
        log.info(
            "%s %d serving %d groups on %s",
            self.kind,
            self.node_id,
            len(self.replicas),
            self._server.address,
        )

    async def close(self) -> None:
        await self._server.close()
        await self._tasks.aclose()
        await self.paxos_host.close()

    def background(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The daemon's own loops, as ``(name, coroutine)``; run until :meth:`close`."""
        return []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task the daemon owns (cancelled by :meth:`close`)."""
        self._tasks.spawn(coro, name=name)

    async def every(self, interval: float, step: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run ``step`` every ``interval`` seconds; a failure is logged and the loop goes on."""
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except PhxqError as exc:
                log.error("%s %d: %s failed: %s", self.kind, self.node_id, what, exc)
            except Exception:  # a bug here must not stop the daemon; it is logged loudly
                log.exception("%s %d: %s failed", self.kind, self.node_id, what)

    @property
    def address(self) -> str:
        return self._server.address

    # ----------------------------------------------------------------------------- RPC

    async def _handle(self, method: str, params: Any) -> Any:
        if method in REJOIN_METHODS:
            return await self.paxos_host.handle_rpc(method, params)
        handler = self._handlers.get(method)
        if handler is None:
            raise BadArgument(f"unknown method {shown(method)}")
        if not isinstance(params, dict):
            raise BadArgument(f"{method}: params must be a map")
        # No tick-loop wake-up here: every replica input reports a moved deadline itself.
        return await handler(self, params)
