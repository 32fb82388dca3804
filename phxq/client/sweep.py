"""One loop timer for many due times: the per-call deadlines of enqueues and the hedges of
requests in flight, without a timer (``call_later`` + ``cancel``) per message or per request.

:class:`Sweep` keeps its entries in *lanes*, one per delay: entries of a lane are added in due
order (``due = loop.time() + delay``, and the loop's clock only grows). One timer, armed at the
earliest due time of all lanes, calls ``fire(entry, delay)`` for each entry whose token is not
done by its due time. A done entry is dropped lazily: from the front of its lane when the next
one is added, or when the timer fires; so a lane holds little more than the entries still
pending. Costs: a tuple and a deque append per entry, and one timer wakeup per first due time
of a lane (about once per ``delay`` under steady load).

A caller with many distinct delays (e.g. a remaining time computed per call) gets a timer of
its own per entry beyond ``MAX_LANES`` lanes: the same outcome, at the cost of ``call_at``.

Times are the running loop's clock (``loop.time()``), so a virtual clock in tests drives it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("phxq.client")

MAX_LANES = 16


class Token(Protocol):
    """What tells whether an entry still waits (an ``asyncio.Future`` is one)."""

    def done(self) -> bool: ...


E = TypeVar("E")


class Sweep(Generic[E]):
    """Entries ``(token, entry)`` due after a delay; ``fire(entry, delay)`` at the due time of
    each whose ``token.done()`` is still False then (see the module docstring)."""

    __slots__ = ("_at", "_fire", "_lanes", "_timer")

    def __init__(self, fire: Callable[[E, float], None]) -> None:
        self._fire = fire
        self._lanes: dict[float, deque[tuple[float, Token, E]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the timer fires

    def add(self, loop: asyncio.AbstractEventLoop, delay: float, token: Token, entry: E) -> None:
        """Call ``fire(entry, delay)`` in ``delay`` seconds unless ``token`` is done by then
        (``loop``: the running loop)."""
        due = loop.time() + delay
        lane = self._lanes.get(delay)
        if lane is None:
            if len(self._lanes) >= MAX_LANES:
                loop.call_at(due, self._one, delay, token, entry)  # rare: see the docstring
                return
            lane = self._lanes[delay] = deque()
        else:
            while lane and lane[0][1].done():
                lane.popleft()
        lane.append((due, token, entry))
        if due < self._at:
            self._arm(loop, due)

    def entries(self) -> list[E]:
        """The entries whose tokens are not done, in lane order."""
        return [e for lane in self._lanes.values() for _, token, e in lane if not token.done()]

    def close(self) -> None:
        """Forget every entry and stop the timer (nothing fires after this)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._at = math.inf
        self._lanes.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = due
        self._timer = loop.call_at(due, self._run)

    def _one(self, delay: float, token: Token, entry: E) -> None:
        if not token.done():
            self._call(entry, delay)

    def _call(self, entry: E, delay: float) -> None:
        try:
            self._fire(entry, delay)
        except Exception:  # one failing entry must not stop the others' deadlines
            log.exception("phxq.Client: a deadline callback failed")

    def _run(self) -> None:
        self._timer = None
        self._at = math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        first = math.inf
        for delay, lane in list(self._lanes.items()):
            while lane:
                due, token, entry = lane[0]
                if token.done():
                    lane.popleft()
                elif due <= now:
                    lane.popleft()
                    self._call(entry, delay)
                else:
                    break
            if lane:
                first = min(first, lane[0][0])
            else:
                del self._lanes[delay]
        if first < self._at:  # (a fire callback may have added and armed already)
            self._arm(loop, first)
