"""The read side of :class:`~phxq.plog.group.GroupLog`: chosen values (from the tail cache or
the segment files, CRC-checked, in the writer's reader thread), the queue and time indexes, and
the replay of the retained chosen instances at recovery."""

from __future__ import annotations

import mmap
import os
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

from phxq.errors import BadArgument, StorageError
from phxq.plog.group_base import GroupLogBase, log
from phxq.plog.records import Kind, parse_at
from phxq.plog.recovery import ChosenLoc, value_of

__all__ = ["ChosenRecord", "GroupLogReads"]


@dataclass(frozen=True, slots=True)
class ChosenRecord:
    """One chosen instance as read back from the log."""

    instance: int
    value: bytes
    checksum: int


class GroupLogReads(GroupLogBase):
    """Reads of a group's log (part of :class:`~phxq.plog.group.GroupLog`)."""

    def iter_chosen_blocking(self) -> Iterator[tuple[int, bytes]]:
        """``(instance, value)`` of every retained chosen instance, in order, as recovered
        (their CRCs were checked by the scan). Blocking (reads the segments): for the replay
        right after :meth:`open`, in a worker thread, before anything is appended."""
        maps: dict[int, mmap.mmap] = {}
        try:
            for i, (number, offset, length, _) in enumerate(self._chosen, self.first_instance):
                m = maps.get(number)
                if m is None:
                    with open(self._by_number[number].path, "rb") as fh:
                        m = maps[number] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                yield i, value_of(m, offset, length)
        finally:
            for m in maps.values():
                m.close()

    def _check_readable(self, instance: int) -> None:
        if instance < self.first_instance:
            raise StorageError(
                f"group {self.group}: instance {instance} is truncated "
                f"(first retained {self.first_instance})",
                {"reason": "truncated", "first_instance": self.first_instance},
            )
        for lo, hi in self.damaged:
            if lo <= instance <= hi:
                raise StorageError(
                    f"group {self.group}: instance {instance} is in a damaged range {lo}..{hi}",
                    {"reason": "damaged", "range": [lo, hi]},
                )

    async def read_value(self, instance: int) -> bytes:
        """The chosen value of ``instance``, checked against its CRC; never blocks the loop."""
        records = await self.read_chosen(instance, 1, 0)
        if not records:
            raise BadArgument(
                f"group {self.group}: instance {instance} is not chosen here yet "
                f"(chosen_up_to={self.chosen_up_to})"
            )
        return records[0].value

    async def read_chosen(
        self, from_instance: int, max_count: int, max_bytes: int
    ) -> list[ChosenRecord]:
        """Chosen instances from ``from_instance`` on, contiguous, at most ``max_count`` and about
        ``max_bytes`` (always at least one if any). StorageError for a truncated or damaged
        range, or a record that fails its CRC (the range is then marked damaged)."""
        if self._closed:
            raise StorageError(f"group {self.group}: log closed")
        self._check_readable(from_instance)
        last = min(self.chosen_up_to, from_instance + max_count - 1)
        wanted: list[tuple[int, ChosenLoc]] = []
        total = 0
        for i in range(from_instance, last + 1):
            loc = self._chosen[i - self.first_instance]
            if wanted and total + loc[2] > max_bytes:
                break
            wanted.append((i, loc))
            total += loc[2]
        cached = {i: self._cache[i] for i, _ in wanted if i in self._cache}
        to_read = [(i, loc) for i, loc in wanted if i not in cached]
        if to_read:
            paths = {loc[0]: self._by_number[loc[0]].path for _, loc in to_read}
            try:
                found = await self._writer.read(lambda: self._read_blocking(to_read, paths))
            except StorageError as exc:
                bad = exc.data.get("instance")
                if isinstance(bad, int) and not any(lo <= bad <= hi for lo, hi in self.damaged):
                    self.damaged.append((bad, bad))
                    log.error("group %d: %s", self.group, exc.message)
                raise
            cached.update(found)
        return [ChosenRecord(i, cached[i], loc[3]) for i, loc in wanted]

    def _read_blocking(
        self, wanted: list[tuple[int, ChosenLoc]], paths: dict[int, Path]
    ) -> dict[int, bytes]:
        """Reader thread: pread and CRC-check each record."""
        out: dict[int, bytes] = {}
        for instance, (number, offset, length, _) in wanted:
            try:
                fd = self._read_fds.get(number)
                if fd is None:
                    fd = self._read_fds[number] = os.open(paths[number], os.O_RDONLY)
                buf = os.pread(fd, length, offset)
            except OSError as exc:
                raise StorageError(
                    f"group {self.group}: cannot read instance {instance}: {exc}",
                    {"instance": instance},
                ) from exc
            r = parse_at(memoryview(buf), 0)
            if r is None or r.length != length or r.kind not in (Kind.ACCEPT, Kind.CHOSEN_VALUE):
                raise StorageError(
                    f"group {self.group}: record of instance {instance} failed its check "
                    f"({paths[number].name} @ {offset})",
                    {"instance": instance},
                )
            if r.instance != instance:
                raise StorageError(
                    f"group {self.group}: record at {offset} holds instance {r.instance}, "
                    f"not {instance}",
                    {"instance": instance},
                )
            out[instance] = value_of(buf, 0, length)
        return out

    def positions(
        self, queue_key: Hashable, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int]]:
        """(instance, index) of ``queue_key``'s messages strictly after ``after``, in order."""
        return self._queues.positions(queue_key, after, limit)

    def instance_at_time(self, t: float) -> int | None:
        """The first instance whose first enqueue time is >= ``t`` (None if none yet)."""
        instance = self._times.instance_at(t)
        if instance is not None and instance < self.first_instance:
            return self.first_instance
        return instance
