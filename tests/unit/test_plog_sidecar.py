"""Record tables of sealed segments (``<segment>.idx``, :mod:`phxq.plog.sidecar`): start-up
reads them instead of parsing sealed segments, gets exactly what a full parse gets, and never
trusts a table that is torn, corrupt, stale or orphaned."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from phxq.plog import GroupLog, LogWriter, sidecar
from phxq.plog.recovery import Recovery, build_table, recover

SEG = 64 << 10
N = 120


def value(i: int) -> bytes:
    return struct.pack("<I", i) + b"v" * 1500


def digest(r: Recovery) -> str:
    """Everything recovery hands to GroupLog, as one comparable string."""
    segs = [(s.number, s.size, s.end, s.max_instance) for s in r.segments]
    return hashlib.sha256(
        repr((r.recovered, r.chosen, segs, sorted(r.accepted_locs.items()))).encode()
    ).hexdigest()


async def build(directory: Path) -> None:
    """Several sealed segments: accepts + chosen marks, learned values, a promise, and
    accepts above the chosen end (votes that recovery must hand back)."""
    async with LogWriter() as w:
        glog = await GroupLog.open(directory, 0, w, segment_bytes=SEG)
        await glog.append_promise((2, 1))
        for i in range(1, N + 1):
            if i % 7 == 0:
                await glog.append_chosen(i, None, i * 3, value(i))  # learned: CHOSEN_VALUE
            else:
                await glog.append_accept(i, (2, 1), value(i))
                await glog.append_chosen(i, (2, 1), i * 3, value(i))
        await glog.append_accept(N + 1, (3, 2), value(N + 1))
        await glog.append_accept(N + 2, (3, 2), value(N + 2))
        await glog.close()


def tables(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + sidecar.SUFFIX))


async def test_sealed_segments_get_tables_and_recover_identically(tmp_path: Path) -> None:
    await build(tmp_path)
    segments = sorted(tmp_path.glob("*.plog"))
    assert len(segments) >= 4
    for t in tables(tmp_path):  # as a directory of an earlier version: no tables
        t.unlink()
    parsed = recover(tmp_path)  # a full parse, which writes them
    assert [t.name for t in tables(tmp_path)] == [s.name + ".idx" for s in segments[:-1]]
    from_tables = recover(tmp_path)
    assert digest(from_tables) == digest(parsed)
    assert from_tables.recovered.chosen_up_to == N
    assert set(from_tables.recovered.accepted) == {N + 1, N + 2}
    # and the log serves from them: every value reads back
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=SEG)
        assert [v for _, v in glog.iter_chosen_blocking()] == [value(i) for i in range(1, N + 1)]
        await glog.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage", "other segment"])
async def test_a_damaged_table_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    await build(tmp_path)
    expected = digest(recover(tmp_path))
    table = tables(tmp_path)[1]
    data = bytearray(table.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) - 9]
    elif damage == "empty":
        data = bytearray()
    elif damage == "garbage":
        data = bytearray(b"\xa5" * len(data))
    else:  # a valid table, but of another segment
        data = bytearray(tables(tmp_path)[0].read_bytes())
    table.write_bytes(bytes(data))
    assert digest(recover(tmp_path)) == expected
    assert table.read_bytes() != bytes(data), "rebuilt"
    assert digest(recover(tmp_path)) == expected


async def test_a_bit_flip_in_a_sealed_segment_is_reported_despite_its_table(
    tmp_path: Path,
) -> None:
    await build(tmp_path)
    recover(tmp_path)
    assert tables(tmp_path)
    seg = sorted(tmp_path.glob("*.plog"))[1]
    raw = bytearray(seg.read_bytes())
    raw[SEG // 2] ^= 0x01  # inside a record of a middle segment
    seg.write_bytes(bytes(raw))
    with_table = recover(tmp_path)
    assert with_table.recovered.corrupt and with_table.recovered.damaged
    (seg.parent / (seg.name + sidecar.SUFFIX)).unlink(missing_ok=True)
    for t in tables(tmp_path):
        t.unlink()
    assert digest(recover(tmp_path)) == digest(with_table)
    assert not (seg.parent / (seg.name + sidecar.SUFFIX)).exists(), "no table for a bad segment"


async def test_bytes_written_after_the_end_a_table_records_are_not_missed(tmp_path: Path) -> None:
    await build(tmp_path)
    recover(tmp_path)
    seg = sorted(tmp_path.glob("*.plog"))[0]
    raw = bytearray(seg.read_bytes())
    raw[-5] = 0x77  # in the zero tail of a sealed segment: garbage before valid batches
    seg.write_bytes(bytes(raw))
    assert recover(tmp_path).recovered.corrupt


async def test_orphan_and_temporary_tables_are_dropped(tmp_path: Path) -> None:
    await build(tmp_path)
    recover(tmp_path)
    orphan = tmp_path / ("0000009999.plog" + sidecar.SUFFIX)
    orphan.write_bytes(tables(tmp_path)[0].read_bytes())
    tmp = tmp_path / ("0000000000.plog" + sidecar.SUFFIX + ".tmp")
    tmp.write_bytes(b"half")
    recover(tmp_path)
    assert not orphan.exists() and not tmp.exists()


async def test_truncation_deletes_the_tables_of_deleted_segments(tmp_path: Path) -> None:
    await build(tmp_path)
    recover(tmp_path)
    before = {t.name for t in tables(tmp_path)}
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=SEG)
        first = await glog.truncate_below(N // 2)
        assert first > 1
        await glog.close()
    left = {p.name + sidecar.SUFFIX for p in tmp_path.glob("*.plog")}
    assert {t.name for t in tables(tmp_path)} <= left
    assert {t.name for t in tables(tmp_path)} < before


async def test_segments_get_their_tables_when_sealed_not_at_the_next_start(
    tmp_path: Path,
) -> None:
    await build(tmp_path)  # the writer builds them in the background; close() waits
    segments = sorted(tmp_path.glob("*.plog"))
    assert [t.name for t in tables(tmp_path)] == [s.name + ".idx" for s in segments[:-1]]
    written = {t.name: t.read_bytes() for t in tables(tmp_path)}
    from_tables = recover(tmp_path)
    assert {t.name: t.read_bytes() for t in tables(tmp_path)} == written, "used as they are"
    for t in tables(tmp_path):
        t.unlink()
    assert digest(recover(tmp_path)) == digest(from_tables)
    assert {t.name: t.read_bytes() for t in tables(tmp_path)} == written, "same tables"


async def test_no_table_is_built_for_a_segment_that_does_not_parse_to_its_end(
    tmp_path: Path,
) -> None:
    await build(tmp_path)
    seg = sorted(tmp_path.glob("*.plog"))[0]
    for t in tables(tmp_path):
        t.unlink()
    raw = bytearray(seg.read_bytes())
    raw[SEG // 3] ^= 0x04
    seg.write_bytes(bytes(raw))
    build_table(seg, 0)
    assert not tables(tmp_path)
    build_table(tmp_path / "0000000077.plog", 77)  # gone (truncated meanwhile): nothing
    assert not tables(tmp_path)
