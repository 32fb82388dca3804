"""A fault-injecting Transport wrapper, driven by a seeded RNG and a small control object.

Public API::

    faults = Faults(seed=1)                     # one control object, shared by many transports
    pool = RpcPool(transport_factory=faults.factory(inner_factory))   # or faults.wrap(transport)

    faults.drop_rate = 0.1        # each frame (either direction) is lost with this probability
    faults.duplicate_rate = 0.1   # each outgoing NOTIFY is delivered twice (requests never are)
    faults.delay = 0.005          # outgoing frames are held this long ...
    faults.jitter = 0.002         # ... plus uniform(0, jitter); order is kept, like TCP
    faults.block_send = True      # one-way partition: frames sent by the wrapped end vanish
    faults.block_recv = True      # one-way partition: frames arriving at the wrapped end vanish
    faults.stall()                # hold every frame both ways, connections stay open
    faults.unstall()              # release held frames, in order
    faults.sever()                # close every wrapped connection now
    faults.heal()                 # clear every fault (rates, delay, partitions, stall)
    faults.stats                  # FaultStats(sent, dropped, duplicated, delayed)

Outgoing frames are judged when sent, incoming ones as they arrive (before the receiver is
handed them; a stall holds them, in order, until ``unstall``). Frames are judged whole (msgpack
bodies), so faults never corrupt framing: a dropped request simply never arrives and the
caller's timeout fires. Lazy sends (``flush=False``) keep their laziness when no fault holds
them. Every random choice comes from ``random.Random(seed)``, so a single-task test replays
exactly from its seed.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from phxq.errors import PhxqError, Unavailable
from phxq.net.frames import NOTIFY, frame_kind
from phxq.net.transport import OnBody, OnEnd, Transport, TransportFactory, check_size


@dataclass(slots=True)
class FaultStats:
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0


class Faults:
    """Fault settings shared by every :class:`FaultyTransport` made from it."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.drop_rate = 0.0
        self.duplicate_rate = 0.0
        self.delay = 0.0
        self.jitter = 0.0
        self.block_send = False
        self.block_recv = False
        self.stats = FaultStats()
        self._stalled = False
        self._transports: set[FaultyTransport] = set()

    @property
    def stalled(self) -> bool:
        return self._stalled

    def stall(self) -> None:
        self._stalled = True

    def unstall(self) -> None:
        self._stalled = False
        for transport in list(self._transports):
            transport._release()

    def sever(self) -> None:
        for transport in list(self._transports):
            transport.close()

    def heal(self) -> None:
        self.drop_rate = self.duplicate_rate = self.delay = self.jitter = 0.0
        self.block_send = self.block_recv = False
        self.unstall()

    def wrap(self, transport: Transport) -> FaultyTransport:
        return FaultyTransport(transport, self)

    def factory(self, inner: TransportFactory) -> Callable[[str], Awaitable[Transport]]:
        async def connect(addr: str) -> Transport:
            return self.wrap(await inner(addr))

        return connect

    def _lose(self) -> bool:
        if self.drop_rate > 0.0 and self.rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return True
        return False


class FaultyTransport:
    """Wraps a Transport and applies the faults of its :class:`Faults` to every frame."""

    def __init__(self, inner: Transport, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults
        self.max_frame = inner.max_frame
        # outgoing frames waiting for a stall or a delay to end, with the loop time they are due
        self._held: list[tuple[float, bytes]] = []
        self._release_at = 0.0  # outgoing frames are released in order, never earlier than this
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        # incoming: the receiver, what a stall holds back, and an end that waits behind it
        self._on_body: OnBody | None = None
        self._on_end: OnEnd | None = None
        self._held_in: collections.deque[bytes] = collections.deque()
        self._held_end: PhxqError | None = None
        self._paused = False
        self._release_in_scheduled = False
        faults._transports.add(self)

    @property
    def peer(self) -> str:
        return self.inner.peer

    @property
    def closed(self) -> bool:
        return self._closing or self.inner.closed

    @property
    def buffered(self) -> int:
        return self.inner.buffered + sum(len(body) for _, body in self._held)

    def send(self, body: bytes, *, flush: bool = True) -> None:
        if self.closed:
            raise Unavailable(f"connection to {self.peer} is closed")
        check_size(body, self.max_frame)
        faults = self.faults
        if faults.block_send or faults._lose():
            if faults.block_send:
                faults.stats.dropped += 1
            return
        copies = 1
        if (
            faults.duplicate_rate > 0.0
            and frame_kind(body) == NOTIFY
            and faults.rng.random() < faults.duplicate_rate
        ):
            faults.stats.duplicated += 1
            copies = 2
        if faults.delay > 0.0 or faults.jitter > 0.0:
            loop = asyncio.get_running_loop()
            at = loop.time() + faults.delay + faults.rng.uniform(0.0, faults.jitter)
            self._release_at = max(self._release_at, at)  # never overtake an earlier frame
            faults.stats.delayed += copies
            self._held.extend([(self._release_at, body)] * copies)
            if self._timer is None:
                self._timer = loop.call_at(self._held[0][0], self._on_timer)
            return
        if faults.stalled or self._held:
            self._held.extend([(0.0, body)] * copies)
            return
        for _ in range(copies):
            self.inner.send(body, flush=flush)
        faults.stats.sent += copies

    def _on_timer(self) -> None:
        self._timer = None
        self._release()

    def _release(self) -> None:
        """Send every held frame that is due, in order; re-arm the timer for the rest; and have
        the held incoming frames delivered."""
        self._schedule_release_in()
        if self.faults.stalled or self._timer is not None or self.closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = 0
        for at, body in self._held:
            if at > now:
                self._timer = loop.call_at(at, self._on_timer)
                break
            self.inner.send(body)
            due += 1
        del self._held[:due]
        self.faults.stats.sent += due

    # ------------------------------------------------------------------ receiving

    def set_receiver(self, on_body: OnBody, on_end: OnEnd) -> None:
        self._on_body, self._on_end = on_body, on_end
        self._paused = False
        self.inner.set_receiver(self._arrived, self._ended)
        self._schedule_release_in()

    def pause_reading(self) -> None:
        self._paused = True
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        self.inner.resume_reading()
        self._schedule_release_in()

    def _arrived(self, body: bytes) -> None:
        if self._closing:
            return
        if self.faults.stalled or self._held_in:
            self._held_in.append(body)
            return
        self._judge(body)

    def _judge(self, body: bytes) -> None:
        faults = self.faults
        if faults.block_recv:
            faults.stats.dropped += 1
        elif not faults._lose() and self._on_body is not None:
            self._on_body(body)

    def _ended(self, error: PhxqError) -> None:
        if self._held_in and not self._closing:
            self._held_end = error  # reported after the held frames
        else:
            self._report_end(error)

    def _report_end(self, error: PhxqError) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(error)

    def _schedule_release_in(self) -> None:
        if (self._held_in or self._held_end) and not self._release_in_scheduled:
            self._release_in_scheduled = True
            asyncio.get_running_loop().call_soon(self._release_in)

    def _release_in(self) -> None:
        self._release_in_scheduled = False
        held = self._held_in
        while held and not self.faults.stalled and not self._paused and not self._closing:
            self._judge(held.popleft())
        if not held and self._held_end is not None:
            error, self._held_end = self._held_end, None
            self._report_end(error)

    async def drain(self) -> None:
        await self.inner.drain()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._held.clear()
        self._held_in.clear()
        self._schedule_release_in()  # an end held behind the frames goes out now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.faults._transports.discard(self)
        self.inner.close()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()
