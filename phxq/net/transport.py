"""Transports: a bidirectional, ordered channel of frame bodies; and the TCP implementation.

Public API:

- ``Transport`` (a ``typing.Protocol``) — what the RPC layer needs from a connection. Every
  implementation (``TcpTransport``; ``phxq.testing``'s memory and fault-injecting ones) keeps
  these promises, and tests/unit/test_net_transport.py holds each of them to it:

  - ``send(body, *, flush=True) -> None``: queue one frame body; never blocks. Bodies queued in
    the same event-loop iteration leave together (one write on TCP). A body sent with
    ``flush=False`` is one nothing waits on promptly: it leaves with the next flushed send, or
    ``LAZY_FLUSH`` seconds later. Among what leaves together, flushed bodies go before lazy
    ones (the peer handles first what someone waits for: a master's Chosen for instance i never
    delays the follower's persisting the Accept for i + 1); each kind keeps its own order.
    Raises ``Unavailable`` once closed and ``MessageTooLarge`` for a body above ``max_frame``
    (nothing is sent then).
  - ``set_receiver(on_body, on_end)``: push delivery. Every body received is handed to
    ``on_body(body)``, in order, bodies that arrived before the call first; then, once,
    ``on_end(error)``: ``ProtocolError`` when the peer broke the framing, else ``Unavailable``
    (the peer closed, the connection was lost, or we closed it). Both are called from event
    loop callbacks, never from inside a call the receiver makes on the transport, and never
    after ``on_end``. After our own ``close()`` no more bodies are delivered. Calling it again
    hands the connection over (after a handshake, see ``receive_one``): the new receiver gets
    what was not delivered yet, with reading resumed, and hears the end too.
  - ``pause_reading()`` / ``resume_reading()``: back-pressure from the receiver: no ``on_body``
    while paused, and the peer's ``drain`` eventually waits.
  - ``async drain()``: wait until the send buffer is below its high-water mark (or closed).
  - ``buffered: int``: bytes accepted by ``send`` but not yet handed to the peer's receiver.
  - ``close()`` (idempotent; flushes what was sent, then closes), ``async wait_closed()``,
    ``closed: bool``, ``peer: str`` (for logs), ``max_frame: int``.

  The RPC client and server use exactly this path on every transport (there is no pull mode):
  no task is woken per frame, a reply or a Paxos message is handled straight from the callback.
  ``phxq.testing.Inbox`` turns push delivery back into ``await inbox.recv()`` for tests.

- ``async receive_one(transport) -> bytes``: the next body, for a handshake before the
  connection is handed to its receiver (reading pauses after it; raises what ended the
  connection).
- ``TransportFactory = Callable[[str], Awaitable[Transport]]``: connect to ``"host:port"``.
- ``connect_tcp(addr, *, max_frame=MAX_FRAME_DEFAULT) -> TcpTransport`` (raises ``OSError``).
- ``TcpTransport``: an ``asyncio.Protocol`` (one buffered decoder, no per-frame task);
  ``writes`` counts the socket writes issued (coalescing is observable in tests).
- ``parse_addr("host:port" | "[v6]:port") -> (host, port)``; ``BadArgument`` when malformed;
  ``format_addr(host, port)``; ``check_size(body, max_frame)`` (``MessageTooLarge``).
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
READ_HIGH_WATER = 4 << 20  # bodies received but not yet delivered: stop reading the source
LAZY_FLUSH = 0.005  # seconds a body sent with flush=False may wait for company

OnBody = Callable[[bytes], None]
OnEnd = Callable[[PhxqError], None]


@runtime_checkable
class Transport(Protocol):
    max_frame: int

    def send(self, body: bytes, *, flush: bool = True) -> None: ...

    def set_receiver(self, on_body: OnBody, on_end: OnEnd) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

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


async def receive_one(transport: Transport) -> bytes:
    """The next body of ``transport``, for a handshake (e.g. a hello) before the connection is
    handed to its real receiver: reading pauses after that body, and the next ``set_receiver``
    gets what follows, in order. Raises what ended the connection (``Unavailable``,
    ``ProtocolError``)."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_body(body: bytes) -> None:
        if not got.done():
            got.set_result(body)
            transport.pause_reading()

    def on_end(error: PhxqError) -> None:
        if not got.done():
            got.set_exception(error)

    transport.set_receiver(on_body, on_end)
    return await got


