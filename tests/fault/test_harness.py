"""The fault harness: schedules, lock-node peers in the config, the on-disk damage helpers (run
on files, without daemons), and a power loss of every store of a real harness."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

import phxq
from phxq.config import ConfigError, parse_config
from phxq.devcluster import ProcessCluster, _Proc, free_ports, write_dev_config
from phxq.plog.journal import journaled_ranges
from tests.integration.conftest import wait_until
from tools.fault.cluster import TOPIC, FaultCluster, HarnessOptions
from tools.fault.nemesis import ALONE_KINDS, DISK_KINDS, KINDS, make_schedule


def test_schedule_is_a_function_of_the_seed() -> None:
    assert make_schedule(7, 30.0) == make_schedule(7, 30.0)
    assert make_schedule(7, 30.0) != make_schedule(8, 30.0)


def test_schedule_starts_with_every_required_kind_and_fits_the_duration() -> None:
    schedule = make_schedule(3, 60.0, require=KINDS)
    assert {f.kind for f in schedule[: len(KINDS)]} == set(KINDS)
    short = make_schedule(3, 20.0)
    assert all(f.at + f.duration <= 20.0 for f in short)


def test_required_kinds_are_kept_even_past_the_duration() -> None:
    schedule = make_schedule(4, 5.0, require=KINDS)
    assert sorted(f.kind for f in schedule) == sorted(KINDS)


def test_without_overlap_faults_come_one_at_a_time() -> None:
    schedule = make_schedule(5, 120.0, overlap=0.0)
    for a, b in pairwise(schedule):
        assert b.at >= a.at + a.duration


def test_with_overlap_some_faults_run_at_the_same_time() -> None:
    schedule = make_schedule(1, 120.0, overlap=0.6)
    assert any(b.at < a.at + a.duration for a, b in pairwise(schedule))


@pytest.mark.parametrize("seed", range(20))
def test_disk_faults_and_power_loss_all_never_overlap_another_fault(seed: int) -> None:
    assert DISK_KINDS | {"power_loss_all"} <= ALONE_KINDS
    schedule = make_schedule(seed, 120.0, overlap=0.6, require=KINDS)
    assert "power_loss_all" in {f.kind for f in schedule}
    for a in schedule:
        for b in schedule:
            overlapping = a.id != b.id and a.at <= b.at < a.at + a.duration
            if overlapping:
                assert a.kind not in ALONE_KINDS and b.kind not in ALONE_KINDS, (a, b)


def test_lock_nodes_dial_their_peers_where_the_config_says() -> None:
    text = """
