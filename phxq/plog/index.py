"""In-memory indexes of a group's chosen log: per-queue positions and first-enqueue times.

Both are fed, in instance order, with the index entries the state machine produced when it
applied each chosen instance (``GroupLog.append_chosen(..., index=)``), and both are rebuilt at
start-up by replaying the retained log through the same apply (``GroupLog.restore_index``; see
``bench/bench_plog.py`` for the measured start-up time).

- :class:`QueueIndex` keeps, per queue key, a sorted ``array('q')`` of packed positions
  ``instance << 20 | index`` (8 bytes a message), so reading one queue is a binary search plus
  a slice: it never looks at other queues' messages.
- :class:`TimeIndex` keeps one (instance, time) pair per instance that has messages, with the
  time made non-decreasing (a running maximum), so seek-by-time is a binary search even when
  wall clocks of successive masters disagree slightly.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable
from typing import Final

__all__ = ["INDEX_BITS", "QueueIndex", "TimeIndex"]

INDEX_BITS: Final = 20
_INDEX_MASK: Final = (1 << INDEX_BITS) - 1


class QueueIndex:
    """Positions ``(instance, index)`` of every queue's messages, in order."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, array[int]] = {}

    def add(self, instance: int, entries: Iterable[tuple[Hashable, int, float]]) -> None:
        """Record the messages of one chosen instance (instances arrive in increasing order)."""
        queues = self._queues
        base = instance << INDEX_BITS
        for key, index, _ in entries:
            if not 0 <= index <= _INDEX_MASK:
                raise ValueError(f"index {index} of instance {instance} out of range")
            positions = queues.get(key)
            if positions is None:
                positions = queues[key] = array("q")
            positions.append(base | index)

    def positions(
        self, key: Hashable, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int]]:
        """Up to ``limit`` positions of ``key`` strictly after ``after`` (all if None)."""
        positions = self._queues.get(key)
        if positions is None or limit <= 0:
            return []
        start = 0 if after is None else bisect_right(positions, (after[0] << INDEX_BITS) | after[1])
        return [(p >> INDEX_BITS, p & _INDEX_MASK) for p in positions[start : start + limit]]

    def drop_below(self, instance: int) -> None:
        """Forget positions of instances below ``instance`` (after truncation)."""
        floor = instance << INDEX_BITS
        for key in list(self._queues):
            positions = self._queues[key]
            cut = bisect_left(positions, floor)
            if cut == len(positions):
                del self._queues[key]
            elif cut:
                del positions[:cut]

    def __len__(self) -> int:
        return sum(len(p) for p in self._queues.values())


class TimeIndex:
    """First enqueue time per instance, made monotonic, for seek-by-time."""

    def __init__(self) -> None:
        self._instances: array[int] = array("q")
        self._times: array[float] = array("d")

    def add(self, instance: int, first_time: float) -> None:
        if self._times and first_time < self._times[-1]:
            first_time = self._times[-1]
        self._instances.append(instance)
        self._times.append(first_time)

    def instance_at(self, t: float) -> int | None:
        """The first instance whose (monotonic) first enqueue time is >= ``t``, or None."""
        i = bisect_left(self._times, t)
        return None if i == len(self._times) else self._instances[i]

    def time_of_last_below(self, instance: int) -> float | None:
        """The latest first-enqueue time of instances below ``instance`` (None if none)."""
        i = bisect_left(self._instances, instance)
        return None if i == 0 else self._times[i - 1]

    def drop_below(self, instance: int) -> None:
        cut = bisect_left(self._instances, instance)
        if cut:
            del self._instances[:cut]
            del self._times[:cut]
