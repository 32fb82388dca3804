"""The process's journal: one write-ahead file for the records of every group, so that a writer
batch touching G groups costs one ``fdatasync`` instead of G.

**Why (a departure from DESIGN.md §4's "one fdatasync per touched segment file").** Every group
has its own segment files, and the writer used to ``fdatasync`` each file a batch touched. With
16 groups under load that was ~2,000 ``fdatasync`` calls a second on the machine's one disk, and
the stores spent a third of their CPU in the kernel. Now the writer ``pwrite``\\ s each group's
records into its segment file as before (the segment files stay the storage and the format
recovery reads: nothing else changes), then writes *one* journal record holding a copy of every
byte of the batch — (segment path, offset, bytes) per file — and ``fdatasync``\\ s only the
journal. The segment files are synced later, in the background (a *checkpoint*), and on start
every journal record not known to be checkpointed is written again into its segment file
(*redo*) before any group is recovered. A batch is durable once its journal record is.

**Files.** Two preallocated, zero-filled files ``journal-0.pxj`` and ``journal-1.pxj`` in the
data directory, used alternately. Generation ``g`` (a counter that only grows, also across
restarts) lives in file ``g % 2``: a header at offset 0 (magic, ``g``, ``checkpointed``, CRC)
and then records (magic, ``g``, body length, CRC over generation, length and body; the body is
``(path length, offset, data length, path, data)`` per segment file). Reading a file stops at
the first record that is torn, corrupt or of another generation (older records of the file's
previous use follow the newest ones).

**Rotation and checkpoints.** When a record does not fit the rest of the current file the
writer thread moves to generation ``g + 1`` in the other file, which holds ``g - 1``: it first
waits for the background checkpoint of ``g - 1`` (started at the previous rotation, so normally
long finished), starts the checkpoint of ``g`` (``fdatasync`` of every segment file written in
``g``, on a thread of its own), and writes the new header, ``checkpointed = g - 1``, durably.
So a header says which older generations may be ignored: redo replays generation ``g - 1`` (the
other file, if its header says so and it is above ``checkpointed``) and then ``g``.

**Why redo is safe.** Segment files are only ever appended to by the writer (recovery zeroes a
torn tail, which no valid journal record covers: a record is valid only if it was synced, and
then its bytes are redone first). So a replayed record writes bytes identical to the ones it
recorded, or restores them where the kernel lost unsynced pages. A record for a file that no
longer exists (deleted by truncation; segment numbers are never reused) is skipped.

**Failures.** A journal write or sync that fails disables the journal for the life of the
process: the batch and every segment file with journaled but unsynced data are ``fdatasync``\\ ed
directly (the old path), and the journal is never written again, so what it holds is replayed
at the next start. A failed checkpoint ``fdatasync`` fails that segment file (as a failed sync
always did) and disables the journal the same way. A record too big for an empty journal file,
and every batch while the journal is disabled, takes the direct path. A writer started without
a journal (``journal_bytes`` 0, or a node with one group) still redoes a journal an earlier run
left, then deletes it (:func:`retire`): turning the journal off never drops an acked record.

Blocking code, run by the writer thread (and the start-up redo in a worker thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

from phxq.errors import StorageError
from phxq.plog.durable import fsync_dir

if TYPE_CHECKING:
    from phxq.plog.segment import SegmentFile

__all__ = ["JOURNAL_FILES", "Journal", "ReplayStats", "journaled_ranges", "replay", "retire"]

log = logging.getLogger("phxq.plog")

JOURNAL_FILES: Final = ("journal-0.pxj", "journal-1.pxj")
_HEADER: Final = struct.Struct("<4sQQI")  # magic, generation, checkpointed, crc
_RECORD: Final = struct.Struct("<4sQII")  # magic, generation, body length, crc
_ENTRY: Final = struct.Struct("<HQI")  # path length, offset, data length
_HEADER_MAGIC: Final = b"PXJH"
_RECORD_MAGIC: Final = b"PXJR"
_GEN_LEN: Final = struct.Struct("<QI")
_ZERO_CHUNK: Final = 1 << 20
_IOV_MAX: Final = 1000
ROTATE_BYTES: Final = 1 << 20


@dataclass(slots=True)
class ReplayStats:
    """What the start-up redo did."""

    generation: int = 0  # highest generation found (0: no journal)
    records: int = 0
    entries: int = 0
    bytes: int = 0
    files: int = 0
    missing: int = 0  # entries skipped because their segment file no longer exists


def _header(generation: int, checkpointed: int) -> bytes:
    body = struct.pack("<4sQQ", _HEADER_MAGIC, generation, checkpointed)
    return body + struct.pack("<I", zlib.crc32(body))


def _read_header(fd: int) -> tuple[int, int] | None:
    raw = os.pread(fd, _HEADER.size, 0)
    if len(raw) < _HEADER.size:
        return None
    magic, generation, checkpointed, crc = _HEADER.unpack(raw)
    if magic != _HEADER_MAGIC or zlib.crc32(raw[: _HEADER.size - 4]) != crc or generation == 0:
        return None
    return generation, checkpointed


def _records(buf: bytes, generation: int) -> Iterable[list[tuple[str, int, memoryview]]]:
    """The valid records of ``generation`` in a journal file's bytes, in order."""
    view = memoryview(buf)
    pos = _HEADER.size
    while pos + _RECORD.size <= len(buf):
        magic, gen, length, crc = _RECORD.unpack_from(buf, pos)
        end = pos + _RECORD.size + length
        if magic != _RECORD_MAGIC or gen != generation or end > len(buf):
            return
        body = view[pos + _RECORD.size : end]
        if zlib.crc32(body, zlib.crc32(_GEN_LEN.pack(gen, length))) != crc:
            return
        yield _entries(body)
        pos = end


