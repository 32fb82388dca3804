"""In-memory transports: the same contract as TCP, without sockets (for tests and simulations).

Public API:

- ``memory_pair(max_frame=MAX_FRAME_DEFAULT, *, names=("a", "b")) -> (MemoryTransport,
  MemoryTransport)``: two connected ends. A body sent on one end is received, in order, on the
  other. ``buffered`` is the number of bytes the peer has not received yet.
- ``MemoryNetwork``: a registry of listeners by address.
  ``listen(addr, accept)`` registers ``accept(transport)`` (e.g. ``RpcServer.accept``);
  ``unlisten(addr)``; ``async connect(addr) -> Transport`` (a ``TransportFactory``) returns the
  client end and hands the server end to ``accept``; ``Unavailable`` when nobody listens.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from phxq.errors import Unavailable
from phxq.net.frames import MAX_FRAME_DEFAULT
from phxq.net.transport import Transport, check_size


class MemoryTransport:
    """One end of an in-memory connection. Create pairs with :func:`memory_pair`."""

    def __init__(self, name: str, max_frame: int) -> None:
        self.max_frame = max_frame
        self._name = name
        self._peer_end: MemoryTransport | None = None
        self._inbox: collections.deque[bytes] = collections.deque()
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._peer_closed = False
        self._closed_event = asyncio.Event()

    @property
    def peer(self) -> str:
        return self._peer_end._name if self._peer_end is not None else "?"

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def buffered(self) -> int:
        return self._peer_end._inbox_bytes if self._peer_end is not None else 0

    def send(self, body: bytes) -> None:
        if self._closing:
            raise Unavailable(f"connection to {self.peer} is closed")
        check_size(body, self.max_frame)
        peer = self._peer_end
        if peer is None or peer._closing:
            return  # like TCP: bytes to a closed peer vanish; our recv() will report the close
        peer._inbox.append(bytes(body))
        peer._inbox_bytes += len(body)
        peer._wake()

    async def recv(self) -> bytes:
        while not self._inbox:
            if self._closing:
                raise Unavailable(f"connection to {self.peer} is closed")
            if self._peer_closed:
                raise Unavailable(f"connection closed by {self.peer}")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        body = self._inbox.popleft()
        self._inbox_bytes -= len(body)
        return body

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._inbox.clear()
        self._inbox_bytes = 0
        self._wake()
        self._closed_event.set()
        peer = self._peer_end
        if peer is not None:
            peer._peer_closed = True
            peer._wake()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


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
