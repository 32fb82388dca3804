"""A TCP fault proxy: put it between two daemons and break the network on command.

Public API::

    proxy = FaultProxy("127.0.0.1:0", "127.0.0.1:7101", seed=1)
    await proxy.start()                # or: async with FaultProxy(...) as proxy
    proxy.address                      # "127.0.0.1:PORT": give this to the client instead
    proxy.partition("both")            # or "to_target" / "to_client": a one-way partition
    proxy.stall()                      # same as partition("both")
    proxy.heal()                       # end partitions and stalls; held bytes flow again
    proxy.set_latency(0.002, jitter=0.001)   # per chunk, each direction; order is kept
    proxy.drop_connections()           # reset every open connection (RST)
    proxy.refuse = True                # new connections are accepted and closed at once
    proxy.connections                  # connections currently open
    await proxy.close()

Semantics, chosen to look like a real network to TCP endpoints:

- A partitioned direction stops carrying bytes; they are *held*, never discarded (discarding
  would corrupt a byte stream, which TCP never does). With bounded buffers the proxy stops
  reading the sender, so memory stays bounded and the sender sees backpressure. New
  connections during a partition are accepted but carry nothing in the blocked direction.
  To model a partition that outlives TCP timeouts, call ``drop_connections()`` as well.
- Latency applies to each chunk read in a direction: due time = now + latency +
  uniform(0, jitter), never earlier than the previous chunk's (order is kept). Random choices
  come from ``random.Random(seed)``.
- When one side closes or fails, the other side is closed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Literal

from phxq.errors import BadArgument
from phxq.net.transport import format_addr, parse_addr

log = logging.getLogger(__name__)

Direction = Literal["both", "to_target", "to_client"]
CHUNK = 64 << 10
QUEUE_CHUNKS = 64  # held chunks per direction before the proxy stops reading the sender


class _Pipe:
    """One proxied connection: two directions, each a reader task and a writer task."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.writers: list[asyncio.StreamWriter] = [client]
        self.tasks: set[asyncio.Task[None]] = set()

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    def __init__(self, listen: str, target: str, *, seed: int = 0) -> None:
        self.listen = listen
        self.target = target
        self.rng = random.Random(seed)
        self.latency = 0.0
        self.jitter = 0.0
        self.refuse = False
        self._open = {"to_target": asyncio.Event(), "to_client": asyncio.Event()}
        for event in self._open.values():
            event.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.address = ""
        self.port = 0

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        return len(self._pipes)

    async def start(self) -> None:
        host, port = parse_addr(self.listen)
        self._server = await asyncio.start_server(self._on_client, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        self.address = format_addr(str(sockname[0]), self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ control

    def partition(self, direction: Direction = "both") -> None:
        for name in self._directions(direction):
            self._open[name].clear()

    def stall(self) -> None:
        self.partition("both")

    def heal(self) -> None:
        for event in self._open.values():
            event.set()

    def set_latency(self, latency: float, jitter: float = 0.0) -> None:
        if latency < 0 or jitter < 0:
            raise BadArgument("latency and jitter must be >= 0")
        self.latency = latency
        self.jitter = jitter

    def drop_connections(self) -> None:
        for pipe in list(self._pipes):
            pipe.abort()

    @staticmethod
    def _directions(direction: Direction) -> tuple[str, ...]:
        if direction == "both":
            return ("to_target", "to_client")
        if direction in ("to_target", "to_client"):
            return (direction,)
        raise BadArgument(f"bad direction {direction!r}: both, to_target or to_client")

    # ------------------------------------------------------------------ plumbing

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        pipe = _Pipe(self, writer)
        self._pipes.add(pipe)
        try:
            if self.refuse:
                return
            host, port = parse_addr(self.target)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                log.info("proxy %s: cannot reach %s: %s", self.address, self.target, exc)
                return
            pipe.writers.append(up_writer)
            async with asyncio.TaskGroup() as tg:
                for src, dst, name in (
                    (reader, up_writer, "to_target"),
                    (up_reader, writer, "to_client"),
                ):
                    queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_CHUNKS)
                    pipe.tasks.add(tg.create_task(self._pump_in(src, queue)))
                    pipe.tasks.add(tg.create_task(self._pump_out(queue, dst, name)))
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pipes.discard(pipe)
            for w in pipe.writers:
                w.close()
            self._handlers.discard(task)

    async def _pump_in(self, src: asyncio.StreamReader, queue: asyncio.Queue[bytes | None]) -> None:
        while True:
            chunk = await src.read(CHUNK)
            await queue.put(chunk or None)
            if not chunk:
                return

    async def _pump_out(
        self, queue: asyncio.Queue[bytes | None], dst: asyncio.StreamWriter, name: str
    ) -> None:
        loop = asyncio.get_running_loop()
        due = 0.0
        gate = self._open[name]
        while True:
            chunk = await queue.get()
            if self.latency or self.jitter:
                due = max(due, loop.time() + self.latency + self.rng.uniform(0.0, self.jitter))
                await asyncio.sleep(max(0.0, due - loop.time()))
            await gate.wait()
            if chunk is None:  # the source closed: pass the half-close on, then stop
                with contextlib.suppress(OSError):
                    if dst.can_write_eof():
                        dst.write_eof()
                return
            dst.write(chunk)
            await dst.drain()
