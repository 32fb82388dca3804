"""GroupLog: acceptor state survives restarts, chosen values, indexes, corruption, truncation."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import pytest

from phxq.errors import StorageError
from phxq.plog import GroupLog, LogWriter

SEG = 64 << 10


def batch(queue: int, count: int, t: float) -> bytes:
    """A toy chosen value: `count` messages of `queue`, enqueued at time `t`."""
    return struct.pack("<IId", queue, count, t) + b"m" * 40 * count


def indexer(instance: int, value: bytes) -> Iterable[tuple[object, int, float]]:
    if len(value) < 16:
        return []
    queue, count, t = struct.unpack_from("<IId", value)
    return [(("orders", queue), i, t) for i in range(count)]


async def open_log(path: Path, writer: LogWriter, seg: int = SEG, cache: int = 1 << 20) -> GroupLog:
    """Open and replay, as the replication runtime does: the index comes back from the values."""
    glog = await GroupLog.open(path, 7, writer, segment_bytes=seg, tail_cache_bytes=cache)
    for instance, value in glog.iter_chosen_blocking():
        glog.restore_index(instance, indexer(instance, value))
    return glog


async def fill(glog: GroupLog, upto: int, *, mark: bool = True) -> None:
    for i in range(glog.chosen_up_to + 1, upto + 1):
        value = batch(i % 3, 2, 1000.0 + i)
        if mark:
            await glog.append_accept(i, (3, 1), value)
        await glog.append_chosen(
            i, (3, 1) if mark else None, i * 11, value, index=indexer(i, value)
        )


async def test_restart_keeps_highest_promise_and_accepts(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await glog.append_promise((5, 2))
        await glog.append_promise((4, 9))  # a lower promise never lowers what was promised
        await glog.append_accept(1, (5, 2), b"a")
        await glog.append_accept(1, (6, 1), b"b")
        await glog.append_accept(2, (5, 2), b"c")
        await glog.close()
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        rec = glog.recovered
        assert rec.promised == (6, 1)  # accepting (6, 1) promised it
        assert rec.max_round == 6
        assert rec.accepted == {1: ((6, 1), b"b"), 2: ((5, 2), b"c")}
        assert rec.chosen_up_to == 0 and not glog.needs_repair
        await glog.close()


async def test_chosen_values_survive_restart_with_chain_checksum(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 30)
        await fill(glog, 40, mark=False)  # learned by catch-up: values written in full
        await glog.append_accept(41, (3, 1), b"pending")
        await glog.close()
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        rec = glog.recovered
        assert (rec.chosen_up_to, rec.checksum) == (40, 440)
        assert rec.accepted == {41: ((3, 1), b"pending")}
        got = await glog.read_chosen(1, 100, 1 << 20)
        assert [r.instance for r in got] == list(range(1, 41))
        assert all(r.value == batch(r.instance % 3, 2, 1000.0 + r.instance) for r in got)
        assert [r.checksum for r in got] == [i * 11 for i in range(1, 41)]
        await glog.close()


async def test_read_chosen_respects_count_and_bytes(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 20)
        assert [r.instance for r in await glog.read_chosen(5, 3, 1 << 20)] == [5, 6, 7]
        assert [r.instance for r in await glog.read_chosen(5, 100, 1)] == [5]
        assert await glog.read_chosen(21, 10, 1 << 20) == []
        await glog.close()


async def test_queue_index_is_rebuilt_at_start_and_reads_one_queue(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 12)
        live = glog.positions(("orders", 1), None, 100)
        await glog.close()
    assert live == [(i, j) for i in (1, 4, 7, 10) for j in (0, 1)]
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        assert glog.positions(("orders", 1), None, 100) == live
        assert glog.positions(("orders", 1), (4, 0), 3) == [(4, 1), (7, 0), (7, 1)]
        assert glog.positions(("orders", 9), None, 10) == []
        await glog.close()


async def test_instance_at_time_finds_first_instance_at_or_after(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 10)
        assert glog.instance_at_time(0.0) == 1
        assert glog.instance_at_time(1004.5) == 5
        assert glog.instance_at_time(1010.0) == 10
        assert glog.instance_at_time(2000.0) is None
        await glog.close()


def _segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.plog"))


async def test_mid_segment_corruption_is_reported_and_never_served(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=1 << 20)
        await fill(glog, 50)
        await glog.close()
    seg = _segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    spot = data.find(batch(20 % 3, 2, 1020.0))  # inside instance 20's accepted value
    data[spot + 30] ^= 0x40
    seg.write_bytes(bytes(data))
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=1 << 20)
        rec = glog.recovered
        assert glog.needs_repair and rec.corrupt
        assert rec.chosen_up_to < 20
        assert rec.damaged and rec.damaged[0][0] == rec.chosen_up_to + 1
        assert rec.damaged[0][1] >= 20
        with pytest.raises(StorageError):
            await glog.read_chosen(20, 1, 1 << 20)
        good = await glog.read_chosen(1, 100, 1 << 20)
        assert all(r.value == batch(r.instance % 3, 2, 1000.0 + r.instance) for r in good)
        # Re-learning the damaged range (catch-up) repairs the group.
        await fill(glog, 60, mark=False)
        assert not glog.damaged
        got = await glog.read_chosen(20, 1, 1 << 20)
        assert got[0].value == batch(20 % 3, 2, 1020.0)
        await glog.close()


async def test_corruption_found_at_read_time_raises_and_marks_damage(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=1 << 20, cache=0)
        await fill(glog, 30)
        seg = _segments(tmp_path)[0]
        data = bytearray(seg.read_bytes())
        spot = data.find(batch(5 % 3, 2, 1005.0))
        with open(seg, "r+b") as fh:
            fh.seek(spot + 20)
            fh.write(b"X")
        with pytest.raises(StorageError):
            await glog.read_value(5)
        assert glog.needs_repair
        assert await glog.read_value(6) == batch(6 % 3, 2, 1006.0)
        await glog.close()


async def test_torn_tail_is_truncated_and_earlier_records_kept(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=1 << 20)
        await fill(glog, 10)
        await glog.close()
    seg = _segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    end = len(data.rstrip(b"\0"))
    data[end - 7 : end] = b"\xff" * 7  # the last record is torn
    seg.write_bytes(bytes(data))
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=1 << 20)
        rec = glog.recovered
        assert rec.torn_bytes > 0 and not glog.needs_repair
        assert rec.chosen_up_to == 9  # instance 10's chosen mark was the torn record
        assert rec.accepted[10][1] == batch(10 % 3, 2, 1010.0)
        await glog.append_chosen(10, (3, 1), 110, rec.accepted[10][1])
        await glog.close()
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=1 << 20)
        assert glog.recovered.chosen_up_to == 10 and glog.recovered.torn_bytes == 0
        await glog.close()


async def test_truncate_deletes_whole_segments_below_and_survives_restart(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        await fill(glog, 200)
        files_before = len(_segments(tmp_path))
        disk_before = glog.disk_bytes()
        first = await glog.truncate_below(120)
        assert 1 < first <= 120
        assert len(_segments(tmp_path)) < files_before and glog.disk_bytes() < disk_before
        with pytest.raises(StorageError):
            await glog.read_value(first - 1)
        assert (await glog.read_chosen(first, 1, 1 << 20))[0].instance == first
        assert all(i >= first for i, _ in glog.positions(("orders", 0), None, 1000))
        await glog.close()
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        rec = glog.recovered
        assert (rec.first_instance, rec.chosen_up_to, rec.checksum) == (first, 200, 2200)
        assert not glog.needs_repair
        got = await glog.read_chosen(first, 1000, 1 << 30)
        assert [r.instance for r in got] == list(range(first, 201))
        await glog.close()


async def test_truncation_point_predicts_where_truncation_stops(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        await fill(glog, 200)
        assert glog.truncation_point(1) == 1
        point = glog.truncation_point(120)
        assert 1 < point <= 120
        assert await glog.truncate_below(120) == point == glog.first_instance
        assert glog.truncation_point(120) == point  # nothing more to drop below 120
        await glog.close()


async def test_reset_to_a_snapshot_point_keeps_votes_above_it_and_survives_restart(
    tmp_path: Path,
) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        await fill(glog, 150)  # several segments
        await glog.append_accept(500, (4, 2), b"a vote above the snapshot")
        await glog.append_accept(300, (4, 2), b"a vote below it")
        with pytest.raises(ValueError):
            await glog.reset_to(100, 1)  # not ahead of chosen_up_to
        assert await glog.reset_to(400, 4400)
        assert (glog.chosen_up_to, glog.checksum, glog.first_instance) == (400, 4400, 401)
        assert glog.positions(("orders", 0), None, 1000) == []
        with pytest.raises(StorageError):
            await glog.read_value(150)
        await glog.append_accept(401, (4, 2), batch(1, 2, 5000.0))
        await glog.append_chosen(401, (4, 2), 4411, batch(1, 2, 5000.0))
        assert (await glog.read_chosen(401, 10, 1 << 20))[0].value == batch(1, 2, 5000.0)
        before = len(_segments(tmp_path))
        assert await glog.truncate_below(401) == 401
        assert len(_segments(tmp_path)) < before  # the old segments below 400 are gone
        await glog.close()
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        rec = glog.recovered
        assert (rec.first_instance, rec.chosen_up_to, rec.checksum) == (401, 401, 4411)
        assert rec.accepted == {500: ((4, 2), b"a vote above the snapshot")}
        assert rec.promised == (4, 2) and not glog.needs_repair
        assert glog.positions(("orders", 1), None, 10) == [(401, 0), (401, 1)]
        await glog.close()


async def test_truncating_everything_chosen_keeps_chosen_up_to(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        await fill(glog, 100)
        await glog.append_promise((9, 9))
        for _ in range(5):  # fill more segments with promises only
            for _ in range(100):
                await glog.append_promise((9, 9))
        first = await glog.truncate_below(10**9)
        assert first == 101
        await glog.close()
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        rec = glog.recovered
        assert (rec.chosen_up_to, rec.checksum, rec.first_instance) == (100, 1100, 101)
        assert rec.promised == (9, 9)
        await glog.close()


async def test_retention_floor_by_consumers_time_and_size(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        await fill(glog, 200)  # instance i enqueued at 1000 + i
        # No limits: what every consumer group has committed may go.
        assert glog.retention_floor(keep_from=50, max_age=None, max_bytes=None, now_wall=0) == (
            50,
            False,
        )
        # Generous limits: nothing expires, even what is consumed.
        floor, forced = glog.retention_floor(
            keep_from=150, max_age=10_000, max_bytes=1 << 30, now_wall=1300
        )
        assert (floor, forced) == (1, False)
        # Time: messages older than 1300 - 150 = 1150 expire; a lagging consumer is overridden.
        floor, forced = glog.retention_floor(
            keep_from=20, max_age=150, max_bytes=None, now_wall=1300
        )
        assert 20 < floor <= 151 and forced
        # Size: keep at most ~3 segments.
        floor, forced = glog.retention_floor(
            keep_from=1000, max_age=None, max_bytes=3 * 8192, now_wall=0
        )
        assert floor > 1 and not forced
        first = await glog.truncate_below(floor)
        assert glog.disk_bytes() <= 3 * 8192 and first == floor
        await glog.close()


async def test_a_reset_survives_a_crash_before_old_segments_are_deleted(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        await fill(glog, 150)
        await glog.append_accept(170, (4, 2), b"vote")
        assert await glog.reset_to(160, 1760)
        await glog.close()  # "crash": the old segments are still on disk
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w, seg=8192)
        rec = glog.recovered
        assert (rec.first_instance, rec.chosen_up_to, rec.checksum) == (161, 160, 1760)
        assert rec.accepted == {170: ((4, 2), b"vote")} and not glog.needs_repair
        assert glog.positions(("orders", 0), None, 1000) == []
        await glog.close()
