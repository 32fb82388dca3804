"""The state :class:`~phxq.plog.group.GroupLog` is made of, and the low-level appends its parts
share: rolling to a new segment, checkpoint records, the tail cache, the queue and time indexes.

``GroupLog`` is split by responsibility over a few classes on this base: the write path and
recovery (:mod:`phxq.plog.group`), the reads (:mod:`phxq.plog.group_reads`) and truncation and
retention (:mod:`phxq.plog.group_truncation`). Only ``GroupLog`` is meant to be used."""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Final

from phxq.errors import StorageError
from phxq.plog.index import QueueIndex, TimeIndex
from phxq.plog.records import HEADER_SIZE, encode_checkpoint
from phxq.plog.recovery import ChosenLoc, RecoveredLog, segment_name
from phxq.plog.segment import SegmentFile
from phxq.plog.writer import LogWriter

__all__ = ["TAIL_CACHE_BYTES", "Ballot", "ChosenLocs", "GroupLogBase", "IndexEntry"]

log = logging.getLogger("phxq.plog")

Ballot = tuple[int, int]
# One message's place in the queue index: (queue key, its index in the instance, enqueue time).
IndexEntry = tuple[Hashable, int, float]
TAIL_CACHE_BYTES: Final = 8 << 20
_CHECKPOINT_ROOM: Final = 4 * HEADER_SIZE + 64


class ChosenLocs:
    """Where each retained chosen instance is: ``(segment number, record offset, record
    length, chain checksum)`` by position (instance - first_instance), as four packed arrays:
    32 bytes an instance, where a list of tuples cost about 170 (the tuple, its list slot and
    three int objects; an instance of one message paid all of it). Indexing yields the tuple;
    ``del locs[:n]`` drops the first n."""

    __slots__ = ("_checksums", "_lengths", "_numbers", "_offsets")

    def __init__(self, locs: Iterable[ChosenLoc] = ()) -> None:
        self._numbers = array("q")
        self._offsets = array("q")
        self._lengths = array("q")
        self._checksums = array("Q")
        for loc in locs:
            self.append(loc)

    def append(self, loc: ChosenLoc) -> None:
        number, offset, length, checksum = loc
        self._numbers.append(number)
        self._offsets.append(offset)
        self._lengths.append(length)
        self._checksums.append(checksum)

    def __getitem__(self, i: int) -> ChosenLoc:
        return self._numbers[i], self._offsets[i], self._lengths[i], self._checksums[i]

    def __delitem__(self, cut: slice) -> None:
        for a in (self._numbers, self._offsets, self._lengths, self._checksums):
            del a[cut]

    def __len__(self) -> int:
        return len(self._numbers)

    def __iter__(self) -> Iterator[ChosenLoc]:
        return zip(self._numbers, self._offsets, self._lengths, self._checksums, strict=True)

    def clear(self) -> None:
        del self[:]


class GroupLogBase:
    """The fields of one group's log and the appends every part of it uses (not used alone)."""

    def __init__(self) -> None:  # use GroupLog.open()
        self.directory = Path()
        self.group = 0
        self.recovered = RecoveredLog()
        self.chosen_up_to = 0
        self.first_instance = 1
        self.checksum = 0
        self._floor_checksum = 0
        self.damaged: list[tuple[int, int]] = []
        self._writer: LogWriter
        self._segment_bytes = 64 << 20
        self._segments: list[SegmentFile] = []
        self._by_number: dict[int, SegmentFile] = {}
        self._chosen = ChosenLocs()
        self._accepted: dict[int, dict[Ballot, tuple[int, int, int, bytes]]] = {}
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = TAIL_CACHE_BYTES
        self._promised: Ballot = (0, 0)
        self._max_round = 0
        self._queues = QueueIndex()
        self._times = TimeIndex()
        self._corrupt_segments: set[str] = set()
        self._corrupt_regions: set[tuple[str, int, int]] = set()  # incl. repaired ones
        self._read_fds: dict[int, int] = {}  # reader thread only
        self._closed = False
        self.failed: StorageError | None = None

    def disk_bytes(self) -> int:
        """Bytes allocated by the group's segment files (preallocated size)."""
        return sum(f.size for f in self._segments)

    def _active(self) -> SegmentFile:
        return self._segments[-1]

    def _append(
        self, record: bytes, *, urgent: bool = True
    ) -> tuple[asyncio.Future[None], int, int]:
        """Queue ``record``; returns (durable future, segment number, offset)."""
        f = self._active()
        if not f.room(len(record)):
            f = self._roll(len(record))
        future, offset = self._writer.append(f, record, urgent=urgent)
        if f.failed is not None and self.failed is None:
            self.failed = f.failed
        return future, f.number, offset

    def _roll(self, need: int) -> SegmentFile:
        old = self._segments[-1] if self._segments else None
        number = 0 if old is None else old.number + 1
        size = max(self._segment_bytes, need + _CHECKPOINT_ROOM)
        f = SegmentFile(self.directory / segment_name(number), number, size, predecessor=old)
        if old is not None:
            old.sealed = True
            old.rolled = True
            self._writer.kick(old)  # its lazy records go before anything of the new segment
        self._segments.append(f)
        self._by_number[number] = f
        self._checkpoint(f)
        return f

    def _checkpoint(self, f: SegmentFile) -> None:
        record = encode_checkpoint(
            self.chosen_up_to,
            self.checksum,
            self._promised,
            self._max_round,
            self.first_instance,
            self._floor_checksum,
        )
        self._writer.append(f, record)

    def _check_open(self) -> StorageError | None:
        if self._closed:
            return StorageError(f"group {self.group}: log closed")
        if self.failed is None and self._segments and self._segments[-1].failed is not None:
            self.failed = self._segments[-1].failed
        return self.failed

    def _index(self, instance: int, entries: Iterable[IndexEntry]) -> None:
        entries = list(entries)
        if entries:
            self._queues.add(instance, entries)
            self._times.add(instance, min(t for _, _, t in entries))

    def _cache_put(self, instance: int, value: bytes) -> None:
        self._cache[instance] = value
        self._cache_bytes += len(value)
        while self._cache_bytes > self._cache_limit and self._cache:
            oldest = next(iter(self._cache))
            if not self._durable(oldest):
                break
            self._cache_bytes -= len(self._cache.pop(oldest))

    def _durable(self, instance: int) -> bool:
        number, offset, length, _ = self._chosen[instance - self.first_instance]
        return offset + length <= self._by_number[number].durable_end
