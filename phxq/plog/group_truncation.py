"""Truncation and retention of :class:`~phxq.plog.group.GroupLog`: where retention may cut,
dropping whole closed segments below a floor, and continuing after a peer's snapshot."""

from __future__ import annotations

import os

from phxq.plog import sidecar
from phxq.plog.durable import fsync_dir
from phxq.plog.group_base import GroupLogBase, log
from phxq.plog.records import encode_truncated
from phxq.plog.segment import SegmentFile

__all__ = ["GroupLogTruncation"]


class GroupLogTruncation(GroupLogBase):
    """Truncation of a group's log (part of :class:`~phxq.plog.group.GroupLog`)."""

    def retention_floor(
        self,
        *,
        keep_from: int,
        max_age: float | None,
        max_bytes: int | None,
        now_wall: float,
    ) -> tuple[int, bool]:
        """Where to truncate: ``(instance, forced)``.

        ``keep_from`` is the lowest instance any consumer group still needs. With no retention
        limits, everything below it may go. With limits, retention decides alone: whole closed
        segments whose newest message is older than ``max_age``, and the oldest segments while the
        group exceeds ``max_bytes``, expire (consumed data inside the limits is kept, for
        replay). ``forced`` is True when that cuts into what a consumer still needs; the caller
        logs and counts it."""
        top = self.chosen_up_to + 1
        if max_age is None and max_bytes is None:
            return min(max(keep_from, self.first_instance), top), False
        floor = self.first_instance
        sealed = self._segments[:-1]
        reach = 0
        total = self.disk_bytes()
        for f in sealed:
            reach = max(reach, f.max_instance)
            newest = self._times.time_of_last_below(reach + 1)
            expired = max_age is not None and newest is not None and newest < now_wall - max_age
            over = max_bytes is not None and total > max_bytes
            if not (expired or over):
                break
            total -= f.size
            floor = max(floor, reach + 1)
        floor = min(floor, top)
        return floor, floor > keep_from

    def truncation_point(self, instance: int) -> int:
        """The ``first_instance`` that :meth:`truncate_below` (``instance``) would leave now: the
        caller persists a snapshot of its state at that point minus one before truncating."""
        floor = min(instance, self.chosen_up_to + 1)
        top = 0
        for f in self._segments[:-1]:
            if f.max_instance >= floor or f.data or f.durable_end < f.append_pos:
                break
            top = max(top, f.max_instance)
        return max(self.first_instance, top + 1)

    async def reset_to(self, instance: int, checksum: int) -> bool:
        """Continue the log after ``instance`` (chain checksum ``checksum``), which is ahead of
        ``chosen_up_to``: every instance up to it was learned out of band (a peer's snapshot,
        which the caller persisted first). A durable TRUNCATED record makes recovery start
        there; accept records above ``instance`` are kept (they are votes). Returns False, and
        changes nothing in memory, if ``chosen_up_to`` reached ``instance`` meanwhile. The
        in-memory switch happens at once when the record is durable (no await after it), so the
        caller can switch its own state in the same step; old segments go at the next
        :meth:`truncate_below`."""
        if instance <= self.chosen_up_to:
            raise ValueError(
                f"group {self.group}: reset to {instance} is not ahead of {self.chosen_up_to}"
            )
        error = self._check_open()
        if error is not None:
            raise error
        await self._append(encode_truncated(instance + 1, checksum))[0]
        if instance <= self.chosen_up_to:
            return False  # learned that far by ordinary means while the record was written
        self.chosen_up_to = instance
        self.checksum = checksum
        self.first_instance = instance + 1
        self._floor_checksum = checksum
        self._chosen.clear()
        self._cache.clear()
        self._cache_bytes = 0
        self._queues.drop_below(instance + 1)
        self._times.drop_below(instance + 1)
        for i in [i for i in self._accepted if i <= instance]:
            del self._accepted[i]
        self.damaged = [(max(lo, instance + 1), hi) for lo, hi in self.damaged if hi > instance]
        log.warning(
            "group %d: log reset to continue after instance %d (snapshot from a peer)",
            self.group,
            instance,
        )
        return True

    async def truncate_below(self, instance: int) -> int:
        """Delete whole closed segments that hold nothing at or above ``instance`` (clamped to
        chosen_up_to + 1). A TRUNCATED record is made durable first. Returns the new
        ``first_instance``."""
        floor = min(instance, self.chosen_up_to + 1)
        doomed: list[SegmentFile] = []
        for f in self._segments[:-1]:
            if f.max_instance >= floor or f.data or f.durable_end < f.append_pos:
                break
            doomed.append(f)
        if not doomed:
            return self.first_instance
        if max(f.max_instance for f in doomed) < self.first_instance:
            await self._drop_segments(doomed)  # left over by reset_to: already below the floor
            return self.first_instance
        new_first = max(self.first_instance, max(f.max_instance for f in doomed) + 1)
        error = self._check_open()
        if error is not None:
            raise error
        floor_checksum = self._chosen[new_first - 1 - self.first_instance][3]
        await self._append(encode_truncated(new_first, floor_checksum))[0]
        drop = new_first - self.first_instance
        self._floor_checksum = floor_checksum
        del self._chosen[:drop]
        self.first_instance = new_first
        for i in [i for i in self._cache if i < new_first]:
            self._cache_bytes -= len(self._cache.pop(i))
        self._queues.drop_below(new_first)
        self._times.drop_below(new_first)
        await self._drop_segments(doomed)
        log.info(
            "group %d: truncated %d segments; first retained instance %d",
            self.group,
            len(doomed),
            new_first,
        )
        return new_first

    async def _drop_segments(self, doomed: list[SegmentFile]) -> None:
        """Forget and delete the oldest segments ``doomed`` (a prefix of the closed ones)."""
        del self._segments[: len(doomed)]
        for f in doomed:
            del self._by_number[f.number]
            self._corrupt_segments.discard(f.path.name)
            self._corrupt_regions = {r for r in self._corrupt_regions if r[0] != f.path.name}
        self._segments[0].predecessor = None
        await self._writer.read(lambda: self._delete_blocking(doomed))

    def _delete_blocking(self, doomed: list[SegmentFile]) -> None:
        for f in doomed:
            fd = self._read_fds.pop(f.number, None)
            if fd is not None:
                os.close(fd)
            sidecar.delete(f.path)  # a table whose segment is gone would be dropped at start
            f.path.unlink(missing_ok=True)
        fsync_dir(self.directory)
