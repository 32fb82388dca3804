"""The RPC server: serves framed msgpack requests and notifications on TCP or any Transport.

Public API::

    Handler = Callable[[str, Any], Awaitable[Any]]     # (method, params) -> result
    NotifyHandler = Callable[[str, Any], None]         # sync; must not block

    server = RpcServer(handler, notify_handler=None, max_frame=MAX_FRAME_DEFAULT,
                       max_inflight=256, ssl=None, guard=None)
    await server.start(host, port)      # port 0 = ephemeral; then server.address / server.port
    server.accept(transport)            # also serve an already connected Transport (memory, faulty)
    server.connections                  # number of connections being served
    server.bad_frames                   # malformed bodies answered + connections closed for them
    await server.close()                # or: async with RpcServer(...) as server

Promises:

- Each request runs in its own task, at most ``max_inflight`` per connection (the connection
  is not read while at the limit); responses go out as they finish, possibly out of order,
  and responses finished in the same loop iteration share one write.
- A ``PhxqError`` raised by the handler reaches the caller as the same class (code, message,
  data). Any other exception is logged and reaches the caller as ``PhxqError("internal error
  ...")``, except a ``RecursionError`` (params nested too deeply to inspect), which is a
  ``BadArgument``. A result that cannot be encoded, or is larger than ``max_frame``, becomes an
  error reply. Unknown methods are the handler's business (it raises ``BadArgument``).
- Notifications are passed to ``notify_handler`` synchronously, in arrival order, on the
  reader; exceptions from it are logged and swallowed. Without a handler they are ignored.
- Bad input never takes the server down: a framed but malformed body gets an ERROR reply
  (with the request id when it can be recovered, else a nil id) and the connection goes on;
  an oversized length or broken framing gets an ERROR with a nil id, then the connection is
  closed. Every other connection is unaffected. Both count in ``bad_frames``; the warning for
  a closed connection is rate-limited (``LogLimiter``: a peer sending garbage cannot flood the
  log), a malformed body is not logged at all (the sender gets the error).
- ``LogLimiter(burst, interval)`` is exported for the daemons' own bad-input warnings.
- With ``ssl`` (an ``ssl.SSLContext``) the server speaks TLS only: a plaintext or garbage
  handshake, or one that stalls past ``TLS_HANDSHAKE_TIMEOUT``, closes that connection and
  nothing else. ``transport.peer_cert`` is the peer's verified certificate, if it sent one.
- With a ``guard`` (see ``Guard``; ``phxq.security.Guard`` is the one daemons use), each
  connection gets a session (``guard.open(transport)``) and every request is passed to
  ``guard.authorize(session, method, params)`` before the handler runs: what it raises is the
  reply and the handler never sees the request. A notification runs only when
  ``guard.admit_notify(session, method)`` is true. The ``hello`` request (``HELLO``) is the
  guard's (``guard.hello(session, params)``), never the handler's; without a guard it is
  answered ``None``, so a client that authenticates works against an open server too.
- After a client half-closes, requests already received are still answered, then the
  connection is closed. ``close()`` stops accepting, cancels in-flight handlers and closes
  every connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any, Protocol

from phxq import trace
from phxq.errors import BadArgument, MessageTooLarge, PhxqError, ProtocolError
from phxq.net.frames import (
    MAX_FRAME_DEFAULT,
    Notify,
    Request,
    decode_body,
    encode_exception,
    encode_response,
    request_id_of,
)
from phxq.net.transport import TLS_HANDSHAKE_TIMEOUT, TcpTransport, Transport, format_addr
from phxq.tasks import TaskScope

log = logging.getLogger(__name__)


class LogLimiter:
    """At most ``burst`` log records per ``interval`` seconds for one kind of bad input (a
    peer sending garbage must not be able to fill the disk with warnings); the records it
    holds back are counted and reported with the next one let through.

    ``allow() -> int | None``: ``None`` = stay silent; else log, mentioning the returned
    number of records suppressed since the last one.
    """

    __slots__ = ("_clock", "_left", "_window_end", "burst", "interval", "suppressed")

    def __init__(
        self, burst: int = 10, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._left = burst
        self._window_end = 0.0
        self.suppressed = 0

    def allow(self) -> int | None:
        now = self._clock()
        if now >= self._window_end:
            self._window_end = now + self.interval
            self._left = self.burst
        if self._left <= 0:
            self.suppressed += 1
            return None
        self._left -= 1
        held, self.suppressed = self.suppressed, 0
        return held


Handler = Callable[[str, Any], Awaitable[Any]]
NotifyHandler = Callable[[str, Any], None]
HELLO = "hello"  # the request a client authenticates a connection with (see Guard)


class Guard(Protocol):
    """Who may call what, decided per connection and per request (see the module docstring)."""

    def open(self, transport: Transport) -> Any: ...

    def hello(self, session: Any, params: Any) -> Any: ...

    def authorize(self, session: Any, method: str, params: Any) -> None: ...

    def admit_notify(self, session: Any, method: str) -> bool: ...


class RpcServer:
    def __init__(
        self,
        handler: Handler,
        *,
        notify_handler: NotifyHandler | None = None,
        max_frame: int = MAX_FRAME_DEFAULT,
        max_inflight: int = 256,
        ssl: SSLContext | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._handler = handler
        self._ssl = ssl
        self._guard = guard
        self._notify_handler = notify_handler
        self.max_frame = max_frame
        self.max_inflight = max_inflight
        self._server: asyncio.Server | None = None
        self._requests = TaskScope("rpc server", log)  # one task per request being handled
        self._transports: set[Transport] = set()
        self._closing = False
        self.address = ""
        self.port = 0
        self.bad_frames = 0  # malformed bodies answered, plus connections closed for framing
        self._bad_log = LogLimiter()

    async def __aenter__(self) -> RpcServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        return len(self._transports)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self._ssl is not None:
            tls = {"ssl": self._ssl, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT}
        self._server = await loop.create_server(
            lambda: TcpTransport(self.max_frame, on_connected=self.accept), host, port, **tls
        )
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        self.address = format_addr(str(sockname[0]), self.port)

    def accept(self, transport: Transport) -> None:
        """Serve ``transport`` until it closes: TCP connections to ``start``'s socket, or any
        already connected Transport (memory, fault-injecting)."""
        if self._closing:
            transport.close()
            return
        self._transports.add(transport)
        session = None if self._guard is None else self._guard.open(transport)
        _ServedConnection(self, transport, session).start()

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.close()
        await self._requests.aclose()  # in-flight handlers are cancelled; nothing replies now
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ connections

    def _broken_framing(self, transport: Transport, exc: ProtocolError) -> None:
        """Answer a connection whose framing broke (nil id), count it, maybe log it."""
        self.bad_frames += 1
        suppressed = self._bad_log.allow()
        if suppressed is not None:
            more = f" ({suppressed} more such warnings suppressed)" if suppressed else ""
            log.warning("rpc: closing connection from %s: %s%s", transport.peer, exc, more)
        self._reply(transport, encode_exception(None, exc))

    def _on_notify(self, frame: Notify, session: Any) -> None:
        if self._notify_handler is None:
            return
        if self._guard is not None and not self._guard.admit_notify(session, frame.method):
            return  # the guard counted (and maybe logged) it; a notify has no reply channel
        try:
            self._notify_handler(frame.method, frame.params)
        except Exception:
            log.exception("rpc: notify handler failed on %r", frame.method)

    async def _run(self, transport: Transport, request: Request, session: Any) -> None:
        try:
            guard = self._guard
            if request.method == HELLO:
                result = None if guard is None else guard.hello(session, request.params)
            else:
                if guard is not None:
                    guard.authorize(session, request.method, request.params)
                result = await self._handler(request.method, request.params)
        except PhxqError as exc:
            body = encode_exception(request.id, exc)
        except RecursionError:
            # Params nested deeper than Python can walk (msgpack decodes ~1000 levels; repr or
            # any recursive check of them overflows the stack): the caller's fault, not a bug.
            too_deep = BadArgument(f"{request.method}: params are nested too deeply")
            body = encode_exception(request.id, too_deep)
        except Exception as exc:
            log.exception("rpc: handler failed on %r", request.method)
            internal = PhxqError(f"internal error in {request.method}: {type(exc).__name__}: {exc}")
            body = encode_exception(request.id, internal)
        else:
            try:
                body = encode_response(request.id, result)
            except (TypeError, ValueError, OverflowError) as exc:
                log.error("rpc: result of %r is not msgpack-able: %s", request.method, exc)
                internal = PhxqError(f"internal error in {request.method}: unencodable result")
                body = encode_exception(request.id, internal)
            if len(body) > transport.max_frame:
                too_large = MessageTooLarge(
                    f"response to {request.method} is {len(body)} bytes, "
                    f"above the frame limit {transport.max_frame}",
                    {"size": len(body), "max": transport.max_frame},
                )
                body = encode_exception(request.id, too_large)
        self._reply(transport, body)
        if transport.buffered > (1 << 20):
            await transport.drain()

    @staticmethod
    def _reply(transport: Transport, body: bytes) -> None:
        if transport.closed:
            return
        if trace.ON:
            trace.mark("server.reply")
        try:
            transport.send(body)
        except PhxqError as exc:
            log.debug("rpc: reply to %s not sent: %s", transport.peer, exc)


class _ServedConnection:
    """One connection being served, frame by frame as the transport delivers them (no reader
    task): requests run in their own tasks, at most ``max_inflight`` (beyond that, frames wait
    in order and the transport's reading is paused), notifications in order, bad frames
    answered, broken framing answered then closed, a half-close answers what arrived."""

    __slots__ = ("backlog", "ended", "inflight", "paused", "server", "session", "transport")

    def __init__(self, server: RpcServer, transport: Transport, session: Any) -> None:
        self.server = server
        self.transport = transport
        self.session = session
        self.inflight: set[asyncio.Task[None]] = set()
        self.backlog: collections.deque[bytes] = collections.deque()  # beyond max_inflight
        self.paused = False
        self.ended = False

    def start(self) -> None:
        self.transport.set_receiver(self.on_body, self.on_end)

    def on_body(self, body: bytes) -> None:
        if self.backlog or len(self.inflight) >= self.server.max_inflight:
            # Past the limit the frame waits (a notification too, to keep the order) and the
            # transport stops delivering until a request finishes.
            self.backlog.append(body)
            if not self.paused:
                self.paused = True
                self.transport.pause_reading()
            return
        self.handle(body)

    def handle(self, body: bytes) -> None:
        server, transport = self.server, self.transport
        try:
            frame = decode_body(body)
        except ProtocolError as exc:
            server.bad_frames += 1
            server._reply(transport, encode_exception(request_id_of(body), exc))
            return
        if type(frame) is Request:
            if server._requests.closed:
                return  # the server is closing: the connection is, too
            if trace.ON:
                trace.mark("server.request")
            task = server._requests.spawn(server._run(transport, frame, self.session))
            self.inflight.add(task)
            task.add_done_callback(self.finished)
        elif type(frame) is Notify:
            server._on_notify(frame, self.session)
        else:
            error = ProtocolError(f"a server does not accept {type(frame).__name__} frames")
            server._reply(transport, encode_exception(None, error))

    def finished(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        limit = self.server.max_inflight
        while self.backlog and len(self.inflight) < limit and not self.transport.closed:
            self.handle(self.backlog.popleft())
        if self.paused and not self.backlog and len(self.inflight) < limit:
            self.paused = False
            self.transport.resume_reading()
        if self.ended and not self.inflight and not self.backlog:
            self.close()

    def on_end(self, error: PhxqError) -> None:
        self.ended = True
        if isinstance(error, ProtocolError):
            self.server._broken_framing(self.transport, error)
            self.close()
        elif not self.inflight and not self.backlog:  # closed, or half-closed and all answered
            self.close()

    def close(self) -> None:
        self.server._transports.discard(self.transport)
        self.transport.close()
