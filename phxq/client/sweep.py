"""One loop timer for many due times: the per-call deadlines of enqueues (:class:`Sweep`)
and the hedges of requests in flight (:class:`InFlight`), without a timer (``call_later`` +
``cancel``) per message or per request.

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
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("phxq.client")

MAX_LANES = 16


class Token(Protocol):
    """What tells whether an entry still waits (an ``asyncio.Future`` is one)."""

    def done(self) -> bool: ...


E = TypeVar("E")


class _OneTimer:
    """One loop timer, armed at the earliest due time its subclass knows (``at``); the
    subclass's ``_run`` starts with :meth:`_fired`."""

    __slots__ = ("_timer", "at")

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self.at = math.inf  # when the timer fires

    def arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Make the timer fire by ``when`` (``loop``: the running loop)."""
        if when < self.at:
            if self._timer is not None:
                self._timer.cancel()
            self.at = when
            self._timer = loop.call_at(when, self._run)

    def close(self) -> None:
        """Stop the timer (nothing fires after this)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.at = math.inf

    def _fired(self) -> tuple[asyncio.AbstractEventLoop, float]:
        """The timer fired: no timer is armed now. Returns the loop and its time."""
        self._timer = None
        self.at = math.inf
        loop = asyncio.get_running_loop()
        return loop, loop.time()

    def _run(self) -> None:
        raise NotImplementedError


class Sweep(_OneTimer, Generic[E]):
    """Entries ``(token, entry)`` due after a delay; ``fire(entry, delay)`` at the due time of
    each whose ``token.done()`` is still False then (see the module docstring).

    A hot path may add to an existing lane itself: ``lane = sweep.lanes.get(delay)``; drop its
    done front entries, append ``(due, token, entry)`` with ``due = loop.time() + delay``, then
    ``arm(loop, due)`` if ``due < sweep.at`` (what :meth:`add` does)."""

    __slots__ = ("_fire", "lanes")

    def __init__(self, fire: Callable[[E, float], None]) -> None:
        super().__init__()
        self._fire = fire
        self.lanes: dict[float, deque[tuple[float, Token, E]]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, delay: float, token: Token, entry: E) -> None:
        """Call ``fire(entry, delay)`` in ``delay`` seconds unless ``token`` is done by then
        (``loop``: the running loop)."""
        due = loop.time() + delay
        lane = self.lanes.get(delay)
        if lane is None:
            if len(self.lanes) >= MAX_LANES:
                loop.call_at(due, self._one, delay, token, entry)  # rare: see the docstring
                return
            lane = self.lanes[delay] = deque()
        else:
            while lane and lane[0][1].done():
                lane.popleft()
        lane.append((due, token, entry))
        if due < self.at:
            self.arm(loop, due)

    def entries(self) -> list[E]:
        """The entries whose tokens are not done, in lane order."""
        return [e for lane in self.lanes.values() for _, token, e in lane if not token.done()]

    def close(self) -> None:
        """Forget every entry and stop the timer (nothing fires after this)."""
        super().close()
        self.lanes.clear()

    def _one(self, delay: float, token: Token, entry: E) -> None:
        if not token.done():
            self._call(entry, delay)

    def _call(self, entry: E, delay: float) -> None:
        try:
            self._fire(entry, delay)
        except Exception:  # one failing entry must not stop the others' deadlines
            log.exception("phxq.Client: a deadline callback failed")

    def _run(self) -> None:
        loop, now = self._fired()
        first = math.inf
        for delay, lane in list(self.lanes.items()):
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
                del self.lanes[delay]
        if first < self.at:  # (a fire callback may have added and armed already)
            self.arm(loop, first)


Hedge = tuple[float, Any]  # (due time, what ``on_due`` needs to watch the request)


class InFlight(_OneTimer):
    """Requests in flight by task (a task has at most one at a time) with their hedge due
    times, for the client's failover watch: one loop timer, armed at the earliest due time,
    calls ``on_due(task, info)`` for each request still unanswered then. A request registers
    with a dict store (``due[task] = (loop.time() + delay, info)``, then :meth:`arm`) and
    leaves with a dict delete: no object, timer or call of its own on the common path.
    ``watches`` holds the watch each due request got (``on_due`` puts it there; cancel it when
    the request ends); ``moved`` the tasks a watch cancelled to end their request; ``checks``
    the latest liveness check of each store a long poll waits on, by address (its start time
    and task: ``phxq.client.hedge``)."""

    __slots__ = ("_on_due", "checks", "due", "moved", "watches")

    def __init__(self, on_due: Callable[[asyncio.Task[Any], Any], None]) -> None:
        super().__init__()
        self._on_due = on_due
        self.due: dict[asyncio.Task[Any], Hedge] = {}
        self.watches: dict[asyncio.Task[Any], asyncio.Task[None]] = {}
        self.moved: set[asyncio.Task[Any]] = set()
        self.checks: dict[str, tuple[float, asyncio.Task[Any]]] = {}

    def ended(self, task: asyncio.Task[Any]) -> None:
        """``task``'s request ended while it had a watch (or was moved): stop the watch."""
        self.moved.discard(task)
        watch = self.watches.pop(task, None)
        if watch is not None:
            watch.cancel()

    def _run(self) -> None:
        loop, now = self._fired()
        first = math.inf
        for task, (due, info) in list(self.due.items()):
            if task in self.watches:
                continue
            if due <= now:
                try:
                    self._on_due(task, info)
                except Exception:  # one failing watch must not stop the others' hedges
                    log.exception("phxq.Client: starting a failover watch failed")
            elif due < first:
                first = due
        if first < math.inf:
            self.arm(loop, first)
