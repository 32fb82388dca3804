"""The frame fuzzer against real store and lock daemons: thousands of random and mutated
frames (a fixed seed), then 0 crashes, every reply typed, stored data unchanged but for the
well-behaved client's writes, no traceback in any daemon log. The 100k-frame run is slow."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.net.frames import encode_notify, encode_request
from phxq.net.loop import run
from phxq.paxos.ballot import Ballot
from phxq.paxos.messages import Heartbeat, encode_message
from phxq.replication.snapshot import Snapshot, encode_snapshot
from phxq.store.state import StoreState
from tools.fault.fuzz import CATEGORIES, Generator, classify, fuzz_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    ports = free_ports(6)
    path = write_dev_config(tmp_path, groups=4, store_ports=ports[:3], lock_ports=ports[3:])
    c = ProcessCluster(path, locks=True)
    try:
        c.start()
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.stop()


def test_fuzzing_live_daemons_changes_nothing_and_crashes_nothing(cluster: ProcessCluster) -> None:
    report = run(fuzz_cluster(cluster, frames=6000, seed=20261123))
    assert report.ok, report.summary()
    assert report.frames == 6000
    assert all(report.sent[c] > 0 for c in CATEGORIES), report.summary()
    assert report.poison_rejected == report.sent["write_poison"]
    assert report.data_unchanged and report.crashes == 0
    assert report.good_ops > 0 and not report.good_errors


@pytest.fixture
def secure_cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    ports = free_ports(6)
    path = write_dev_config(
        tmp_path, groups=4, store_ports=ports[:3], lock_ports=ports[3:], secure=True
    )
    c = ProcessCluster(path, locks=True)
    try:
        c.start()
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.stop()


def test_fuzzing_a_secured_cluster_as_a_member(secure_cluster: ProcessCluster) -> None:
    """The same fuzz inside TLS with a member certificate (past every door): the handlers and
    the Paxos decoder still take no harm, and the permission table answers unknown methods
    with a typed error."""
    report = run(fuzz_cluster(secure_cluster, frames=2000, seed=20261207))
    assert report.ok, report.summary()
    assert report.data_unchanged and report.crashes == 0
    assert report.good_ops > 0 and not report.good_errors


@pytest.mark.slow
def test_a_hundred_thousand_frames(cluster: ProcessCluster) -> None:
    report = run(fuzz_cluster(cluster, frames=100_000, seed=9))
    assert report.ok, report.summary()
    assert report.frames == 100_000


PX = encode_message(Heartbeat(group=1, sender=2, ballot=Ballot(3, 2), chosen_up_to=5, checksum=7))
SNAP = encode_snapshot(Snapshot(9, 1, StoreState(0, dedup_window=1.0).snapshot()))


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (encode_request(1, "enqueue", {"topic": "orders", "batches": []}), "skip"),
        (encode_request(1, "kv_put", {"key": "k", "value": 1}), "skip"),
        (encode_request(1, "dequeue", {"topic": "orders", "queue": 0, "wait": 5}), "skip"),
        (encode_request(1, "dequeue", {"topic": "orders", "queue": 0, "wait": "5"}), "reply"),
        (encode_request(1, "meta", {}), "reply"),
        (encode_notify("px", PX), "skip"),  # well-formed, from a member: forged, out of scope
        (encode_notify("px", PX[:-1]), "none"),
        (encode_notify("px", PX.replace(b"\x01\x02", b"\x09\x02", 1)), "none"),  # no group 9
        (encode_notify("snap", [1, SNAP]), "skip"),  # installable
        (encode_notify("snap", [1, SNAP[:-1] + bytes([SNAP[-1] ^ 0xFF])]), "none"),  # corrupt
        (b"\xc1", "reply"),
        (msgpack.packb([1, 5, "a response"]), "reply"),
    ],
)
def test_the_safety_net_keeps_writes_forgeries_and_long_polls_out(
    body: bytes, verdict: str
) -> None:
    assert classify(body, "store", 4, frozenset({1, 2, 3})) == verdict


def test_the_generator_is_deterministic_for_a_seed() -> None:
    def bodies(seed: int) -> list[bytes]:
        gen = Generator(random.Random(seed), {"orders": 8}, groups=4)
        shots = (gen.shot(c, "store") for c in CATEGORIES[:6] for _ in range(50))
        return [s.body for s in shots if s is not None]

    assert bodies(3) == bodies(3) != bodies(4)
