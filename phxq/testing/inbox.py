"""``Inbox``: ``await inbox.recv()`` over a transport's push delivery, for tests.

Public API::

    inbox = Inbox(transport)          # becomes the transport's receiver (set_receiver)
    body = await inbox.recv()         # the next body, in order
    inbox.paused                      # True while more than ``high_water`` bytes wait

``recv`` returns every body that arrived before the connection ended, then raises what ended it:
``Unavailable`` (the peer closed, the connection was lost, or the transport was closed) or
``ProtocolError`` (the peer broke the framing). Bodies nobody takes pause the transport's
reading once more than ``high_water`` bytes wait (so the sender's ``drain`` waits too) and
resume it below half of that.
"""

from __future__ import annotations

import asyncio
import collections

from phxq.errors import PhxqError, Unavailable
from phxq.net.transport import READ_HIGH_WATER, Transport


class Inbox:
    def __init__(self, transport: Transport, *, high_water: int = READ_HIGH_WATER) -> None:
        self.transport = transport
        self.high_water = high_water
        self.paused = False
        self._bodies: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._end: PhxqError | None = None
        self._waiter: asyncio.Future[None] | None = None
        transport.set_receiver(self._on_body, self._on_end)

    async def recv(self) -> bytes:
        while not self._bodies:
            if self._end is not None:
                raise self._end
            if self.transport.closed:
                raise Unavailable(f"connection to {self.transport.peer} is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        body = self._bodies.popleft()
        self._bytes -= len(body)
        if self.paused and self._bytes < self.high_water // 2:
            self.paused = False
            self.transport.resume_reading()
        return body

    def _on_body(self, body: bytes) -> None:
        self._bodies.append(body)
        self._bytes += len(body)
        if not self.paused and self._bytes > self.high_water:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _on_end(self, error: PhxqError) -> None:
        self._end = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