@typing.final
class Inbound:
    """The receiving half every transport shares: it keeps the ``set_receiver`` promises.

    The transport reports what its source produced: ``arrived(bodies)``, ``end(error)`` (the
    source ended; reported after the bodies before it) and ``discard(error)`` (our own close:
    undelivered bodies are dropped, the end is reported). Bodies arriving while a receiver is
    set and not paused, with nothing older waiting, are delivered at once (the transport calls
    ``arrived`` from a loop callback); the rest wait in a backlog that a scheduled pump
    delivers. ``on_change()`` is called after the backlog or the pause changed, so that the
    transport can stop reading its source while ``reading`` is False (the receiver paused, or
    more than ``READ_HIGH_WATER`` bytes wait).
    """

    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_discarded",
        "_end",
        "_on_body",
        "_on_change",
        "_on_end",
        "_paused",
        "_pump_scheduled",
    )

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._on_change = on_change
        self._on_body: OnBody | None = None
        self._on_end: OnEnd | None = None
        self._backlog: collections.deque[bytes] = collections.deque()
        self._backlog_bytes = 0
        self._paused = False
        self._end: PhxqError | None = None
        self._discarded = False
        self._pump_scheduled = False

    @property
    def reading(self) -> bool:
        return not self._paused and self._backlog_bytes <= READ_HIGH_WATER

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    def set_receiver(self, on_body: OnBody, on_end: OnEnd) -> None:
        self._on_body, self._on_end = on_body, on_end
        if self._paused:  # a new receiver starts reading
            self._paused = False
            self._changed()
        if self._backlog or self._end is not None:
            self._schedule()

    def arrived(self, bodies: list[bytes], *, soon: bool = False) -> None:
        """Bodies from the source, in order. ``soon``: never deliver from this call."""
        if self._end is not None:
            return  # nothing follows the end
        on_body = self._on_body
        if on_body is not None and not soon and not self._paused and not self._backlog:
            for i, body in enumerate(bodies):
                if self._discarded:
                    return  # the receiver closed the transport
                if self._paused:
                    self._queue(bodies[i:])
                    return
                on_body(body)
            return
        self._queue(bodies)

    def end(self, error: PhxqError) -> None:
        if self._end is None:
            self._end = error
            self._schedule()

    def discard(self, error: PhxqError) -> None:
        self._discarded = True
        self._backlog.clear()
        self._backlog_bytes = 0
        self.end(error)
        self._changed()

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._changed()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._backlog:
                self._schedule()
            self._changed()

    def _queue(self, bodies: list[bytes]) -> None:
        self._backlog.extend(bodies)
        self._backlog_bytes += sum(map(len, bodies))
        if not self._paused:
            self._schedule()
        self._changed()

    def _schedule(self) -> None:
        if not self._pump_scheduled and self._on_body is not None:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        on_body = self._on_body
        backlog = self._backlog
        if on_body is not None and backlog:
            while backlog and not self._paused and not self._discarded:
                body = backlog.popleft()
                self._backlog_bytes -= len(body)
                on_body(body)
            self._changed()
        if not backlog and self._end is not None and self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self._end)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


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
        self._inbound = Inbound(self._inbound_changed)
        self._socket_paused = False
        self._broken = False  # the peer broke the framing: never read again
        self._outbox: list[bytes] = []
        self._lazy_outbox: list[bytes] = []  # flush=False bodies: written after _outbox
        self._outbox_bytes = 0
        self._flush_scheduled = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
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
        if self._broken or self._closing:
            return
        try:
            bodies = self._decoder.feed(data)
        except ProtocolError as exc:
            self._broken = True
            self._inbound_changed()
            self._inbound.end(exc)
            return
        if bodies:
            self._inbound.arrived(bodies)

    def eof_received(self) -> bool:
        self._inbound.end(Unavailable(f"connection closed by {self._peer}"))
        # Keep our write side open: replies to requests already received still go. (TLS has
        # no half-close: there the connection closes.)
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._inbound.end(Unavailable(f"connection to {self._peer} lost{reason}"))
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

    def set_receiver(self, on_body: OnBody, on_end: OnEnd) -> None:
        self._inbound.set_receiver(on_body, on_end)

    def pause_reading(self) -> None:
        self._inbound.pause()

    def resume_reading(self) -> None:
        self._inbound.resume()

    def close(self) -> None:
        if self._closing:
            return
        self._flush()
        self._closing = True
        self._inbound.discard(Unavailable(f"connection to {self._peer} is closed"))
        self._release_drainers()
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)

    # ------------------------------------------------------------------ internals

    def _inbound_changed(self) -> None:
        """Read the socket exactly while the receiver can take more (back-pressure)."""
        transport = self._transport
        if transport is None or self._closing:
            return
        want = self._inbound.reading and not self._broken
        if want and self._socket_paused:
            self._socket_paused = False
            transport.resume_reading()
        elif not want and not self._socket_paused:
            self._socket_paused = True
            transport.pause_reading()

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
