"""The dedup window of the store's state machine (:mod:`phxq.store.state`, rule "Dedup"): per
topic, which dedup ids were stored, with their original offset (or scheduled ref) and enqueue
time, forgotten by the entries' own ``enqueued_at`` (the highest seen), never by a local clock.
Pure and deterministic, part of the state's snapshot."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

__all__ = ["DedupWindow"]


class DedupWindow:
    """The remembered dedup ids of one group.

    Per topic, dedup_id -> offset and dedup_id -> enqueued_at of the stored original
    (``_Window``); the expiry order holds one ``(enqueued_at, topic, first_offset, dedup_ids)``
    per remembered entry (message i has offset first_offset + i), in apply order. Millions of
    ids may be remembered: keys and values are plain str, int and float, so the cyclic GC never
    tracks these dicts (a full collection used to walk every remembered id: ~0.7 s per million,
    stalling the replica)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.latest_enqueued_at = -math.inf
        self._topics: dict[str, _Window] = {}
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
        window = self._topics.get(topic)
        if window is None:
            window = self._topics[topic] = _Window()
        offsets_of, times_of = window.offsets, window.times
        horizon = self.seconds
        for i, dedup_id in enumerate(ids):
            if dedup_id is None:
                continue
            original = offsets_of.get(dedup_id)
            if original is not None and at - times_of[dedup_id] <= horizon:
                if duplicates is None:
                    duplicates = {}
                duplicates[i] = original
            else:
                offsets_of[dedup_id] = first + i
                times_of[dedup_id] = at
        self._order.append((at, topic, first, tuple(ids)))
        return duplicates

    def expire(self, enqueued_at: float) -> None:
        """Forget the ids stored more than the window before the newest ``enqueued_at`` seen."""
        if enqueued_at > self.latest_enqueued_at:
            self.latest_enqueued_at = enqueued_at
        horizon = self.latest_enqueued_at - self.seconds
        order = self._order
        while (front := order.front()) is not None and front[0] < horizon:
            _, topic, first, ids = order.popleft()
            window = self._topics.get(topic)
            if window is None:  # nothing of this topic is remembered any more
                continue
            offsets_of, times_of = window.offsets, window.times
            for i, dedup_id in enumerate(ids):
                # Not stored (None), a duplicate, or superseded by a later original: kept.
                if dedup_id is not None and offsets_of.get(dedup_id) == first + i:
                    del offsets_of[dedup_id]
                    del times_of[dedup_id]
            if not offsets_of:
                del self._topics[topic]

    def _is_original(self, topic: str, dedup_id: str, offset: int) -> bool:
        window = self._topics.get(topic)
        return window is not None and window.offsets.get(dedup_id) == offset

    def rows(self) -> list[list[Any]]:
        """``[enqueued_at, topic, dedup_id, ref]`` of every remembered original, in expiry
        order (the snapshot's form: equal windows give equal rows)."""
        return [
            [at, topic, dedup_id, first + i]
            for at, topic, first, ids in self._order
            for i, dedup_id in enumerate(ids)
            if dedup_id is not None and self._is_original(topic, dedup_id, first + i)
        ]

    def restore_row(self, at: float, topic: str, dedup_id: str, ref: int) -> None:
        """Remember one row of :meth:`rows` again (rows in their order)."""
        window = self._topics.get(topic)
        if window is None:
            window = self._topics[topic] = _Window()
        window.offsets[dedup_id] = ref
        window.times[dedup_id] = at
        self._order.append((at, topic, ref, (dedup_id,)))


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


class _Window:
    """The remembered dedup ids of one topic (see :class:`DedupWindow`)."""

    __slots__ = ("offsets", "times")

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.times: dict[str, float] = {}
