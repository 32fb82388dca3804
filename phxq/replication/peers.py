"""How a node reaches the other members of its replicated group: the runtime's only link to
the network. :class:`RpcPeers` carries it over ``phxq.net`` RPC; the runtime simulation
(``tests/sim``) plugs in a seeded in-memory network instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, final

from phxq.errors import Unavailable
from phxq.net.rpc import RpcPool
from phxq.net.transport import TransportFactory

__all__ = ["Peers", "RpcPeers"]


class Peers(Protocol):
    """Notifications and calls to member nodes, by node id."""

    def notify(self, to: int, method: str, params: Any, *, lazy: bool = False) -> None:
        """Fire-and-forget (loss is tolerated); never raises. ``lazy``: it may wait a few ms for
        the next message to that node."""
        ...

    async def call(self, to: int, method: str, params: Any, *, timeout: float) -> Any:
        """The peer's answer; ``PhxqError`` (``Unavailable`` when it cannot be reached)."""
        ...

    async def close(self) -> None: ...


@final
class RpcPeers:
    """Peers over an :class:`~phxq.net.rpc.RpcPool`, dialed at ``dial[node]`` (with
    ``[security]`` the factory dials TLS with this member's certificate)."""

    def __init__(
        self, dial: Mapping[int, str], me: int, *, transport_factory: TransportFactory | None = None
    ) -> None:
        self._dial = dict(dial)
        self._me = me
        self._pool = RpcPool(transport_factory=transport_factory)

    def notify(self, to: int, method: str, params: Any, *, lazy: bool = False) -> None:
        addr = self._dial.get(to)
        if addr is not None and to != self._me:
            self._pool.notify(addr, method, params, lazy=lazy)

    async def call(self, to: int, method: str, params: Any, *, timeout: float) -> Any:
        addr = self._dial.get(to)
        if addr is None:
            raise Unavailable(f"no address for node {to}")
        return await self._pool.call(addr, method, params, timeout=timeout)

    async def close(self) -> None:
        await self._pool.close()
