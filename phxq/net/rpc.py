"""The RPC client pool (and a re-export of the server): calls and notifications by address.

Public API::

    pool = RpcPool(max_frame=MAX_FRAME_DEFAULT, connect_timeout=1.0, transport_factory=None,
                   notify_buffer=4 << 20)
    result = await pool.call(addr, method, params, timeout=5.0)
    pool.notify(addr, method, params)          # fire-and-forget
    pool.notify(addr, method, params, lazy=True)   # ... and not urgent (see below)
    pool.stats                                  # PoolStats(notifies_sent, notifies_dropped, connects)
    await pool.close()                          # or: async with RpcPool() as pool

    RpcServer, Handler, NotifyHandler           # re-exported from phxq.net.server

Promises:

- One connection per address, shared by every call and notify to it, reused until it fails;
  concurrent first users share one connection attempt. A lost connection is replaced on the
  next use (calls connect immediately; notifies connect in the background).
- ``call`` returns the handler's result or raises the server's ``PhxqError`` subclass. It
  raises ``Unavailable`` when it cannot connect (error or ``connect_timeout``), when no reply
  arrives within ``timeout`` (the request may still run on the server), when the connection
  dies first, or after ``close()``; ``BadArgument`` when ``params`` is not msgpack-able;
  ``MessageTooLarge`` when the request exceeds ``max_frame``. Cancelling a call is safe; a late
  reply is discarded.
- ``notify`` never blocks and never raises. Notifies issued in one loop iteration go out in one
  write. A ``lazy`` notify may wait a few milliseconds (``transport.LAZY_FLUSH``) for the next
  ordinary send to the same address and leave in its write; order is kept either way. While a connection is being made they wait in a bounded backlog; a notify is dropped
  (and counted in ``stats.notifies_dropped``) when the backlog or the connection's send buffer
  would exceed ``notify_buffer`` bytes, when it cannot be encoded, or while the address is in
  reconnect backoff after a failed connect (50 ms doubling to 1 s, reset on success).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from phxq import trace
from phxq.errors import BadArgument, Forbidden, PhxqError, Unauthenticated, Unavailable
from phxq.net.frames import (
    MAX_FRAME_DEFAULT,
    ErrorReply,
    Response,
    decode_body,
    encode_notify,
    encode_request,
)
from phxq.net.server import Handler, NotifyHandler, RpcServer
from phxq.net.transport import Transport, TransportFactory, check_size, connect_tcp
from phxq.tasks import TaskScope

__all__ = ["Handler", "NotifyHandler", "PoolStats", "RpcPool", "RpcServer"]

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


@dataclass(slots=True)
class PoolStats:
    notifies_sent: int = 0
    notifies_dropped: int = 0
    connects: int = 0


class _Connection:
    """A live transport plus the calls waiting on it; replies resolve them as they arrive."""

    __slots__ = ("addr", "pending", "transport")

    def __init__(self, addr: str, transport: Transport) -> None:
        self.addr = addr
        self.transport = transport
        self.pending: dict[int, asyncio.Future[Any]] = {}

    def fail_all(self, error: PhxqError) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)


class _Peer:
    __slots__ = ("backlog", "backlog_bytes", "backoff", "conn", "connecting", "retry_at")

    def __init__(self) -> None:
        self.conn: _Connection | None = None
        self.connecting: asyncio.Task[_Connection] | None = None
        self.backlog: list[bytes] = []
        self.backlog_bytes = 0
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN


def _expire(fut: asyncio.Future[Any], method: str, addr: str, timeout: float) -> None:
    if not fut.done():
        error = Unavailable(f"{method} to {addr} timed out after {timeout}s", {"addr": addr})
        fut.set_exception(error)


class RpcPool:
    def __init__(
        self,
        *,
        max_frame: int = MAX_FRAME_DEFAULT,
        connect_timeout: float = 1.0,
        transport_factory: TransportFactory | None = None,
        notify_buffer: int = 4 << 20,
    ) -> None:
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.notify_buffer = notify_buffer
        self._factory: TransportFactory = transport_factory or functools.partial(
            connect_tcp, max_frame=max_frame
        )
        self._peers: dict[str, _Peer] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._connects = TaskScope("rpc pool", log)  # connection attempts in progress
        self.stats = PoolStats()

    async def __aenter__(self) -> RpcPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ calls

    async def call(self, addr: str, method: str, params: Any, *, timeout: float = 5.0) -> Any:
        request_id = next(self._ids)
        try:
            body = encode_request(request_id, method, params)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadArgument(f"{method}: params are not msgpack-able: {exc}") from None
        check_size(body, self.max_frame)
        peer = self._peers.get(addr)
        conn = peer.conn if peer is not None and not self._closed else None
        if conn is None or conn.transport.closed:  # (no coroutine on the common path)
            conn = await self._connection(addr)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        conn.pending[request_id] = fut
        timer = loop.call_later(timeout, _expire, fut, method, addr, timeout)  # (error made then)
        try:
            if trace.ON:
                trace.mark("rpc.send")
            conn.transport.send(body)
            if conn.transport.buffered > (1 << 20):
                await conn.transport.drain()
            result = await fut
            if trace.ON:
                trace.mark("rpc.reply")
            return result
        finally:
            timer.cancel()
            conn.pending.pop(request_id, None)

    async def _connection(self, addr: str) -> _Connection:
        if self._closed:
            raise Unavailable("rpc pool is closed")
        peer = self._peers.get(addr)
        if peer is None:
            peer = self._peers[addr] = _Peer()
        conn = peer.conn
        if conn is not None and not conn.transport.closed:
            return conn
        if peer.connecting is None:
            peer.connecting = self._start_connect(addr, peer)
        attempt = peer.connecting
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if attempt.cancelled() and not (current and current.cancelling()):
                raise Unavailable("rpc pool is closed") from None  # close() cancelled the attempt
            raise

    def _start_connect(self, addr: str, peer: _Peer) -> asyncio.Task[_Connection]:
        task = self._connects.spawn(self._connect(addr, peer), name=f"connect {addr}", watched=True)
        # The outcome is consumed by callers (if any); mark it retrieved so that a failed
        # background connect for notifies does not log "exception never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _connect(self, addr: str, peer: _Peer) -> _Connection:
        try:
            try:
                transport = await asyncio.wait_for(self._factory(addr), self.connect_timeout)
            except (OSError, TimeoutError, PhxqError) as exc:
                peer.retry_at = time.monotonic() + peer.backoff
                peer.backoff = min(peer.backoff * 2, BACKOFF_MAX)
                self._drop_backlog(peer)
                if isinstance(exc, (Unauthenticated, Forbidden)):
                    raise  # refused credentials: a typed answer, retrying cannot help
                if isinstance(exc, ssl.SSLCertVerificationError):
                    # The server is not who the CA we trust says it is: no retry fixes that.
                    raise Unauthenticated(
                        f"TLS: cannot verify {addr}: {exc.verify_message or exc}", {"addr": addr}
                    ) from None
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
                raise Unavailable(f"cannot connect to {addr}: {reason}", {"addr": addr}) from None
            if self._closed:
                transport.close()
                raise Unavailable("rpc pool is closed")
            self.stats.connects += 1
            peer.backoff = BACKOFF_MIN
            peer.retry_at = 0.0
            conn = _Connection(addr, transport)
            peer.conn = conn
            # Replies are handled as the transport delivers them: no reader task to wake.
            transport.set_receiver(
                functools.partial(self._on_reply, conn, peer),
                functools.partial(self._on_end, conn, peer),
            )
            backlog, peer.backlog, peer.backlog_bytes = peer.backlog, [], 0
            for body in backlog:
                transport.send(body)
            self.stats.notifies_sent += len(backlog)
            return conn
        finally:
            peer.connecting = None

    def _drop_backlog(self, peer: _Peer) -> None:
        self.stats.notifies_dropped += len(peer.backlog)
        peer.backlog = []
        peer.backlog_bytes = 0

    def _on_reply(self, conn: _Connection, peer: _Peer, body: bytes) -> None:
        try:
            frame = decode_body(body)
        except PhxqError as exc:
            # The outcome of every pending call is unknown: the server may have run it.
            self._lost(conn, peer, Unavailable(f"connection to {conn.addr} lost: {exc.message}"))
            return
        rejected = self._dispatch(conn, frame)
        if rejected is not None:
            self._lost(conn, peer, rejected)

    @staticmethod
    def _dispatch(conn: _Connection, frame: Any) -> PhxqError | None:
        """Resolve the pending call a reply frame answers. Returns the error that ends the
        connection when the server rejected the connection itself."""
        if type(frame) is Response:
            fut = conn.pending.pop(frame.id, None)
            if fut is not None and not fut.done():
                fut.set_result(frame.result)
        elif type(frame) is ErrorReply:
            if frame.id is None:  # the server rejected the connection itself
                error = frame.to_exception()
                log.warning("rpc: %s rejected the connection: %s", conn.addr, error)
                return error
            fut = conn.pending.pop(frame.id, None)
            if fut is not None and not fut.done():
                fut.set_exception(frame.to_exception())
        else:
            log.debug("rpc: ignoring %s from %s", type(frame).__name__, conn.addr)
        return None

    def _on_end(self, conn: _Connection, peer: _Peer, error: PhxqError) -> None:
        if isinstance(error, Unavailable):
            error = Unavailable(f"connection to {conn.addr} closed", {"addr": conn.addr})
        else:
            error = Unavailable(f"connection to {conn.addr} lost: {error.message}")
        self._lost(conn, peer, error)

    @staticmethod
    def _lost(conn: _Connection, peer: _Peer, error: PhxqError) -> None:
        if peer.conn is conn:
            peer.conn = None
        conn.transport.close()
        conn.fail_all(error)

    # ------------------------------------------------------------------ notifications

    def notify(self, addr: str, method: str, params: Any, *, lazy: bool = False) -> None:
        if self._closed:
            return
        try:
            body = encode_notify(method, params)
            check_size(body, self.max_frame)
        except (TypeError, ValueError, OverflowError, PhxqError) as exc:
            log.error("rpc: notify %r to %s dropped: %s", method, addr, exc)
            self.stats.notifies_dropped += 1
            return
        peer = self._peers.get(addr)
        if peer is None:
            peer = self._peers[addr] = _Peer()
        conn = peer.conn
        if conn is not None and not conn.transport.closed:
            if conn.transport.buffered + len(body) > self.notify_buffer:
                self.stats.notifies_dropped += 1
                return
            conn.transport.send(body, flush=not lazy)
            self.stats.notifies_sent += 1
            return
        if peer.connecting is None:
            if time.monotonic() < peer.retry_at:
                self.stats.notifies_dropped += 1
                return
            try:
                peer.connecting = self._start_connect(addr, peer)
            except RuntimeError:  # no running loop: nowhere to connect from
                self.stats.notifies_dropped += 1
                return
        if peer.backlog_bytes + len(body) > self.notify_buffer:
            self.stats.notifies_dropped += 1
            return
        peer.backlog.append(body)
        peer.backlog_bytes += len(body)

    # ------------------------------------------------------------------ life cycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        transports: list[Transport] = []
        for peer in self._peers.values():
            self._drop_backlog(peer)
            conn = peer.conn
            if conn is not None:
                transports.append(conn.transport)
                conn.transport.close()
                conn.fail_all(Unavailable("rpc pool is closed"))
        await self._connects.aclose()  # attempts in progress are cancelled
        for transport in transports:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transport.wait_closed(), 1.0)
        self._peers.clear()
