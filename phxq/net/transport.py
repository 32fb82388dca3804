"""Transports: a bidirectional, ordered channel of frame bodies; and the TCP implementation.

Public API:

- ``Transport`` (a ``typing.Protocol``) — what the RPC layer needs from a connection:

  - ``send(body: bytes) -> None``: queue one frame body; never blocks. Bodies queued in the same
    event-loop iteration are coalesced into one write. Raises ``Unavailable`` once closed and
    ``MessageTooLarge`` for a body above ``max_frame`` (nothing is sent then).
  - ``async recv() -> bytes``: the next body, in order. Raises ``Unavailable`` once the peer
    closed (after every body that arrived before the close was returned) or after ``close()``,
    and ``ProtocolError`` when the peer broke the framing (e.g. an oversized length).
  - ``async drain()``: wait until the send buffer is below its high-water mark.
  - ``buffered: int``: bytes accepted by ``send`` but not yet handed to the peer.
  - ``close()`` (idempotent; flushes what was sent, then closes), ``async wait_closed()``,
    ``closed: bool``, ``peer: str`` (for logs).

- ``TransportFactory = Callable[[str], Awaitable[Transport]]``: connect to ``"host:port"``.
- ``connect_tcp(addr, *, max_frame=MAX_FRAME_DEFAULT) -> TcpTransport`` (raises ``OSError``).
- ``TcpTransport``: an ``asyncio.Protocol``-based transport (one buffered reader, no per-frame
  task); ``writes`` counts the socket writes issued (coalescing is observable in tests).
  ``set_receiver(on_body, on_end)`` switches it to push mode: every body is handed to
  ``on_body`` straight from the protocol callback (no task wake-up per frame), and ``on_end``
  gets, once, the error ``recv`` would have raised; ``pause_reading``/``resume_reading`` let
  the receiver apply back-pressure. ``recv`` must not be used after that.
  ``send(body, flush=False)`` queues a body that nothing waits on promptly: it leaves with the
  next flushed send, or ``LAZY_FLUSH`` seconds later (a write and a wake-up of the peer saved
  per lazy body under load). In a write, lazy bodies go *after* the urgent ones, so the peer
  handles what someone waits for first (a master's Chosen for instance i never delays the
  follower's persisting the Accept for i + 1); lazy bodies keep their order among themselves,
  and so do urgent ones.
- ``parse_addr("host:port" | "[v6]:port") -> (host, port)``; ``BadArgument`` when malformed.
"""

from __future__ import annotations

import asyncio
import collections
import os
import typing
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Protocol, runtime_checkable

from phxq.errors import BadArgument, MessageTooLarge, PhxqError, ProtocolError, Unavailable
from phxq.net.frames import HEADER_SIZE, MAX_FRAME_DEFAULT, FrameDecoder, prefix

WRITE_HIGH_WATER = 1 << 20
READ_HIGH_WATER = 4 << 20  # bodies received but not yet taken by recv(): pause the socket
LAZY_FLUSH = 0.005  # seconds a body sent with flush=False may wait for company


