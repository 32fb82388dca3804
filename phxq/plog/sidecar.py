"""Per-segment record tables (``<segment>.idx``): start-up reads a sealed segment's records
from here instead of parsing and checksumming them one by one.

A sealed segment (every segment but a group's last) never changes again, so the start-up scan
(:mod:`phxq.plog.recovery`) would parse the same records at every start, a few microseconds of
Python each: tens of seconds for a log of many GiB of small instances. After a segment is parsed
whole and clean (no bad bytes, no torn tail) and is not the last one, recovery writes its *record
table* beside it: one fixed-size row per record (kind, instance, ballot, offset, length, chain
checksum), the CHECKPOINT payloads, the segment's size, its append position ``end`` and a CRC32C
of its bytes ``[0, end)``. The next start reads that table with one ``struct.iter_unpack``
instead.

**Never trusted, always verified.** A table is used only if (1) its own CRC32C holds, (2) it names
this segment number, size and format version, (3) the CRC32C of the segment's bytes ``[0, end)``
recomputed now (one C call over the mapped file) equals the one in the table, and (4) everything
after ``end`` is zeros. So any change to the segment since the table was written -- a bit flip,
a torn write, a journal redo that restored lost pages -- fails (3) or (4), and the segment is
parsed record by record exactly as without a table (reporting corruption as before); a torn,
truncated or corrupted table fails (1) or (2) and is rebuilt after that parse. A segment with a
corrupt or repaired region never gets a table (it is always parsed). Tables are a cache: they
are written with a rename but not fsynced (a table lost or torn by a power cut is detected and
rebuilt), deleted with their segment, and a table without a segment is deleted at start-up.

Directories of earlier versions (no tables) start as before and get tables on that start.

Layout (little-endian): header ``magic "PXSI", version u32, segment number u64, segment size
u64, end u64, segment crc u32, rows u32, checkpoints u32``; ``rows`` rows of ``kind u8,
instance u64, round u64, node u32, offset u64, length u32, aux u64`` (aux: the chain checksum
of CHOSEN/CHOSEN_VALUE/TRUNCATED, the index into the checkpoints of a CHECKPOINT, else 0);
``checkpoints`` entries of 4 u64 (the CHECKPOINT payload); then a CRC32C u32 of all before it.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from crc32c import crc32c

__all__ = ["SUFFIX", "Row", "SegmentTable", "delete", "load", "path_of", "segment_crc", "store"]

log = logging.getLogger("phxq.plog")

SUFFIX: Final = ".idx"
_MAGIC: Final = b"PXSI"
_VERSION: Final = 1
_HEAD: Final = struct.Struct("<4sIQQQIII")
_ROW: Final = struct.Struct("<BQQIQIQ")
_CP: Final = struct.Struct("<QQQQ")
_CRC: Final = struct.Struct("<I")
_CRC_CHUNK: Final = 16 << 20

# (kind, instance, round, node, offset, length, aux): one record of a segment
Row = tuple[int, int, int, int, int, int, int]
Buffer = mmap.mmap | memoryview | bytes


@dataclass(frozen=True, slots=True)
class SegmentTable:
    """The verified record table of one sealed segment."""

    end: int
    rows: list[Row]
    checkpoints: list[tuple[int, int, int, int]]


def path_of(segment: Path) -> Path:
    return segment.with_name(segment.name + SUFFIX)


def segment_crc(buf: Buffer, end: int) -> int:
    """CRC32C of ``buf[0:end]`` (in chunks: no copy of a whole segment)."""
    crc = 0
    view = memoryview(buf)
    try:
        for at in range(0, end, _CRC_CHUNK):
            crc = crc32c(view[at : min(end, at + _CRC_CHUNK)], crc)
    finally:
        view.release()
    return crc


def encode(
    number: int,
    size: int,
    end: int,
    crc: int,
    rows: Iterable[Row],
    checkpoints: list[tuple[int, int, int, int]],
) -> bytes:
    rows = list(rows)
    parts = [_HEAD.pack(_MAGIC, _VERSION, number, size, end, crc, len(rows), len(checkpoints))]
    parts += [_ROW.pack(*r) for r in rows]
    parts += [_CP.pack(*c) for c in checkpoints]
    body = b"".join(parts)
    return body + _CRC.pack(crc32c(body))


def decode(data: bytes, number: int, size: int) -> tuple[int, int, SegmentTable] | None:
    """``(end, segment crc, table)`` from a table file's bytes, or None when they are not a
    whole, intact table of segment ``number`` of ``size`` bytes in this format."""
    if len(data) < _HEAD.size + _CRC.size:
        return None
    body = memoryview(data)[: -_CRC.size]
    if crc32c(body) != _CRC.unpack_from(data, len(data) - _CRC.size)[0]:
        return None
    magic, version, num, seg_size, end, crc, nrows, ncps = _HEAD.unpack_from(data)
    if (magic, version, num, seg_size) != (_MAGIC, _VERSION, number, size) or end > size:
        return None
    rows_end = _HEAD.size + nrows * _ROW.size
    if rows_end + ncps * _CP.size != len(body):
        return None
    rows: list[Row] = list(_ROW.iter_unpack(body[_HEAD.size : rows_end]))
    cps: list[tuple[int, int, int, int]] = list(_CP.iter_unpack(body[rows_end:]))
    if any(r[0] == 2 and not 0 <= r[6] < len(cps) for r in rows):  # 2: Kind.CHECKPOINT
        return None
    return end, crc, SegmentTable(end, rows, cps)


def load(path: Path, number: int, buf: Buffer) -> SegmentTable | None:
    """The table of segment ``path`` (number ``number``, mapped as ``buf``) if one exists and
        the segment's bytes ``[0, end)`` are still the ones it describes (the caller checks that
    only zeros follow ``end``); None
        otherwise (the caller parses the segment and may :func:`store` a new table)."""
    try:
        data = path_of(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("plog: cannot read %s (parsing the segment): %s", path_of(path), exc)
        return None
    found = decode(data, number, len(buf))
    if found is None:
        log.warning("plog: %s is damaged or stale: parsing the segment", path_of(path))
        return None
    end, crc, table = found
    if segment_crc(buf, end) != crc:
        log.warning("plog: %s no longer matches its segment: parsing the segment", path.name)
        return None
    return table


def store(path: Path, table: bytes) -> None:
    """Write a segment's table (from :func:`encode`) beside it: temporary file and rename, no
    fsync (a cache; see the module docstring). Errors are logged, never raised: without a
    table the next start parses the segment, as before."""
    target = path_of(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(table)
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("plog: cannot write %s (the next start parses the segment): %s", target, exc)


def delete(segment: Path) -> None:
    """Delete ``segment``'s table, if any (with or before the segment itself)."""
    path_of(segment).unlink(missing_ok=True)


def drop_orphans(directory: Path, segments: Iterable[Path]) -> None:
    """Delete tables (and temporary files of tables) in ``directory`` whose segment is not
    among ``segments`` (left by a crash between deleting a segment and its table)."""
    keep = {path_of(p).name for p in segments}
    for entry in directory.iterdir():
        name = entry.name
        if (name.endswith(SUFFIX) and name not in keep) or name.endswith(SUFFIX + ".tmp"):
            try:
                entry.unlink()
            except OSError as exc:
                log.warning("plog: cannot delete stale %s: %s", entry, exc)