[[store]]
id = 1
addr = "127.0.0.1:1"
data = "/s1"
[[lock]]
id = 1
addr = "127.0.0.1:2"
data = "/l1"
peers = { "2" = "127.0.0.1:9" }
[[lock]]
id = 2
addr = "127.0.0.1:3"
data = "/l2"
"""
    cfg = parse_config(text)
    assert cfg.lock(1).peers == ((2, "127.0.0.1:9"),)
    with pytest.raises(ConfigError, match=r"lock\[1\]\.peers\.2: this lock itself"):
        parse_config(text + 'peers = { "2" = "127.0.0.1:9" }\n')


def _segment(path: Path, written: bytes, size: int = 4096) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(written + b"\0" * (size - len(written)))


def _harness(tmp_path: Path) -> FaultCluster:
    return FaultCluster(HarnessOptions(data=tmp_path))


def test_tear_tail_zeroes_only_the_end_of_the_newest_segment(tmp_path: Path) -> None:
    harness = _harness(tmp_path)
    node_dir = harness.data_dir("store", 1)
    for g in range(8):
        _segment(node_dir / f"g{g:04d}" / "0000000001.plog", b"\x01" * 1000)
        _segment(node_dir / f"g{g:04d}" / "0000000002.plog", b"\x02" * 500)
    cuts = harness.tear_tail(1, random.Random(1))
    assert cuts, "some groups must be cut"
    for cut in cuts:
        data = (node_dir / cut["segment"]).read_bytes()
        assert cut["segment"].endswith("0000000002.plog")
        assert data[: cut["at"]] == b"\x02" * cut["at"]
        assert 1 <= cut["bytes"] <= 64 and cut["at"] + cut["bytes"] == 500
        assert data[cut["at"] :].strip(b"\0") == b""
    untouched = {f"g{g:04d}/0000000002.plog" for g in range(8)} - {c["segment"] for c in cuts}
    for name in untouched:
        assert (node_dir / name).read_bytes()[:500] == b"\x02" * 500


def test_flip_byte_changes_one_byte_in_the_middle_of_the_written_part(tmp_path: Path) -> None:
    harness = _harness(tmp_path)
    path = harness.data_dir("store", 2) / "g0001" / "0000000001.plog"
    _segment(path, b"\x05" * 1000)
    flipped = harness.flip_byte(2, 1, random.Random(1))
    assert flipped is not None
    data = path.read_bytes()
    changed = [i for i in range(1000) if data[i] != 0x05]
    assert changed == [flipped["at"]] and 250 <= flipped["at"] <= 750
    assert data[flipped["at"]] == 0x05 ^ 0xFF
    assert harness.flip_byte(2, 3, random.Random(1)) is None  # nothing written in g0003


@pytest.mark.integration
async def test_lose_power_zeroes_journaled_bytes_and_the_restarted_stores_redo_them(
    tmp_path: Path,
) -> None:
    harness = FaultCluster(HarnessOptions(data=tmp_path / "h", consumers=()))
    acked: dict[bytes, phxq.Ack] = {}
    try:
        await harness.start()
        async with phxq.Client(harness.client_addresses) as client:
            # Concurrent enqueues over every queue: writer batches span several groups, so
            # they are made durable by journal records.
            for start in range(0, 1200, 200):
                payloads = [f"m{i}".encode() for i in range(start, start + 200)]
                acks = await asyncio.gather(
                    *(client.enqueue(TOPIC, p, key=f"k{i % 23}") for i, p in enumerate(payloads))
                )
                acked.update(zip(payloads, acks, strict=True))
        assert len({a.queue for a in acked.values()}) > 1
        stores = [1, 2, 3]
        harness.kill_stores(stores)
        assert not any(harness.running("store", n) for n in stores)
        before: dict[tuple[Path, int], bytes] = {}
        for n in stores:
            for path, offset, length in journaled_ranges(harness.data_dir("store", n)):
                if path.exists():
                    before[(path, offset)] = path.read_bytes()[offset : offset + length]
        kept: dict[int, list[tuple[Path, int, int, int]]] = {n: [] for n in stores}
        zeroed = {n: harness.lose_power(n, kept[n]) for n in stores}
        assert all(z > 0 for z in zeroed.values()), f"nothing was journaled: {zeroed}"
        assert sum(zeroed.values()) == sum(len(b) for b in before.values())
        assert any(b.strip(b"\0") for b in before.values())
        for (path, offset), data in before.items():
            assert path.read_bytes()[offset : offset + len(data)] == bytes(len(data))
        assert all(harness.unrestored(kept[n]) for n in stores)
        for n in stores:
            harness.restart("store", n)
        assert harness.cluster is not None
        await harness.cluster.wait_ready_async(timeout=60)
        # The redo wrote back exactly what was zeroed (the segments are append-only).
        for (path, offset), data in before.items():
            if path.exists():
                assert path.read_bytes()[offset : offset + len(data)] == data, (path, offset)
        assert [harness.unrestored(kept[n]) for n in stores] == [[], [], []]

        async with phxq.Client(harness.client_addresses) as client:
            served: dict[tuple[int, int], bytes] = {}

            async def read_all() -> bool:
                served.clear()
                for q in {a.queue for a in acked.values()}:
                    after = None
                    while page := await client.dequeue(
                        None, TOPIC, queue=q, after=after, limit=1000
                    ):
                        served.update(((q, m.offset), m.payload) for m in page)
                        after = page[-1].offset
                return len(served) >= len(acked)

            await wait_until(read_all, 30, "every acknowledged message served again")
        for payload, ack in acked.items():
            assert served.get((ack.queue, ack.offset)) == payload, (payload, ack)
    finally:
        await harness.stop()


def test_a_daemon_that_died_by_itself_before_a_fault_touched_it_is_reported(
    tmp_path: Path,
) -> None:
    config = write_dev_config(tmp_path, nodes=3, groups=1, store_ports=free_ports(3))
    harness = _harness(tmp_path)
    harness.cluster = ProcessCluster(config)
    assert harness.cluster.log_dir is not None
    (harness.cluster.log_dir / "store2.log").write_text("replay failed: boom\n")
    died = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    harness.cluster.procs[("store", "2")] = _Proc("store", "2", popen=died)
    harness.cluster.procs[("store", "3")] = _Proc("store", "3", popen=killed)
    died.wait()
    harness.kill_stores([2, 3])
    assert killed.returncode == -signal.SIGKILL
    assert len(harness.crashes) == 1
    assert harness.crashes[0].startswith("store 2 exited with 3") and "boom" in harness.crashes[0]
    harness.kill_stores([2, 3])  # the same incarnation is reported once
    assert len(harness.crashes) == 1
