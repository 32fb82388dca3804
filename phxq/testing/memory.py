"""In-memory transports: the same contract as TCP, without sockets (for tests and simulations).

Public API:

- ``memory_pair(max_frame=MAX_FRAME_DEFAULT, *, names=("a", "b")) -> (MemoryTransport,
  MemoryTransport)``: two connected ends. A body sent on one end is delivered, in order, to the
  other end's receiver (``Transport.set_receiver``), one loop iteration later, as TCP would;
  lazy sends (``flush=False``) wait for company like TCP's. ``buffered`` counts the bytes the
  peer's receiver has not been handed yet, so a paused receiver makes ``drain`` wait.
- ``MemoryNetwork``: a registry of listeners by address.
  ``listen(addr, accept)`` registers ``accept(transport)`` (e.g. ``RpcServer.accept``);
  ``unlisten(addr)``; ``async connect(addr) -> Transport`` (a ``TransportFactory``) returns the
  client end and hands the server end to ``accept``; ``Unavailable`` when nobody listens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from phxq.errors import Unavailable
from phxq.net.frames import MAX_FRAME_DEFAULT
from phxq.net.transport import (
    LAZY_FLUSH,
    WRITE_HIGH_WATER,
    Inbound,
    OnBody,
    OnEnd,
    Transport,
    check_size,
)


class MemoryTransport:
    """One end of an in-memory connection. Create pairs with :func:`memory_pair`."""

    def __init__(self, name: str, max_frame: int) -> None:
        self.max_frame = max_frame
        self._name = name
        self._peer_end: MemoryTransport | None = None
        self._inbound = Inbound(self._inbound_changed)
        self._outbox: list[bytes] = []
        self._lazy_outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._flush_scheduled = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closing = False
        self._closed_event = asyncio.Event()

    @property
    def peer(self) -> str:
        return self._peer_end._name if self._peer_end is not None else "?"

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def buffered(self) -> int:
        peer = self._peer_end
        return self._outbox_bytes + (peer._inbound.backlog_bytes if peer is not None else 0)

    def send(self, body: bytes, *, flush: bool = True) -> None:
        if self._closing:
            raise Unavailable(f"connection to {self.peer} is closed")
        check_size(body, self.max_frame)
        (self._outbox if flush else self._lazy_outbox).append(bytes(body))
        self._outbox_bytes += len(body)
        if self._flush_scheduled:
            return
        loop = asyncio.get_running_loop()
        if flush:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        elif self._lazy_timer is None:
            self._lazy_timer = loop.call_later(LAZY_FLUSH, self._flush)

    def _flush(self, *, soon: bool = False) -> None:
        self._flush_scheduled = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        bodies = self._outbox + self._lazy_outbox
        self._outbox, self._lazy_outbox, self._outbox_bytes = [], [], 0
        peer = self._peer_end
        if bodies and peer is not None and not peer._closing:
            peer._inbound.arrived(bodies, soon=soon)
        # else: like TCP, bytes to a closed peer vanish; our receiver hears of the close

    async def drain(self) -> None:
        while self.buffered >= WRITE_HIGH_WATER and not self._closing:
            if self._outbox_bytes:
                self._flush(soon=True)
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def set_receiver(self, on_body: OnBody, on_end: OnEnd) -> None:
        self._inbound.set_receiver(on_body, on_end)

    def pause_reading(self) -> None:
        self._inbound.pause()

    def resume_reading(self) -> None:
        self._inbound.resume()

    def close(self) -> None:
        if self._closing:
            return
        self._flush(soon=True)
        self._closing = True
        self._inbound.discard(Unavailable(f"connection to {self.peer} is closed"))
        self._release_drainers()
        self._closed_event.set()
        peer = self._peer_end
        if peer is not None:
            peer._inbound.end(Unavailable(f"connection closed by {self._name}"))

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def _inbound_changed(self) -> None:
        """Our receiver took bodies or paused: the peer's ``drain`` may proceed (or not)."""
        if self._peer_end is not None:
            self._peer_end._release_drainers()

    def _release_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def memory_pair(
    max_frame: int = MAX_FRAME_DEFAULT, *, names: tuple[str, str] = ("a", "b")
) -> tuple[MemoryTransport, MemoryTransport]:
    a = MemoryTransport(names[0], max_frame)
    b = MemoryTransport(names[1], max_frame)
    a._peer_end, b._peer_end = b, a
    return a, b


class MemoryNetwork:
    """Addresses to in-memory listeners; ``connect`` is a drop-in ``TransportFactory``."""

    def __init__(self, max_frame: int = MAX_FRAME_DEFAULT) -> None:
        self.max_frame = max_frame
        self._listeners: dict[str, Callable[[Transport], None]] = {}
        self._clients = 0

    def listen(self, addr: str, accept: Callable[[Transport], None]) -> None:
        self._listeners[addr] = accept

    def unlisten(self, addr: str) -> None:
        self._listeners.pop(addr, None)

    async def connect(self, addr: str) -> Transport:
        accept = self._listeners.get(addr)
        if accept is None:
            raise Unavailable(f"nothing listens on {addr} (memory network)")
        self._clients += 1
        client, server = memory_pair(self.max_frame, names=(f"client{self._clients}", addr))
        accept(server)
        return client