def _entries(body: memoryview) -> list[tuple[str, int, memoryview]]:
    out = []
    at = 0
    while at < len(body):
        plen, offset, dlen = _ENTRY.unpack_from(body, at)
        at += _ENTRY.size
        name = bytes(body[at : at + plen]).decode()
        at += plen
        out.append((name, offset, body[at : at + dlen]))
        at += dlen
    if at != len(body):
        raise StorageError("journal: a record's entries overrun its body (checksum collision?)")
    return out


def _safe_path(base: Path, name: str) -> Path:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise StorageError(f"journal: bad segment path {name!r} in a valid record")
    return base / rel


def _replayable(base: Path) -> tuple[int, list[tuple[int, Path]]]:
    """The highest generation found in ``base`` (0: no journal) and the (generation, file) pairs
    a redo must replay, oldest first."""
    headers: list[tuple[int, int, Path]] = []
    for name in JOURNAL_FILES:
        path = base / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            found = _read_header(fd)
        finally:
            os.close(fd)
        if found is not None:
            headers.append((found[0], found[1], path))
    if not headers:
        return 0, []
    headers.sort()
    newest_gen, checkpointed, _ = headers[-1]
    return newest_gen, [(g, p) for g, _, p in headers if g > checkpointed]


def journaled_ranges(base: Path) -> list[tuple[Path, int, int]]:
    """Blocking: (segment file, offset, length) of every byte a redo in ``base`` would write —
    the segment bytes that may never have been synced (the fault suite zeroes them to stand in
    for a power loss)."""
    out = []
    for generation, path in _replayable(base)[1]:
        for entries in _records(path.read_bytes(), generation):
            out += [(_safe_path(base, name), offset, len(data)) for name, offset, data in entries]
    return out


def replay(base: Path, fsync: Callable[[int], None] = os.fdatasync) -> ReplayStats:
    """Blocking: redo every journal record in ``base`` not known to be checkpointed into its
    segment file, then ``fdatasync`` those files. ``StorageError`` if a file cannot be read or
    written (never start on a log whose acknowledged tail may be missing)."""
    stats = ReplayStats()
    stats.generation, to_replay = _replayable(base)
    fds: dict[Path, int] = {}
    try:
        for generation, path in to_replay:
            buf = path.read_bytes()
            for entries in _records(buf, generation):
                stats.records += 1
                for name, offset, data in entries:
                    target = _safe_path(base, name)
                    if target not in fds:
                        try:
                            fds[target] = os.open(target, os.O_RDWR)
                        except FileNotFoundError:
                            stats.missing += 1
                            continue
                    fd = fds[target]
                    view = data
                    at = offset
                    while view:
                        n = os.pwrite(fd, view, at)
                        view, at = view[n:], at + n
                    stats.entries += 1
                    stats.bytes += len(data)
        for fd in fds.values():
            fsync(fd)
        stats.files = len(fds)
    except OSError as exc:
        raise StorageError(f"journal redo in {base} failed: {exc}", {"errno": exc.errno}) from exc
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
    if stats.records:
        log.info(
            "plog journal: redid %d records (%d entries, %d bytes) into %d segment files "
            "(%d entries for deleted segments skipped)",
            stats.records,
            stats.entries,
            stats.bytes,
            stats.files,
            stats.missing,
        )
    return stats


