"""GroupLog repair support: a repaired corrupt region stays repaired across restarts, new damage
is still reported, and the accessors the rejoin procedure reads (see phxq.replication.rejoin)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from phxq.errors import StorageError
from phxq.plog import GroupLog, LogWriter

SEG = 1 << 20


def value(i: int) -> bytes:
    return struct.pack("<I", i) + b"v" * 60


async def open_log(path: Path, writer: LogWriter) -> GroupLog:
    return await GroupLog.open(path, 3, writer, segment_bytes=SEG)


async def fill(glog: GroupLog, upto: int, *, mark: bool = True) -> None:
    for i in range(glog.chosen_up_to + 1, upto + 1):
        if mark:
            await glog.append_accept(i, (3, 1), value(i))
        await glog.append_chosen(i, (3, 1) if mark else None, i * 11, value(i))


def corrupt(path: Path, instance: int) -> None:
    seg = sorted(path.glob("*.plog"))[0]
    data = bytearray(seg.read_bytes())
    spot = data.find(value(instance))  # the first record holding it (its accept)
    assert spot > 0
    data[spot + 10] ^= 0x40
    seg.write_bytes(bytes(data))


async def test_a_repaired_region_stays_repaired_and_new_damage_is_still_reported(
    tmp_path: Path,
) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 50)
        await glog.close()
    corrupt(tmp_path, 20)
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        assert glog.needs_repair and glog.recovered.corrupt
        await fill(glog, 60, mark=False)  # re-learned from peers
        await glog.append_promise((9, 1))  # the adopted promise
        assert glog.needs_repair, "corrupt bytes stay on disk until marked repaired"
        await glog.mark_repaired()
        assert not glog.needs_repair
        await glog.close()
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        rec = glog.recovered
        assert not glog.needs_repair and not rec.corrupt and rec.repaired
        assert (rec.chosen_up_to, rec.promised) == (60, (9, 1))
        got = await glog.read_chosen(1, 100, 1 << 20)
        assert [r.value for r in got] == [value(i) for i in range(1, 61)]
        await glog.close()
    corrupt(tmp_path, 40)  # a new bad spot elsewhere is damage again
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        assert glog.needs_repair and glog.recovered.corrupt
        assert set(glog.recovered.corrupt).isdisjoint(glog.recovered.repaired)
        await glog.close()


async def test_an_unreadable_repaired_file_means_the_damage_is_reported_again(
    tmp_path: Path,
) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 30)
        await glog.close()
    corrupt(tmp_path, 10)
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 30, mark=False)
        await glog.mark_repaired()
        await glog.close()
    (tmp_path / "repaired").write_text("{not json")
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        assert glog.needs_repair
        await glog.close()


async def test_state_accessors_used_by_a_rejoin(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        assert not glog.has_state and glog.promised == (0, 0)
        assert glog.checksum_at(0) == 0 and glog.checksum_at(1) is None
        await fill(glog, 10)
        assert glog.has_state
        assert [glog.checksum_at(i) for i in (5, 10, 11)] == [55, 110, None]
        await glog.append_accept(12, (4, 2), b"low")
        await glog.append_accept(12, (5, 1), b"high")
        await glog.append_accept(11, (4, 2), b"eleven")
        assert glog.accepted_values() == {11: ((4, 2), b"eleven"), 12: ((5, 1), b"high")}
        assert glog.promised == (5, 1) and glog.max_round == 5
        await glog.close()


async def test_reads_of_a_damaged_range_fail_until_relearned(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        await fill(glog, 20)
        await glog.close()
    corrupt(tmp_path, 8)
    async with LogWriter() as w:
        glog = await open_log(tmp_path, w)
        assert glog.chosen_up_to < 8
        with pytest.raises(StorageError):
            await glog.read_chosen(8, 1, 1 << 20)
        await glog.close()
