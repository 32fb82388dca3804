"""Start-up recovery of one group directory (runs in a worker thread, never on the loop).

:func:`recover` reads every segment (``mmap``, zero-copy), checks every record's CRC, and
rebuilds the acceptor state and the locations of chosen values. A sealed segment (all but the
last) whose record table (:mod:`phxq.plog.sidecar`) is intact and still matches its bytes (one
CRC32C over the segment) is read from that table instead of record by record; the result is the
same, and any mismatch falls back to the full parse below. It does not interpret values:
the replication runtime replays the retained chosen values through its state machine afterwards
(``GroupLog.iter_chosen_blocking``) and hands back each instance's index entries
(``GroupLog.restore_index``).

How a bad record is classified (see ``writer``: every batch header starts a write whose
predecessors were all synced):

- nothing but zeros after it in its segment, and nothing after it in later segments: the clean
  end of the log;
- garbage after it, but **no valid batch header** anywhere after it: a torn tail (the last,
  unsynced batch, possibly written out of order by page writeback). It is zeroed out (logged)
  and later segments, which can then only hold parts of that same unsynced batch, are deleted;
- a valid batch header after it: the bad bytes had been synced, so this is corruption in the
  middle of the log. It is never skipped silently: the region is reported in
  :attr:`RecoveredLog.corrupt`, the log is ``needs_repair``, and ``chosen_up_to`` stops before
  the first chosen instance that may be missing; instances from there to the next surviving
  chosen one are reported in :attr:`RecoveredLog.damaged` and are not served until they are
  learned again (ordinary catch-up; ``append_chosen`` rewrites them).

A corrupt region listed in ``<group dir>/repaired`` (:func:`write_repaired`, written by
``GroupLog.mark_repaired`` once the replica re-learned what it held from its peers, see
``phxq.replication.rejoin``) is skipped the same way but reported in :attr:`RecoveredLog.repaired`
instead: it is not damage any more. Any other bad region still is.

A corrupted *last* batch whose bytes had been synced is indistinguishable from a torn write and
is truncated like one; the replica then relies on its peers for that batch (the same as losing a
disk).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from phxq.plog import sidecar
from phxq.plog.durable import fsync_dir, replace_durably
from phxq.plog.records import BATCH_RECORD, HEADER_SIZE, Kind, Record, parse_at

__all__ = [
    "REPAIRED_FILE",
    "ChosenLoc",
    "RecoveredLog",
    "Recovery",
    "SegmentInfo",
    "build_table",
    "read_repaired",
    "recover",
    "segment_name",
    "write_repaired",
]

log = logging.getLogger("phxq.plog")

Ballot = tuple[int, int]
ChosenLoc = tuple[int, int, int, int]  # (segment number, record offset, record length, checksum)

REPAIRED_FILE = "repaired"
_SEGMENT = re.compile(r"^(\d{10})\.plog$")
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
_WITH_CHECKSUM = frozenset((Kind.CHOSEN, Kind.CHOSEN_VALUE, Kind.TRUNCATED))
_ACCEPT, _CHOSEN, _CHOSEN_VALUE = int(Kind.ACCEPT), int(Kind.CHOSEN), int(Kind.CHOSEN_VALUE)
_PROMISE, _CHECKPOINT, _TRUNCATED = int(Kind.PROMISE), int(Kind.CHECKPOINT), int(Kind.TRUNCATED)
_NONE: dict[Ballot, tuple[int, int, int]] = {}


def segment_name(number: int) -> str:
    return f"{number:010d}.plog"


@dataclass(slots=True)
class RecoveredLog:
    """What a restarted replica must know (the Paxos core's ``RecoveredState`` plus damage).

    ``accepted`` holds, for instances above ``chosen_up_to``, the highest-ballot accepted value.
    ``promised`` is the highest ballot this replica promised *or accepted* (accepting b implies
    promising b). ``damaged`` are inclusive instance ranges that must be re-learned before they
    are served; ``corrupt`` lists (segment file, start offset, end offset) of bad bytes found in
    the middle of the log."""

    promised: Ballot = (0, 0)
    max_round: int = 0
    accepted: dict[int, tuple[Ballot, bytes]] = field(default_factory=dict)
    chosen_up_to: int = 0
    checksum: int = 0
    first_instance: int = 1
    damaged: list[tuple[int, int]] = field(default_factory=list)
    corrupt: list[tuple[str, int, int]] = field(default_factory=list)
    torn_bytes: int = 0
    floor_checksum: int = 0  # chain checksum of first_instance - 1
    repaired: list[tuple[str, int, int]] = field(default_factory=list)  # skipped, see below


@dataclass(slots=True)
class SegmentInfo:
    number: int
    path: Path
    size: int
    end: int  # append position: just after the last valid record
    max_instance: int = 0


@dataclass(slots=True)
class Recovery:
    """Everything :class:`GroupLog` needs to resume: the public summary plus internal state."""

    recovered: RecoveredLog
    segments: list[SegmentInfo]
    chosen: list[ChosenLoc]  # locations of first_instance .. chosen_up_to
    accepted_locs: dict[int, dict[Ballot, tuple[int, int, int]]]  # above chosen_up_to


def _nonzero_end(buf: mmap.mmap | bytes, start: int) -> int:
    """End of the last non-zero byte at or after ``start`` (``start`` if all zeros).

    Scans backwards in 1 MiB chunks; an all-zero chunk (the preallocated tail of a segment, the
    common case) is recognised by one ``memcmp`` against a zero buffer (~25 ms per 64 MiB
    segment here, against ~300 ms for ``rstrip`` on every chunk)."""
    end = len(buf)
    while end > start:
        lo = max(start, end - _CHUNK)
        chunk = buf[lo:end]
        if len(chunk) == _CHUNK and chunk == _ZEROS:
            end = lo
            continue
        stripped = chunk.rstrip(b"\0")
        if stripped:
            return lo + len(stripped)
        end = lo
    return start


def read_repaired(directory: Path) -> set[tuple[str, int, int]]:
    """The corrupt regions ``(segment file, start, end)`` recorded as repaired (empty if none).
    An unreadable file counts as none: the regions are then reported corrupt again (safe)."""
    try:
        raw = json.loads((directory / REPAIRED_FILE).read_text())
        return {(str(n), int(a), int(b)) for n, a, b in raw}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, TypeError) as exc:
        log.error("plog %s: ignoring unreadable %s: %s", directory, REPAIRED_FILE, exc)
        return set()


def write_repaired(directory: Path, regions: Iterable[tuple[str, int, int]]) -> None:
    """Record ``regions`` as repaired: temporary file, fdatasync, rename, fsync of the dir."""
    replace_durably(directory / REPAIRED_FILE, json.dumps(sorted(regions)).encode())


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in directory.iterdir():
        m = _SEGMENT.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry))
    return sorted(found)


def _map(path: Path) -> mmap.mmap | None:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return None
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def _has_header(buf: mmap.mmap | None, start: int) -> int:
    """Offset of the next valid batch header at or after ``start``, or -1."""
    if buf is None:
        return -1
    at = buf.find(BATCH_RECORD, start)
    return at


def recover(directory: Path) -> Recovery:
    """Scan ``directory`` (created if missing) and rebuild the group's state. Blocking."""
    directory.mkdir(parents=True, exist_ok=True)
    files = _list_segments(directory)
    sidecar.drop_orphans(directory, (p for _, p in files))
    maps = [_map(p) for _, p in files]
    try:
        return _scan(directory, files, maps)
    finally:
        for m in maps:
            if m is not None:
                m.close()


def _scan(
    directory: Path,
    files: list[tuple[int, Path]],
    maps: list[mmap.mmap | None],
) -> Recovery:
    rec = RecoveredLog()
    repaired = read_repaired(directory)
    segments: list[SegmentInfo] = []
    chosen: dict[int, ChosenLoc] = {}
    accepts: dict[int, dict[Ballot, tuple[int, int, int]]] = {}
    base: tuple[int, int] | None = None  # (chosen_up_to, checksum) from the first checkpoint
    floor, floor_checksum = 1, 0
    max_instance_seen = 0
    promised = (0, 0)
    max_round = 0
    mark_missing: list[int] = []
    stop_at: int | None = None
    parsed_any = False

    tables: list[tuple[Path, bytes]] = []  # record tables to write for sealed segments
    last = len(files) - 1
    for pos_in_list, ((number, path), buf) in enumerate(zip(files, maps, strict=True)):
        size = 0 if buf is None else len(buf)
        info = SegmentInfo(number, path, size, 0)
        segments.append(info)
        if buf is None:
            continue
        table = sidecar.load(path, number, buf) if pos_in_list < last else None
        if table is not None and _nonzero_end(buf, table.end) == table.end:
            rows, cps, info.end = table.rows, table.checkpoints, table.end
        else:
            rows, cps = [], []
            clean = True
            view = memoryview(buf)
            try:
                pos = 0
                while pos < size:
                    r = parse_at(view, pos)
                    if r is None:
                        garbage_end = _nonzero_end(buf, pos)
                        if garbage_end <= pos:
                            break  # clean end of this segment
                        clean = False
                        nxt = _has_header(buf, pos + 1)
                        later = any(_has_header(m, 0) >= 0 for m in maps[pos_in_list + 1 :])
                        if nxt < 0 and not later:
                            _truncate_tail(path, pos, garbage_end)
                            rec.torn_bytes += garbage_end - pos
                            stop_at = pos_in_list
                            break
                        bad_end = nxt if nxt >= 0 else garbage_end
                        if (path.name, pos, bad_end) in repaired:
                            rec.repaired.append((path.name, pos, bad_end))
                            pos = nxt if nxt >= 0 else size
                            if nxt < 0:
                                break
                            continue
                        rec.corrupt.append((path.name, pos, bad_end))
                        log.error(
                            "plog %s: corrupt bytes %d..%d in %s (synced data followed by "
                            "valid batches): needs repair",
                            directory,
                            pos,
                            bad_end,
                            path.name,
                        )
                        if nxt < 0:
                            pos = size
                            break
                        pos = nxt
                        continue
                    rows.append(_row(r, cps))
                    pos += r.length
                info.end = pos
                if clean and pos_in_list < last:
                    crc = sidecar.segment_crc(view, pos)
                    tables.append((path, sidecar.encode(number, size, pos, crc, rows, cps)))
            finally:
                view.release()
        parsed_any = parsed_any or bool(rows)
        # The hot loop of a start-up (one pass per record of the log): plain comparisons
        # instead of max(), kinds bound to locals.
        top = info.max_instance
        for kind, inst, rnd, node, offset, length, aux in rows:
            if kind == _ACCEPT:
                ballot = (rnd, node)
                held = accepts.get(inst)
                if held is None:
                    accepts[inst] = {ballot: (number, offset, length)}
                else:
                    held[ballot] = (number, offset, length)
                if ballot > promised:
                    promised = ballot
                if rnd > max_round:
                    max_round = rnd
                if inst > top:
                    top = inst
            elif kind in (_CHOSEN, _CHOSEN_VALUE):
                if rnd > max_round:
                    max_round = rnd
                if inst > top:
                    top = inst
                if inst not in chosen:
                    if kind == _CHOSEN_VALUE:
                        chosen[inst] = (number, offset, length, aux)
                    else:
                        loc = accepts.get(inst, _NONE).get((rnd, node))
                        if loc is None:
                            mark_missing.append(inst)
                        else:
                            chosen[inst] = (loc[0], loc[1], loc[2], aux)
            elif kind == _PROMISE:
                promised = max(promised, (rnd, node))
                max_round = max(max_round, rnd)
            elif kind == _CHECKPOINT:
                checksum, cp_round, cp_first, cp_floor_sum = cps[aux]
                promised = max(promised, (rnd, node))
                max_round = max(max_round, cp_round, rnd)
                if cp_first > floor:
                    floor, floor_checksum = cp_first, cp_floor_sum
                if base is None:
                    base = (inst, checksum)
            elif kind == _TRUNCATED and inst > floor:
                floor, floor_checksum = inst, aux
        info.max_instance = top
        max_instance_seen = max(max_instance_seen, top)
        if stop_at is not None:
            break

    for path, data in tables:
        sidecar.store(path, data)
    if stop_at is not None:
        for _, path in files[stop_at + 1 :]:
            log.warning("plog %s: deleting %s (part of the torn last batch)", directory, path)
            sidecar.delete(path)
            path.unlink()
        fsync_dir(directory)

    if base is None:
        if parsed_any or rec.corrupt:
            rec.corrupt.append((segments[0].path.name, 0, 0))
        lowest = min(chosen, default=floor)
        base = (max(floor, lowest) - 1, 0)
    c, checksum = base
    if floor - 1 > c:  # everything below a durable truncation floor was chosen
        c, checksum = floor - 1, floor_checksum
    while c + 1 in chosen:
        c += 1
        checksum = chosen[c][3]
    first = max(floor, 1)
    if first > c + 1:  # cannot happen unless the log was tampered with; never serve a hole
        rec.corrupt.append(("<truncation floor above chosen>", first, c + 1))
        first = c + 1
    rec.chosen_up_to, rec.checksum, rec.first_instance = c, checksum, first
    if first - 1 == floor - 1:
        rec.floor_checksum = floor_checksum
    elif first - 1 in chosen:
        rec.floor_checksum = chosen[first - 1][3]
    elif first - 1 == base[0]:
        rec.floor_checksum = base[1]
    rec.promised, rec.max_round = promised, max_round

    above = [i for i in chosen if i > c]
    missing_marks = [i for i in mark_missing if i >= first and i not in chosen]
    if rec.corrupt or above or missing_marks:
        lo = c + 1
        hi = min(above) - 1 if above else max(lo, max_instance_seen)
        if hi >= lo:
            rec.damaged.append((lo, hi))

    accepted_locs = {i: b for i, b in accepts.items() if i > c}
    by_number = {number: m for (number, _), m in zip(files, maps, strict=False)}
    for i, ballots in accepted_locs.items():
        ballot = max(ballots)
        number, off, length = ballots[ballot]
        m = by_number[number]
        assert m is not None
        rec.accepted[i] = (ballot, value_of(m, off, length))

    locs = [chosen[i] for i in range(first, c + 1)]
    return Recovery(rec, segments, locs, accepted_locs)


def _row(r: Record, cps: list[tuple[int, int, int, int]]) -> sidecar.Row:
    """A parsed record as a table row (a CHECKPOINT's payload goes to ``cps``)."""
    aux = 0
    if r.kind == Kind.CHECKPOINT:
        aux = len(cps)
        cps.append(r.checkpoint())
    elif r.kind in _WITH_CHECKSUM:
        aux = r.checksum
    return (r.kind, r.instance, r.ballot[0], r.ballot[1], r.offset, r.length, aux)


def build_table(path: Path, number: int) -> None:
    """Blocking: write the record table of segment ``path`` (sealed, written and synced whole:
    nothing is appended to it any more) if it parses cleanly to the end; else write none (the
    next start parses it and reports what it finds). Missing file: nothing to do (truncated)."""
    try:
        buf = _map(path)
    except FileNotFoundError:
        return
    if buf is None:
        return
    try:
        rows: list[sidecar.Row] = []
        cps: list[tuple[int, int, int, int]] = []
        view = memoryview(buf)
        try:
            pos = 0
            while (r := parse_at(view, pos)) is not None:
                rows.append(_row(r, cps))
                pos += r.length
            if _nonzero_end(buf, pos) != pos:
                log.warning("plog: not indexing %s: bad bytes at %d", path, pos)
                return
            table = sidecar.encode(number, len(buf), pos, sidecar.segment_crc(view, pos), rows, cps)
        finally:
            view.release()
    finally:
        buf.close()
    sidecar.store(path, table)


def value_of(buf: mmap.mmap | bytes, offset: int, length: int) -> bytes:
    """The value bytes of an ACCEPT or CHOSEN_VALUE record already checked at ``offset``."""
    extra = 8 if buf[offset + 8] == Kind.CHOSEN_VALUE else 0
    return bytes(buf[offset + HEADER_SIZE + extra : offset + length])


def _truncate_tail(path: Path, start: int, end: int) -> None:
    log.warning(
        "plog: torn tail in %s: zeroing %d bytes at %d (never-synced last batch)",
        path,
        end - start,
        start,
    )
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(end - start), start)
        os.fdatasync(fd)
    finally:
        os.close(fd)
