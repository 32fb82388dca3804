"""``GroupLog``: one Paxos group's durable log in one directory (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import final

from phxq.errors import StorageError
from phxq.plog.group_base import TAIL_CACHE_BYTES, Ballot, ChosenLocs, IndexEntry, log
from phxq.plog.group_reads import ChosenRecord, GroupLogReads
from phxq.plog.group_truncation import GroupLogTruncation
from phxq.plog.records import encode_accept, encode_chosen_mark, encode_chosen_value, encode_promise
from phxq.plog.recovery import ChosenLoc, recover, write_repaired
from phxq.plog.segment import SegmentFile
from phxq.plog.writer import LogWriter

__all__ = ["ChosenRecord", "GroupLog", "IndexEntry"]


def _failed(error: StorageError) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


@final
class GroupLog(GroupLogReads, GroupLogTruncation):
    """The durable log of one group. Create with :meth:`open`; all methods run on the loop.

    Its parts: :mod:`phxq.plog.group_base` (fields, low-level appends), the reads
    (:mod:`phxq.plog.group_reads`) and truncation (:mod:`phxq.plog.group_truncation`)."""

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
        self._chosen = ChosenLocs(r.chosen)
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

    # -------------------------------------------------------------------------- appends

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

    # ------------------------------------------------------------------------- recovery

    def restore_index(self, instance: int, entries: Iterable[IndexEntry]) -> None:
        """Recovery: the index entries of retained chosen ``instance`` (in instance order, as
        :meth:`iter_chosen_blocking` yields them; may run in that worker thread)."""
        if not self.first_instance <= instance <= self.chosen_up_to:
            raise ValueError(f"group {self.group}: instance {instance} is not retained here")
        self._index(instance, entries)

    # ---------------------------------------------------------------------------- reads

    # ------------------------------------------------------------------------ truncation

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
