"""``GroupLog``: one Paxos group's durable log in one directory (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from phxq.errors import BadArgument, StorageError
from phxq.plog.durable import fsync_dir
from phxq.plog.index import QueueIndex, TimeIndex
from phxq.plog.records import (
    HEADER_SIZE,
    Kind,
    encode_accept,
    encode_checkpoint,
    encode_chosen_mark,
    encode_chosen_value,
    encode_promise,
    encode_truncated,
    parse_at,
)
from phxq.plog.recovery import (
    ChosenLoc,
    RecoveredLog,
    recover,
    segment_name,
    value_of,
    write_repaired,
)
from phxq.plog.writer import LogWriter, SegmentFile

__all__ = ["ChosenRecord", "GroupLog", "IndexEntry"]

log = logging.getLogger("phxq.plog")

Ballot = tuple[int, int]
# One message's place in the queue index: (queue key, its index in the instance, enqueue time).
IndexEntry = tuple[Hashable, int, float]
TAIL_CACHE_BYTES: Final = 8 << 20
_CHECKPOINT_ROOM: Final = 4 * HEADER_SIZE + 64


@dataclass(frozen=True, slots=True)
class ChosenRecord:
    """One chosen instance as read back from the log."""

    instance: int
    value: bytes
    checksum: int


def _failed(error: StorageError) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


@final
class GroupLog:
    """The durable log of one group. Create with :meth:`open`; all methods run on the loop."""

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
        self._chosen: list[ChosenLoc] = []
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

    # ------------------------------------------------------------------------- opening

    @classmethod
    async def open(
        cls,
        directory: Path,
        group: int,
        writer: LogWriter,
        *,
        segment_bytes: int = 64 << 20,
        tail_cache_bytes: int = TAIL_CACHE_BYTES,
    ) -> GroupLog:
        """Recover the group from ``directory`` (created if missing) in a worker thread. The
        queue and time indexes start empty: the caller replays the retained chosen instances
        (:meth:`iter_chosen_blocking`) and hands back their entries (:meth:`restore_index`)."""
        if segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4096")
        self = cls()
        self.directory = Path(directory)
        self.group = group
        self._writer = writer
        self._segment_bytes = segment_bytes
        self._cache_limit = tail_cache_bytes
        r = await asyncio.to_thread(recover, self.directory)
        rec = r.recovered
        self.recovered = rec
        self.chosen_up_to, self.checksum = rec.chosen_up_to, rec.checksum
        self.first_instance = rec.first_instance
        self._floor_checksum = rec.floor_checksum
        self.damaged = list(rec.damaged)
        self._corrupt_segments = {name for name, _, _ in rec.corrupt}
        self._corrupt_regions = set(rec.corrupt) | set(rec.repaired)
        self._promised, self._max_round = rec.promised, rec.max_round
        self._chosen = r.chosen
        for info in r.segments:
            f = SegmentFile(info.path, info.number, info.size, existing=True, written_end=info.end)
            f.max_instance = info.max_instance
            f.sealed = True
            self._segments.append(f)
            self._by_number[info.number] = f
        for i, ballots in r.accepted_locs.items():
            top = max(ballots)
            self._accepted[i] = {
                b: (*loc, rec.accepted[i][1]) for b, loc in ballots.items() if b == top
            }
        if self._segments:
            self._segments[-1].sealed = False
            self._segments[-1].predecessor = self._segments[-2] if len(self._segments) > 1 else None
            if self._segments[-1].append_pos == 0:
                self._checkpoint(self._segments[-1])
        else:
            self._roll(0)
        if rec.corrupt or rec.damaged:
            log.error(
                "group %d (%s): needs repair: corrupt %s, damaged instances %s",
                group,
                self.directory,
                rec.corrupt,
                rec.damaged,
            )
        return self

    # ---------------------------------------------------------------------------- state

    @property
    def needs_repair(self) -> bool:
        """True while chosen instances must be re-learned or corrupt bytes remain on disk."""
        return bool(self.damaged or self._corrupt_segments)

    @property
    def promised(self) -> Ballot:
        """The highest ballot this log holds a promise or an accept for."""
        return self._promised

    @property
    def max_round(self) -> int:
        return self._max_round

    @property
    def has_state(self) -> bool:
        """True when this log holds anything a vote could depend on: a promise, an accept, a
        chosen instance, a truncation floor, or damage."""
        return bool(
            self._promised != (0, 0)
            or self._accepted
            or self.chosen_up_to
            or self.first_instance > 1
            or self.needs_repair
        )

    def accepted_values(self) -> dict[int, tuple[Ballot, bytes]]:
        """Per instance above ``chosen_up_to``: the highest-ballot accepted (ballot, value)."""
        out: dict[int, tuple[Ballot, bytes]] = {}
        for i, ballots in self._accepted.items():
            if i > self.chosen_up_to and ballots:
                top = max(ballots)
                out[i] = (top, ballots[top][3])
        return out

    def checksum_at(self, instance: int) -> int | None:
        """The chain checksum at ``instance`` if this log still knows it (from
        ``first_instance - 1`` to ``chosen_up_to``), else None."""
        if instance == self.first_instance - 1:
            return self._floor_checksum
        if self.first_instance <= instance <= self.chosen_up_to:
            return self._chosen[instance - self.first_instance][3]
        return None

    async def mark_repaired(self) -> None:
        """The caller re-learned every damaged chosen instance and replaced whatever acceptor
        state the corrupt bytes may have held (see ``phxq.replication.rejoin``): forget the damage.
        The corrupt regions are listed in ``<dir>/repaired`` (written atomically) so that the
        next recovery skips them without reporting the log as needing repair again."""
        regions = sorted(self._corrupt_regions)
        if regions:
            await asyncio.to_thread(write_repaired, self.directory, regions)
        self.damaged = []
        self._corrupt_segments.clear()
        log.log(
            logging.WARNING if regions else logging.INFO,
            "group %d (%s): repaired (corrupt regions %s)",
            self.group,
            self.directory,
            regions,
        )

    def disk_bytes(self) -> int:
        """Bytes allocated by the group's segment files (preallocated size)."""
        return sum(f.size for f in self._segments)

    # -------------------------------------------------------------------------- appends

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

    def append_promise(self, ballot: Ballot) -> asyncio.Future[None]:
        """Persist "promised ``ballot``"; the future resolves once it is durable."""
        error = self._check_open()
        if error is not None:
            return _failed(error)
        self._promised = max(self._promised, ballot)
        self._max_round = max(self._max_round, ballot[0])
        return self._append(encode_promise(ballot))[0]

    def append_accept(self, instance: int, ballot: Ballot, value: bytes) -> asyncio.Future[None]:
        """Persist "accepted ``value`` at ``ballot`` for ``instance``" (durable when resolved)."""
        error = self._check_open()
        if error is not None:
            return _failed(error)
        record = encode_accept(instance, ballot, value)
        future, number, offset = self._append(record)
        self._promised = max(self._promised, ballot)
        self._max_round = max(self._max_round, ballot[0])
        if instance > self.chosen_up_to:
            self._accepted.setdefault(instance, {})[ballot] = (number, offset, len(record), value)
        seg = self._by_number[number]
        seg.max_instance = max(seg.max_instance, instance)
        return future

    def append_chosen(
        self,
        instance: int,
        ballot: Ballot | None,
        checksum: int,
        value: bytes,
        *,
        index: Iterable[IndexEntry] = (),
        urgent: bool = True,
    ) -> asyncio.Future[None]:
        """Record that ``instance`` (== chosen_up_to + 1) is chosen with ``value``. Writes a small
        mark when this log holds the accept (instance, ballot) with the same value, else the
        value. ``index``: the instance's queue index entries, as the caller's state machine
        produced them when it applied the value (in index order); they are in :meth:`positions`
        when this returns. Only the record goes to disk: recovery rebuilds the index by
        replaying the values through the same apply. With ``urgent=False``
        the record costs no ``fdatasync`` of its own: it is made durable with the group's next
        urgent record (or after the writer's ``lazy_delay``), for callers that need it durable
        only eventually (a chosen instance lost in a crash is learned again from peers)."""
        error = self._check_open()
        if error is not None:
            return _failed(error)
        if instance != self.chosen_up_to + 1:
            raise ValueError(
                f"group {self.group}: chosen instance {instance} out of order "
                f"(chosen_up_to={self.chosen_up_to})"
            )
        accepted = self._accepted.pop(instance, {})
        held = accepted.get(ballot) if ballot is not None else None
        if held is not None and ballot is not None and (held[3] is value or held[3] == value):
            mark = encode_chosen_mark(instance, ballot, checksum)
            future, number, _ = self._append(mark, urgent=urgent)
            loc: ChosenLoc = (held[0], held[1], held[2], checksum)
        else:
            record = encode_chosen_value(instance, ballot or (0, 0), checksum, value)
            future, number, offset = self._append(record, urgent=urgent)
            loc = (number, offset, len(record), checksum)
        seg = self._by_number[number]
        seg.max_instance = max(seg.max_instance, instance)
        if ballot is not None:
            self._max_round = max(self._max_round, ballot[0])
        self._chosen.append(loc)
        self.chosen_up_to = instance
        self.checksum = checksum
        self._cache_put(instance, value)
        if self.damaged:
            self.damaged = [(lo, hi) for lo, hi in self.damaged if hi > instance]
            self.damaged = [(max(lo, instance + 1), hi) for lo, hi in self.damaged]
        self._index(instance, index)
        return future

    def _index(self, instance: int, entries: Iterable[IndexEntry]) -> None:
        entries = list(entries)
        if entries:
            self._queues.add(instance, entries)
            self._times.add(instance, min(t for _, _, t in entries))

    # ------------------------------------------------------------------------- recovery

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

    def restore_index(self, instance: int, entries: Iterable[IndexEntry]) -> None:
        """Recovery: the index entries of retained chosen ``instance`` (in instance order, as
        :meth:`iter_chosen_blocking` yields them; may run in that worker thread)."""
        if not self.first_instance <= instance <= self.chosen_up_to:
            raise ValueError(f"group {self.group}: instance {instance} is not retained here")
        self._index(instance, entries)

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

    # ---------------------------------------------------------------------------- reads

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

    # ------------------------------------------------------------------------ truncation

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
            f.path.unlink(missing_ok=True)
        fsync_dir(self.directory)

    async def close(self) -> None:
        """Stop accepting appends and release read handles; queued writes still complete."""
        if self._closed:
            return
        self._closed = True
        if self._segments:
            self._segments[-1].sealed = True

        def release() -> None:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()

        try:
            await self._writer.read(release)
        except StorageError:
            release()