def retire(base: Path, fsync: Callable[[int], None] = os.fdatasync) -> ReplayStats:
    """Blocking: for a writer that runs without a journal (``journal_bytes`` 0, or one group):
    redo whatever journal an earlier run left in ``base``, then delete its files durably, so
    turning the journal off never drops an acknowledged record and old records are not redone
    at every start."""
    stats = replay(base, fsync)
    present = [base / name for name in JOURNAL_FILES if (base / name).exists()]
    for path in present:
        path.unlink()
    if present:
        fsync_dir(base)
        log.info("plog journal: retired %s (journal off)", ", ".join(p.name for p in present))
    return stats


class Journal:
    """The writer thread's side of the journal (see the module docstring).

    ``write(files)`` journals one batch; ``usable`` turns False for good after a failure.
    ``checkpointed`` is the highest generation whose segment files are all synced: a sealed
    segment file may be closed once its ``journal_gen`` is at most that."""

    def __init__(
        self,
        base: Path,
        size: int,
        *,
        fsync: Callable[[int], None],
        on_sync: Callable[[float, int], None],
    ) -> None:
        if size < 64 << 10:
            raise ValueError("the journal needs at least 64 KiB per file")
        self.base = base
        self.size = size
        # Rotate (and so checkpoint) after this many bytes even if the file has room: the
        # background fdatasync of what a generation wrote then stays small, and never holds
        # the disk long enough to delay the journal's own syncs.
        self.rotate_at = min(size, ROTATE_BYTES)
        self._fsync = fsync
        self._on_sync = on_sync  # (seconds, count) of fdatasyncs done
        self.generation = 0
        self.checkpointed = 0
        self.pos = 0
        self.failed: str | None = None
        self.redo = ReplayStats()
        self.rotations = 0
        self._fds: list[int | None] = [None, None]
        self._dirty: set[SegmentFile] = set()  # written in the current generation
        self._checkpoint: Future[list[SegmentFile]] | None = None  # of generation - 1
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="plog-checkpoint")

    @property
    def usable(self) -> bool:
        return self.failed is None

    # ------------------------------------------------------------------------ start and end

    def open(self) -> None:
        """Blocking: redo (raises StorageError), then start a fresh generation. If the journal
        cannot be created (no space), it stays disabled and the writer syncs segment files."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.redo = replay(self.base, self._fsync)
        self.generation = self.redo.generation
        try:
            self._fd(0)  # both files now: creating one later would stall the writer
            self._fd(1)
            self._start_generation(self.generation + 1, checkpointed=self.generation)
        except OSError as exc:
            self._disable(f"cannot create the journal: {exc}")

    def close(self) -> None:
        """Blocking, after the last batch: sync every segment file with journaled data and
        start a generation that has nothing to replay; then release the files."""
        try:
            if self.failed is None and not self.checkpoint_all():
                self._start_generation(self.generation + 1, checkpointed=self.generation)
        except (OSError, StorageError) as exc:
            log.error("plog journal: final checkpoint failed (kept for redo): %s", exc)
        finally:
            self._pool.shutdown(wait=True)
            for fd in self._fds:
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fds = [None, None]

    def _fd(self, index: int) -> int:
        fd = self._fds[index]
        if fd is not None:
            return fd
        path = self.base / JOURNAL_FILES[index]
        try:
            fd = os.open(path, os.O_RDWR)
            if os.fstat(fd).st_size < self.size:
                self._zero_fill(fd)
        except FileNotFoundError:
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                self._zero_fill(fd)
                os.replace(tmp, path)
                fsync_dir(self.base)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        self._fds[index] = fd
        return fd

    def _zero_fill(self, fd: int) -> None:
        """Written zeros, not a hole or fallocated extents: an ``fdatasync`` after overwriting
        them has no extent change to journal (see the writer's note on preallocation)."""
        zeros = bytes(_ZERO_CHUNK)
        at = 0
        while at < self.size:
            n = min(_ZERO_CHUNK, self.size - at)
            os.pwrite(fd, memoryview(zeros)[:n], at)
            at += n
        self._fsync(fd)

    def _start_generation(self, generation: int, *, checkpointed: int) -> None:
        fd = self._fd(generation % 2)
        os.pwrite(fd, _header(generation, checkpointed), 0)
        self._fsync(fd)
        self.generation = generation
        self.checkpointed = max(self.checkpointed, checkpointed)
        self.pos = _HEADER.size

    # --------------------------------------------------------------------------- batches

    def write(self, batch: Sequence[tuple[SegmentFile, int, bytes]]) -> bool:
        """Journal one batch — (file, offset, bytes written there) — durably. False when the
        batch must be synced directly instead (journal disabled or the batch too big)."""
        if self.failed is not None:
            return False
        parts: list[bytes] = []
        length = 0
        for f, offset, data in batch:
            name = f.journal_name
            if name is None:
                try:
                    name = f.journal_name = f.path.relative_to(self.base).as_posix().encode()
                except ValueError:
                    return False  # not under the data directory: sync it directly
            parts += (_ENTRY.pack(len(name), offset, len(data)), name, data)
            length += _ENTRY.size + len(name) + len(data)
        if _HEADER.size + _RECORD.size + length > self.size:
            return False
        try:
            if self.pos + _RECORD.size + length > self.size or self.pos >= self.rotate_at:
                self._rotate()
                if self.failed is not None:
                    return False
            crc = _GEN_LEN.pack(self.generation, length)
            crc_value = zlib.crc32(crc)
            for p in parts:
                crc_value = zlib.crc32(p, crc_value)
            head = struct.pack("<4sQII", _RECORD_MAGIC, self.generation, length, crc_value)
            fd = self._fd(self.generation % 2)
            self._pwritev(fd, [head, *parts], self.pos, _RECORD.size + length)
            self._sync(fd)
        except OSError as exc:
            self._disable(f"journal write failed: {exc}")
            return False
        self.pos += _RECORD.size + length
        for f, _, _ in batch:
            f.journal_gen = self.generation
            self._dirty.add(f)
        return True

    def _pwritev(self, fd: int, parts: list[bytes], offset: int, total: int) -> None:
        if len(parts) > _IOV_MAX:
            parts = [b"".join(parts)]
        n = os.pwritev(fd, parts, offset)
        if n < total:  # short write (rare on a regular file): write the rest in one piece
            rest = memoryview(b"".join(parts))[n:]
            at = offset + n
            while rest:
                k = os.pwrite(fd, rest, at)
                if k <= 0:
                    raise OSError(f"pwrite returned {k}")
                rest, at = rest[k:], at + k

    def _sync(self, fd: int) -> None:
        start = time.perf_counter()
        self._fsync(fd)
        self._on_sync(time.perf_counter() - start, 1)

    def _rotate(self) -> None:
        """Move to the next generation (the other file). See the module docstring."""
        if self._checkpoint is not None:
            self._finish_checkpoint(self._checkpoint.result())
            self._checkpoint = None
            if self.failed is not None:
                return
        dirty, self._dirty = self._dirty, set()
        old = self.generation
        self._checkpoint = self._pool.submit(self._sync_files, dirty)
        self._start_generation(old + 1, checkpointed=old - 1)
        self.rotations += 1

    def poll(self) -> None:
        """Writer thread, every pass: note a finished background checkpoint."""
        cp = self._checkpoint
        if cp is not None and cp.done():
            self._checkpoint = None
            self._finish_checkpoint(cp.result())
            if self.failed is None:
                self.checkpointed = max(self.checkpointed, self.generation - 1)

    def _finish_checkpoint(self, failed: list[SegmentFile]) -> None:
        if failed:
            names = ", ".join(str(f.path) for f in failed[:4])
            self._disable(f"checkpoint fdatasync failed on {names}")

    def _sync_files(self, files: Iterable[SegmentFile]) -> list[SegmentFile]:
        """Checkpoint thread: fdatasync each file; returns the ones that failed (they get
        ``failed`` set, so nothing more is written to them)."""
        failed = []
        for f in files:
            fd = f.fd
            if fd is None or f.failed is not None:
                if f.failed is not None:
                    failed.append(f)
                continue
            start = time.perf_counter()
            try:
                self._fsync(fd)
            except OSError as exc:
                f.failed = StorageError(
                    f"fdatasync failed on {f.path}: {exc}",
                    {"path": str(f.path), "errno": exc.errno},
                )
                log.error("plog: checkpoint %s; no further writes to this segment", exc)
                failed.append(f)
                continue
            self._on_sync(time.perf_counter() - start, 1)
        return failed

    def checkpoint_all(self) -> list[SegmentFile]:
        """Blocking: wait for the running checkpoint, then sync every file with journaled data
        (the current generation's). Returns the files that failed."""
        failed: list[SegmentFile] = []
        if self._checkpoint is not None:
            failed += self._checkpoint.result()
            self._checkpoint = None
        failed += self._sync_files(self._dirty)
        self._dirty.clear()
        if not failed:
            self.checkpointed = self.generation
        return failed

    def _disable(self, reason: str) -> None:
        """Stop journaling for good; segment files with journaled data are synced directly
        (the journal keeps its records for redo, since it is never written again)."""
        if self.failed is not None:
            return
        self.failed = reason
        log.error("plog journal disabled: %s; syncing every segment file directly", reason)
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                self._checkpoint.result()
            self._checkpoint = None
        self._sync_files(self._dirty)
        self._dirty.clear()
        self.checkpointed = self.generation  # nothing waits for a checkpoint any more
