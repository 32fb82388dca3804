"""The dedup window of the store's state machine (:mod:`phxq.store.state`, rule "Dedup"): per
topic, which dedup ids were stored, with their original offset (or scheduled ref) and enqueue
time, forgotten by the entries' own ``enqueued_at`` (the highest seen), never by a local clock.
Pure and deterministic, part of the state's snapshot."""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

__all__ = ["DedupWindow"]


class DedupWindow:
    """The remembered dedup ids of one group.

    Per topic one dict, dedup_id -> the expiry-order entry that stored it; the expiry order
    holds one ``(enqueued_at, topic, first_ref, dedup_ids)`` per remembered entry (message i
    has ref first_ref + i), in apply order. An id's ref and enqueue time are read from its
    entry, so a remembered id costs its str and one dict slot: no int, float or tuple of its
    own (184 B an id in session 6 with an offset dict and a time dict; see ``bench/memory.py``).
    Entries are tuples of str, float and int, which the cyclic GC untracks, so a full
    collection never walks the remembered ids one object each."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.latest_enqueued_at = -math.inf
        self._topics: dict[str, dict[str, _OrderEntry]] = {}
        self._order = _Order()

    def remember(
        self, topic: str, at: float, first: int, ids: Sequence[str | None]
    ) -> dict[int, int] | None:
        """Remember the new dedup ids of an entry of ``topic`` enqueued ``at``, whose message i
        has ref ``first + i`` (an offset, or a scheduled ref): position in the entry -> original
        ref of each duplicate (None: none). With a window of 0, remembers nothing."""
        if self.seconds <= 0:
            return None
        duplicates: dict[int, int] | None = None
        # Interned: the entry outlives the decoded message, one topic str for all its entries.
        topic = sys.intern(topic)
        window = self._topics.get(topic)
        if window is None:
            window = self._topics[topic] = {}
        entry: _OrderEntry = (at, topic, first, tuple(ids))
        horizon = self.seconds
        positions: dict[int, dict[str, int]] = {}  # id(entry) -> its ids' first positions
        for i, dedup_id in enumerate(entry[3]):
            if dedup_id is None:
                continue
            original = window.get(dedup_id)
            if original is not None and at - original[0] <= horizon:
                if duplicates is None:
                    duplicates = {}
                duplicates[i] = original[2] + _position(positions, original, dedup_id)
            else:
                window[dedup_id] = entry
        self._order.append(entry)
        return duplicates

    def expire(self, enqueued_at: float) -> None:
        """Forget the ids stored more than the window before the newest ``enqueued_at`` seen."""
        if enqueued_at > self.latest_enqueued_at:
            self.latest_enqueued_at = enqueued_at
        horizon = self.latest_enqueued_at - self.seconds
        order = self._order
        while (front := order.front()) is not None and front[0] < horizon:
            entry = order.popleft()
            window = self._topics.get(entry[1])
            if window is None:  # nothing of this topic is remembered any more
                continue
            for dedup_id in entry[3]:
                # Not stored (None), a duplicate, or superseded by a later original: kept.
                if dedup_id is not None and window.get(dedup_id) is entry:
                    del window[dedup_id]
            if not window:
                del self._topics[entry[1]]

    def rows(self) -> list[list[Any]]:
        """``[enqueued_at, topic, dedup_id, ref]`` of every remembered original, in expiry
        order (the snapshot's form: equal windows give equal rows)."""
        out: list[list[Any]] = []
        for entry in self._order:
            at, topic, first, ids = entry
            window = self._topics.get(topic)
            if window is None:
                continue
            if len(ids) == 1:  # the common entry of one message: no set to build
                if ids[0] is not None and window.get(ids[0]) is entry:
                    out.append([at, topic, ids[0], first])
                continue
            seen: set[str] = set()  # an id twice in one entry: its first place is the original
            for i, dedup_id in enumerate(ids):
                if dedup_id is not None and window.get(dedup_id) is entry and dedup_id not in seen:
                    seen.add(dedup_id)
                    out.append([at, topic, dedup_id, first + i])
        return out

    def restore_row(self, at: float, topic: str, dedup_id: str, ref: int) -> None:
        """Remember one row of :meth:`rows` again (rows in their order)."""
        topic = sys.intern(topic)
        window = self._topics.get(topic)
        if window is None:
            window = self._topics[topic] = {}
        entry: _OrderEntry = (at, topic, ref, (dedup_id,))
        window[dedup_id] = entry
        self._order.append(entry)


def _position(cache: dict[int, dict[str, int]], entry: _OrderEntry, dedup_id: str) -> int:
    """The first place of ``dedup_id`` in ``entry`` (each entry's ids are scanned once per
    :meth:`DedupWindow.remember` call, so a retried batch of n ids costs O(n), not O(n^2))."""
    places = cache.get(id(entry))
    if places is None:
        places = cache[id(entry)] = {}
        for i, x in enumerate(entry[3]):
            if x is not None:
                places.setdefault(x, i)
    return places[dedup_id]


_OrderEntry: TypeAlias = tuple[float, str, int, tuple[str | None, ...]]


class _Order:
    """The dedup window's expiry order: one ``(enqueued_at, topic, first_offset, dedup_ids)``
    per applied entry, a FIFO. Entries are kept in sealed chunks of ``CHUNK`` (tuples of
    tuples of atoms, which the cyclic GC untracks), so a collection walks a few thousand
    chunks, not a million entries; only the open tail chunk is a tracked deque."""

    __slots__ = ("_chunks", "_head", "_tail")
    CHUNK = 1024

    def __init__(self) -> None:
        self._chunks: deque[tuple[_OrderEntry, ...]] = deque()
        self._head = 0  # entries of _chunks[0] already popped
        self._tail: deque[_OrderEntry] = deque()

    def append(self, entry: _OrderEntry) -> None:
        tail = self._tail
        tail.append(entry)
        if len(tail) >= self.CHUNK:
            self._chunks.append(tuple(tail))
            tail.clear()

    def front(self) -> _OrderEntry | None:
        if self._chunks:
            return self._chunks[0][self._head]
        return self._tail[0] if self._tail else None

    def popleft(self) -> _OrderEntry:
        chunks = self._chunks
        if not chunks:
            return self._tail.popleft()
        chunk = chunks[0]
        entry = chunk[self._head]
        self._head += 1
        if self._head == len(chunk):
            chunks.popleft()
            self._head = 0
        return entry

    def __iter__(self) -> Iterator[_OrderEntry]:
        for n, chunk in enumerate(self._chunks):
            yield from chunk[self._head :] if n == 0 else chunk
        yield from self._tail
