"""A lean HTTP/1.1 keep-alive load generator for the gateway benchmark (plain http only).

Why not aiohttp's client: on the 2-core benchmark machine the load generator shares the CPU
with the system under test, and aiohttp's client costs about as much CPU per request as the
gateway itself (about 140 us against 190 us per enqueue, measured with /proc user+sys), so a
run measured the Python HTTP client as much as the gateway. Real gateway callers are curl, a
browser or another language's HTTP stack on other machines. This one writes a prepared request
and parses only the status line and Content-Length of the answer (the gateway always sends
one), one connection per outstanding request, reused (keep-alive).

    pool = RawPool("http://127.0.0.1:7301")
    status, body = await pool.request(b"POST", "/v1/topics/t/messages", body, {"Phxq-Key": k})
    pool.close()
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._answer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionError("the gateway closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(str(self.lost)))

    def _answer(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(ConnectionError("an answer without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            return
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        waiter.set_result((int(head[9:12]), body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.lost is not None or self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class RawPool:
    """Keep-alive connections to one plain-http gateway, opened as concurrency needs them."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"RawPool speaks plain http only, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = f"Host: {parts.netloc}\r\n"
        self.idle: list[_Connection] = []
        self.all: list[_Connection] = []

    async def request(
        self, method: bytes, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """``(status, body)`` of one request."""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = (
            f"{method.decode()} {path} HTTP/1.1\r\n{self.host_header}{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        conn = self.idle.pop() if self.idle else await self._open()
        try:
            answer = await conn.request(data)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        self.idle.append(conn)
        return answer

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self.all.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.all:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()
        self.all.clear()
