"""The delivery window of one pair: fetched messages in offset order, which of them may be
handed to the handler now, and how far the cursor may advance. Pure (no I/O, no clock).

Public API::

    DeliveryWindow(ordering="strict" | "per_key", concurrency=1, capacity=256)
    .add(items)                     # (offset, key) in increasing offset order, after last_added
    .next_ready() -> int | None     # an offset that may be delivered now (marks it in flight)
    .finish(offset)                 # the message is done: acked or dead-lettered
    .advance() -> int | None        # highest offset whose every predecessor in the window is
                                    # done; drops them (None: the front is not done)
    .room, .in_flight, .pending, .last_added, len(window)
    .advanced                       # messages dropped by advance() so far (never reset)
    .clear()                        # forget everything (after a replay or a loss)

Ordering rules:

- ``strict``: one message at a time, in offset order (``concurrency`` must be 1).
- ``per_key``: up to ``concurrency`` messages in flight; a message may start only when no
  *earlier* message of the window with the same key is still pending or in flight, so each key
  is delivered in offset order. A message without a key has no ordering relation to any other
  (it is its own key).

The cursor only ever moves over a contiguous prefix of finished messages (:meth:`advance`), so
a crash redelivers at most the window, never skips a message. The window is bounded by
``capacity``, which also bounds how far per-key delivery runs ahead of the cursor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from enum import Enum

from phxq.errors import BadArgument


class Slot(Enum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"


_STRICT_KEY = ("strict",)  # one shared key: everything is ordered after everything


class DeliveryWindow:
    """See the module docstring."""

    def __init__(self, ordering: str = "strict", concurrency: int = 1, capacity: int = 256) -> None:
        if ordering not in ("strict", "per_key"):
            raise BadArgument(f"ordering must be 'strict' or 'per_key', got {ordering!r}")
        if concurrency < 1 or (ordering == "strict" and concurrency != 1):
            raise BadArgument(f"concurrency {concurrency} is invalid for ordering {ordering!r}")
        if capacity < concurrency:
            raise BadArgument(f"capacity {capacity} is below concurrency {concurrency}")
        self.ordering = ordering
        self.concurrency = concurrency
        self.capacity = capacity
        self._slots: OrderedDict[int, list[object]] = OrderedDict()  # offset -> [key, Slot]
        self.in_flight = 0
        self.last_added: int | None = None
        self.advanced = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def room(self) -> int:
        return self.capacity - len(self._slots)

    @property
    def pending(self) -> int:
        return sum(1 for _, state in self._slots.values() if state is Slot.PENDING)

    def _key(self, offset: int, key: str | None) -> object:
        if self.ordering == "strict":
            return _STRICT_KEY
        return ("key", key) if key is not None else ("offset", offset)

    def add(self, items: Iterable[tuple[int, str | None]]) -> None:
        for offset, key in items:
            if self.last_added is not None and offset <= self.last_added:
                raise BadArgument(f"offset {offset} is not after {self.last_added}")
            if len(self._slots) >= self.capacity:
                raise BadArgument(f"the window is full ({self.capacity})")
            self._slots[offset] = [self._key(offset, key), Slot.PENDING]
            self.last_added = offset

    def next_ready(self) -> int | None:
        if self.in_flight >= self.concurrency:
            return None
        blocked: set[object] = set()
        for offset, slot in self._slots.items():
            key, state = slot
            if state is Slot.DONE:
                continue
            if state is Slot.PENDING and key not in blocked:
                slot[1] = Slot.IN_FLIGHT
                self.in_flight += 1
                return offset
            blocked.add(key)
            if self.ordering == "strict":
                return None
        return None

    def finish(self, offset: int) -> None:
        slot = self._slots.get(offset)
        if slot is None or slot[1] is not Slot.IN_FLIGHT:
            state = None if slot is None else slot[1]
            raise BadArgument(f"offset {offset} is not in flight (state {state})")
        slot[1] = Slot.DONE
        self.in_flight -= 1

    def advance(self) -> int | None:
        last = None
        while self._slots:
            offset, (_, state) = next(iter(self._slots.items()))
            if state is not Slot.DONE:
                break
            self._slots.popitem(last=False)
            self.advanced += 1
            last = offset
        return last

    def clear(self) -> None:
        self._slots.clear()
        self.in_flight = 0
        self.last_added = None