@runtime_checkable
class Transport(Protocol):
    max_frame: int

    def send(self, body: bytes) -> None: ...

    async def recv(self) -> bytes: ...

    async def drain(self) -> None: ...

    @property
    def buffered(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def peer(self) -> str: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


TransportFactory = Callable[[str], Awaitable[Transport]]


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port_text = addr.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise BadArgument(f"bad address {addr!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_size(body: bytes, max_frame: int) -> None:
    if len(body) > max_frame:
        raise MessageTooLarge(
            f"frame of {len(body)} bytes exceeds the maximum of {max_frame}",
            {"size": len(body), "max": max_frame},
        )


class TcpTransport(asyncio.Protocol):
    """A framed TCP connection. Create with :func:`connect_tcp` or from a server's protocol
    factory (``on_connected`` is called once the socket is up)."""

    def __init__(
        self,
        max_frame: int = MAX_FRAME_DEFAULT,
        on_connected: Callable[[TcpTransport], None] | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.writes = 0
        self._on_connected = on_connected
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(max_frame)
        self._inbox: collections.deque[bytes] = collections.deque()
        self._inbox_bytes = 0
        self._reading_paused = False
        self._recv_waiter: asyncio.Future[None] | None = None
        self._outbox: list[bytes] = []
        self._lazy_outbox: list[bytes] = []  # flush=False bodies: written after _outbox
        self._outbox_bytes = 0
        self._flush_scheduled = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._end: PhxqError | None = None  # what recv raises once the inbox is empty
        self._on_body: Callable[[bytes], None] | None = None  # push mode
        self._on_end: Callable[[PhxqError], None] | None = None
        self._closing = False
        self._lost = self._loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        # The peer's certificate as ssl.getpeercert() gives it: verified against our CA, {} or
        # None when it sent none or the connection is plaintext (phxq.security reads it).
        self.peer_cert: dict[str, typing.Any] | None = None
        self._tls = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = typing.cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self._peer = format_addr(str(peername[0]), int(peername[1]))
        self.peer_cert = transport.get_extra_info("peercert")
        self._tls = transport.get_extra_info("sslcontext") is not None
        if self._on_connected is not None:
            self._on_connected(self)

    def data_received(self, data: bytes) -> None:
        if self._end is not None:
            return
        try:
            bodies = self._decoder.feed(data)
        except ProtocolError as exc:
            self._finish(exc)
            if self._transport is not None:
                self._transport.pause_reading()
            bodies = []
        on_body = self._on_body
        if on_body is not None:
            for body in bodies:
                if self._closing:
                    break
                on_body(body)
            if self._end is not None and self._on_end is not None:
                self._report_end()
            return
        if bodies:
            self._inbox.extend(bodies)
            self._inbox_bytes += sum(map(len, bodies)) + HEADER_SIZE * len(bodies)
            if self._inbox_bytes > READ_HIGH_WATER and self._transport is not None:
                self._reading_paused = True
                self._transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._finish(Unavailable(f"connection closed by {self._peer}"))
        # Keep our write side open: replies to requests already received still go. (TLS has
        # no half-close: there the connection closes.)
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._finish(Unavailable(f"connection to {self._peer} lost{reason}"))
        self._closing = True
        self._outbox.clear()
        self._lazy_outbox.clear()
        self._outbox_bytes = 0
        self._release_drainers()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drainers()

    # ------------------------------------------------------------------ Transport

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def closed(self) -> bool:
        return self._closing or self._transport is None or self._transport.is_closing()

    @property
    def buffered(self) -> int:
        pending = self._transport.get_write_buffer_size() if self._transport else 0
        return self._outbox_bytes + pending

    def send(self, body: bytes, *, flush: bool = True) -> None:
        if self.closed:
            raise Unavailable(f"connection to {self._peer} is closed")
        check_size(body, self.max_frame)
        outbox = self._outbox if flush else self._lazy_outbox
        outbox.append(prefix(body))
        outbox.append(body)
        self._outbox_bytes += HEADER_SIZE + len(body)
        if self._flush_scheduled:
            return
        if flush:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        elif self._lazy_timer is None:
            self._lazy_timer = self._loop.call_later(LAZY_FLUSH, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if self._lazy_outbox:
            self._outbox += self._lazy_outbox
            self._lazy_outbox.clear()
        if not self._outbox or self._transport is None or self._transport.is_closing():
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_bytes = 0
        self.writes += 1
        self._transport.write(data)

    async def drain(self) -> None:
        if self._outbox_bytes >= WRITE_HIGH_WATER:
            self._flush()
        if not self._write_paused or self.closed:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    async def recv(self) -> bytes:
        while not self._inbox:
            if self._end is not None:
                raise self._end
            if self._closing:
                raise Unavailable(f"connection to {self._peer} is closed")
            self._recv_waiter = self._loop.create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        body = self._inbox.popleft()
        self._inbox_bytes -= len(body) + HEADER_SIZE
        if self._reading_paused and self._inbox_bytes < READ_HIGH_WATER // 2:
            self._reading_paused = False
            if self._transport is not None and self._end is None:
                self._transport.resume_reading()
        return body

    def set_receiver(
        self, on_body: Callable[[bytes], None], on_end: Callable[[PhxqError], None]
    ) -> None:
        """Push mode (see the module docstring). Bodies already received go first."""
        self._on_body, self._on_end = on_body, on_end
        while self._inbox and not self._closing:
            body = self._inbox.popleft()
            on_body(body)
        self._inbox.clear()
        self._inbox_bytes = 0
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and self._end is None:
                self._transport.resume_reading()
        if self._end is not None:
            self._report_end()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closing and self._end is None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._closing:
            return
        self._flush()
        self._closing = True
        self._inbox.clear()
        self._wake_reader()
        self._release_drainers()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, discarding unsent data (a TCP reset)."""
        self._closing = True
        self._outbox.clear()
        self._lazy_outbox.clear()
        self._wake_reader()
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)

    # ------------------------------------------------------------------ internals

    def _finish(self, end: PhxqError) -> None:
        if self._end is None:
            self._end = end
        self._wake_reader()
        if self._on_end is not None:
            self._report_end()

    def _report_end(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None and self._end is not None:
            on_end(self._end)

    def _wake_reader(self) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def client_transport(
    token: str | None, ca: str | os.PathLike[str] | SSLContext | None
) -> TransportFactory | None:
    """The factory ``phxq.Client(token=, ca=)`` dials with (``phxq.security.Credentials``);
    None (plaintext, anonymous) when neither is given."""
    if token is None and ca is None:
        return None
    from phxq.security.tls import Credentials  # TLS and certificate code only when used

    return Credentials.for_client(token, ca).transport_factory()


TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds; a peer that stalls the handshake is dropped


async def connect_tcp(
    addr: str, *, max_frame: int = MAX_FRAME_DEFAULT, ssl: SSLContext | None = None
) -> TcpTransport:
    """Open a framed TCP connection to ``addr`` (over TLS with ``ssl``; the server's name is
    checked against the host of ``addr`` when the context says so). Raises ``OSError`` if it
    cannot connect (``ssl.SSLError`` when the handshake fails)."""
    host, port = parse_addr(addr)
    loop = asyncio.get_running_loop()
    tls: dict[str, typing.Any] = {}
    if ssl is not None:
        tls = {"ssl": ssl, "server_hostname": host, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT}
    _, protocol = await loop.create_connection(lambda: TcpTransport(max_frame), host, port, **tls)
    protocol._peer = addr
    return protocol
