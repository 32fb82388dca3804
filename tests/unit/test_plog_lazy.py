"""Lazy (non-urgent) records: chosen marks never cost an fdatasync of their own."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from phxq.plog import GroupLog, LogWriter


class CountingFsync:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        os.fdatasync(fd)
        self.calls += 1


async def test_a_lazy_chosen_mark_rides_with_the_next_urgent_record(tmp_path: Path) -> None:
    fsync = CountingFsync()
    async with LogWriter(fsync=fsync, lazy_delay=60.0) as writer:
        glog = await GroupLog.open(tmp_path / "g", 0, writer, segment_bytes=1 << 20)
        await glog.append_accept(1, (1, 1), b"v1")
        before = fsync.calls
        chosen = glog.append_chosen(1, (1, 1), 11, b"v1", urgent=False)
        # Absence of a sync can only be observed over some time: give the writer a chance.
        await asyncio.sleep(0.05)
        assert not chosen.done()
        assert fsync.calls == before
        await glog.append_accept(2, (1, 1), b"v2")
        assert chosen.done() and chosen.exception() is None
        assert fsync.calls == before + 1  # one sync for the mark and the accept together
        await glog.close()
    async with LogWriter() as writer:
        glog = await GroupLog.open(tmp_path / "g", 0, writer, segment_bytes=1 << 20)
        assert glog.chosen_up_to == 1
        await glog.close()


async def test_a_lone_lazy_record_is_synced_after_the_lazy_delay(tmp_path: Path) -> None:
    async with LogWriter(lazy_delay=0.05) as writer:
        glog = await GroupLog.open(tmp_path / "g", 0, writer, segment_bytes=1 << 20)
        await glog.append_accept(1, (1, 1), b"v1")
        chosen = glog.append_chosen(1, (1, 1), 11, b"v1", urgent=False)
        await asyncio.wait_for(chosen, 5.0)
        await glog.close()


async def test_close_drains_lazy_records(tmp_path: Path) -> None:
    async with LogWriter(lazy_delay=3600.0) as writer:
        glog = await GroupLog.open(tmp_path / "g", 0, writer, segment_bytes=1 << 20)
        await glog.append_accept(1, (1, 1), b"v1")
        chosen = glog.append_chosen(1, (1, 1), 11, b"v1", urgent=False)
        await glog.close()
    assert chosen.done() and chosen.exception() is None
    async with LogWriter() as writer:
        glog = await GroupLog.open(tmp_path / "g", 0, writer, segment_bytes=1 << 20)
        assert glog.chosen_up_to == 1
        await glog.close()


async def test_rolling_a_segment_writes_its_lazy_records_first(tmp_path: Path) -> None:
    async with LogWriter(lazy_delay=3600.0) as writer:
        glog = await GroupLog.open(tmp_path / "g", 0, writer, segment_bytes=4096)
        await glog.append_accept(1, (1, 1), b"v1")
        chosen = glog.append_chosen(1, (1, 1), 11, b"v1", urgent=False)
        # Does not fit in the first segment: the log rolls to a second one.
        await glog.append_accept(2, (1, 1), b"x" * 5000)
        assert chosen.done() and chosen.exception() is None
        assert len(list((tmp_path / "g").iterdir())) >= 2
        await glog.close()
    async with LogWriter() as writer:
        glog = await GroupLog.open(tmp_path / "g", 0, writer, segment_bytes=4096)
        assert glog.chosen_up_to == 1
        assert glog.recovered.accepted == {2: ((1, 1), b"x" * 5000)}
        assert not glog.needs_repair
        await glog.close()
