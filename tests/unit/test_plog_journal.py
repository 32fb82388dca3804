"""The writer's journal: one fdatasync per multi-group batch, and acknowledged records survive
the loss of every unsynced segment byte (redo), a torn journal tail, rotations and failures.

A "crash" is simulated by copying the data directory while the writer still runs (the copy sees
the page cache, as a crash would if nothing were lost) and then, in the copy, zeroing the bytes a
crash could lose: segment bytes never ``fdatasync``\\ ed (the journal made them durable)."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
from pathlib import Path

import pytest

from phxq.errors import StorageError
from phxq.plog import GroupLog, LogWriter
from phxq.plog.journal import JOURNAL_FILES, replay

SEG = 1 << 20
BALLOT = (1, 1)


def _path_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class Fsync:
    """A real fdatasync that counts calls per kind of file and can fail some of them."""

    def __init__(self) -> None:
        self.journal = 0
        self.segment = 0
        self.fail_journal = False
        self.fail_checkpoint = False

    def __call__(self, fd: int) -> None:
        is_journal = _path_of(fd).endswith(".pxj")
        if is_journal and self.fail_journal:
            raise OSError(errno.EIO, "injected journal EIO")
        if (
            not is_journal
            and self.fail_checkpoint
            and threading.current_thread().name.startswith("plog-checkpoint")
        ):
            raise OSError(errno.EIO, "injected checkpoint EIO")
        os.fdatasync(fd)
        if is_journal:
            self.journal += 1
        else:
            self.segment += 1


def _small_journal(base: Path, fsync: Fsync) -> LogWriter:
    """A writer with 64 KiB journal files (rotating often) that journals every batch."""
    return LogWriter(fsync=fsync, journal_dir=base, journal_bytes=64 << 10, journal_min_files=1)


async def _groups(base: Path, writer: LogWriter, n: int) -> list[GroupLog]:
    logs = [await GroupLog.open(base / f"g{g:04d}", g, writer, segment_bytes=SEG) for g in range(n)]
    await asyncio.gather(*(glog.append_promise(BALLOT) for glog in logs))  # creation settled
    return logs


async def _round(logs: list[GroupLog], instance: int, size: int = 100) -> None:
    """One accept per group, queued in one loop iteration (so they share writer batches)."""
    await asyncio.gather(
        *(glog.append_accept(instance, BALLOT, _value(glog.group, instance, size)) for glog in logs)
    )


def _value(group: int, instance: int, size: int = 100) -> bytes:
    return f"g{group}i{instance}-".encode().ljust(size, b"x")


def _crash_copy(base: Path, dest: Path, *, lose_segments: bool) -> Path:
    """The data directory as a crash could leave it; with ``lose_segments`` every byte written
    into a segment after its creation is lost (never synced: only the journal was)."""
    shutil.copytree(base, dest)
    if lose_segments:
        for seg in dest.glob("g*/*.plog"):
            size = seg.stat().st_size
            with open(seg, "r+b") as fh:
                fh.write(bytes(size))
    return dest


async def _recovered(base: Path, groups: int) -> list[dict[int, bytes]]:
    async with LogWriter(journal_dir=base) as writer:
        out = []
        for g in range(groups):
            glog = await GroupLog.open(base / f"g{g:04d}", g, writer, segment_bytes=SEG)
            out.append({i: v for i, (_, v) in glog.recovered.accepted.items()})
            await glog.close()
        return out


async def test_a_batch_over_sixteen_groups_costs_one_journal_fdatasync(tmp_path: Path) -> None:
    fsync = Fsync()
    async with LogWriter(fsync=fsync, journal_dir=tmp_path, journal_min_files=1) as writer:
        logs = await _groups(tmp_path, writer, 16)
        batches, journal, segment = writer.batches, fsync.journal, fsync.segment
        for instance in range(1, 21):
            await _round(logs, instance)
        batches = writer.batches - batches
        assert fsync.segment == segment  # no segment file synced on the ack path
        assert fsync.journal - journal <= batches  # at most one journal sync per batch
        assert batches < 20 * 4  # 16 groups per round shared batches
        for glog in logs:
            await glog.close()


async def test_acked_records_survive_losing_every_unsynced_segment_byte(tmp_path: Path) -> None:
    base = tmp_path / "data"
    async with LogWriter(journal_dir=base, journal_min_files=1) as writer:
        logs = await _groups(base, writer, 4)
        for instance in range(1, 51):
            await _round(logs, instance)
        crashed = _crash_copy(base, tmp_path / "crashed", lose_segments=True)
        without = _crash_copy(base, tmp_path / "no-journal", lose_segments=True)
        for glog in logs:
            await glog.close()
    for name in JOURNAL_FILES:
        (without / name).unlink()
    recovered = await _recovered(crashed, 4)
    for g, accepted in enumerate(recovered):
        assert accepted == {i: _value(g, i) for i in range(1, 51)}, f"group {g}"
    # The same loss without the journal loses the records: the redo is what kept them.
    assert await _recovered(without, 4) == [{}, {}, {}, {}]


async def test_a_torn_last_journal_record_loses_only_its_unacked_batch(tmp_path: Path) -> None:
    base = tmp_path / "data"
    async with LogWriter(journal_dir=base, journal_min_files=1) as writer:
        logs = await _groups(base, writer, 3)
        for instance in range(1, 11):
            await _round(logs, instance)
        pos, gen = writer.journal.pos, writer.journal.generation  # type: ignore[union-attr]
        await _round(logs, 11)
        crashed = _crash_copy(base, tmp_path / "crashed", lose_segments=True)
        for glog in logs:
            await glog.close()
    # Tear the records written for instance 11 (as if their fdatasync never completed).
    with open(crashed / JOURNAL_FILES[gen % 2], "r+b") as fh:
        fh.seek(pos + 30)
        fh.write(b"\xff\xff\xff\xff")
    recovered = await _recovered(crashed, 3)
    for g, accepted in enumerate(recovered):
        assert accepted == {i: _value(g, i) for i in range(1, 11)}, f"group {g}"


async def test_rotation_checkpoints_so_redo_replays_only_the_newest_generations(
    tmp_path: Path,
) -> None:
    base = tmp_path / "data"
    fsync = Fsync()
    async with _small_journal(base, fsync) as writer:
        logs = await _groups(base, writer, 4)
        for instance in range(1, 301):
            await _round(logs, instance, size=200)
        journal = writer.journal
        assert journal is not None and journal.failed is None
        assert journal.rotations >= 4  # 300 rounds x 4 x ~270 B through 64 KiB files
        assert fsync.segment > 0  # checkpoints synced the segment files
        crashed = _crash_copy(base, tmp_path / "crashed", lose_segments=False)
        for glog in logs:
            await glog.close()
    stats = replay(crashed)
    # At least one record per round was journaled; two generations of five or more are replayed.
    assert 0 < stats.records <= 150
    recovered = await _recovered(crashed, 4)
    for g, accepted in enumerate(recovered):
        assert accepted == {i: _value(g, i, 200) for i in range(1, 301)}, f"group {g}"


async def test_a_clean_close_leaves_nothing_to_redo(tmp_path: Path) -> None:
    async with LogWriter(journal_dir=tmp_path, journal_min_files=1) as writer:
        logs = await _groups(tmp_path, writer, 2)
        await _round(logs, 1)
        for glog in logs:
            await glog.close()
    assert replay(tmp_path).records == 0
    assert [v[1] for v in await _recovered(tmp_path, 2)] == [_value(0, 1), _value(1, 1)]


async def test_redo_skips_segments_deleted_since(tmp_path: Path) -> None:
    base = tmp_path / "data"
    async with LogWriter(journal_dir=base, journal_min_files=1) as writer:
        logs = await _groups(base, writer, 2)
        await _round(logs, 1)
        crashed = _crash_copy(base, tmp_path / "crashed", lose_segments=False)
        for glog in logs:
            await glog.close()
    shutil.rmtree(crashed / "g0001")
    stats = replay(crashed)
    assert stats.missing > 0 and stats.entries > 0


async def test_journal_failure_falls_back_to_syncing_segments_and_loses_nothing(
    tmp_path: Path,
) -> None:
    base = tmp_path / "data"
    fsync = Fsync()
    async with LogWriter(fsync=fsync, journal_dir=base, journal_min_files=1) as writer:
        logs = await _groups(base, writer, 3)
        await _round(logs, 1)
        fsync.fail_journal = True
        await _round(logs, 2)  # acked through direct fdatasyncs
        await _round(logs, 3)
        journal = writer.journal
        assert journal is not None and journal.failed and "EIO" in journal.failed
        segment_syncs = fsync.segment
        assert segment_syncs >= 3
        crashed = _crash_copy(base, tmp_path / "crashed", lose_segments=False)
        for glog in logs:
            await glog.close()
    for g, accepted in enumerate(await _recovered(crashed, 3)):
        assert accepted == {i: _value(g, i) for i in (1, 2, 3)}


async def test_a_failed_checkpoint_fails_that_segment_and_disables_the_journal(
    tmp_path: Path,
) -> None:
    base = tmp_path / "data"
    fsync = Fsync()
    async with _small_journal(base, fsync) as writer:
        logs = await _groups(base, writer, 2)
        fsync.fail_checkpoint = True
        failures = 0
        for instance in range(1, 400):
            try:
                await _round(logs, instance, size=200)
            except StorageError:
                failures += 1
                break
        journal = writer.journal
        assert journal is not None
        # The checkpoint thread fails the segment at once; the writer thread disables the
        # journal on its next pass (at most lazy_delay / 2 later).
        for _ in range(100):
            if journal.failed:
                break
            await asyncio.sleep(0.02)
        assert journal.failed and "checkpoint" in journal.failed
        assert failures == 1 and any(glog.failed is not None for glog in logs)
        fsync.fail_checkpoint = False
        for glog in logs:
            await glog.close()


async def test_a_batch_too_big_for_the_journal_is_synced_directly(tmp_path: Path) -> None:
    fsync = Fsync()
    async with _small_journal(tmp_path, fsync) as writer:
        logs = await _groups(tmp_path, writer, 2)
        journal = writer.journal
        assert journal is not None
        pos, segment = journal.pos, fsync.segment
        await _round(logs, 1, size=100 << 10)
        assert journal.pos == pos and fsync.segment >= segment + 2
        assert journal.failed is None
        for glog in logs:
            await glog.close()


def test_a_corrupt_entry_path_in_a_valid_record_stops_the_redo(tmp_path: Path) -> None:
    import struct
    import zlib

    from phxq.plog import journal as j

    body = struct.pack("<HQI", 5, 0, 1) + b"../xx" + b"!"
    head = struct.pack(
        "<4sQII",
        b"PXJR",
        1,
        len(body),
        zlib.crc32(body, zlib.crc32(struct.pack("<QI", 1, len(body)))),
    )
    data = j._header(1, 0) + head + body
    (tmp_path / JOURNAL_FILES[1]).write_bytes(data.ljust(64 << 10, b"\0"))
    with pytest.raises(StorageError, match="bad segment path"):
        replay(tmp_path)


async def test_turning_the_journal_off_still_redoes_the_one_left_and_retires_it(
    tmp_path: Path,
) -> None:
    base = tmp_path / "data"
    async with LogWriter(journal_dir=base, journal_min_files=1) as writer:
        logs = await _groups(base, writer, 2)
        for instance in range(1, 6):
            await _round(logs, instance)
        crashed = _crash_copy(base, tmp_path / "crashed", lose_segments=True)
        for glog in logs:
            await glog.close()
    async with LogWriter(journal_dir=crashed, journal_bytes=0) as writer:
        assert writer.journal is None
        assert not any((crashed / name).exists() for name in JOURNAL_FILES)
        for g in range(2):
            glog = await GroupLog.open(crashed / f"g{g:04d}", g, writer, segment_bytes=SEG)
            assert {i: v for i, (_, v) in glog.recovered.accepted.items()} == {
                i: _value(g, i) for i in range(1, 6)
            }
            await glog.close()
