"""Enqueue entries: version 2 (packed bodies) is written, version 1 (logs written before it)
is still read, by the state machine, the queue index rebuilt at recovery, and readers."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from phxq.errors import ProtocolError, StorageError
from phxq.paxos import GroupConfig, encode_batch
from phxq.plog import GroupLog, LogWriter
from phxq.replication.replica import GroupReplica
from phxq.routing import make_offset
from phxq.store.entries import (
    EnqueueEntry,
    EnqueueHead,
    Message,
    decode_entry,
    encode_enqueue,
    encode_enqueue_v1,
    encode_entry,
    instance_messages,
    peek_entry,
)
from phxq.store.service import _flatten
from phxq.store.state import Enqueued, StoreMachines, StoreState


def _v1(queue: int, payloads: list[bytes], ids: list[str], at: float) -> bytes:
    messages = tuple(
        Message(p, key=f"k{i}", headers={"h": "v"}, dedup_id=d)
        for i, (p, d) in enumerate(zip(payloads, ids, strict=True))
    )
    return encode_enqueue_v1(EnqueueEntry("orders", queue, messages, at))


def test_version_2_is_written_and_keeps_bodies_packed() -> None:
    wire = [[b"p1", "k", {"a": "b"}, "d1"], [b"p2", None, {}, None]]
    data = encode_enqueue("orders", 3, 12.5, wire)
    assert msgpack.unpackb(data)[0] == 4
    head = peek_entry(data)
    assert isinstance(head, EnqueueHead)
    assert (head.topic, head.queue, head.enqueued_at, head.dedup_ids) == (
        "orders",
        3,
        12.5,
        ["d1", None],
    )
    entry = decode_entry(data)
    assert entry == EnqueueEntry(
        "orders", 3, (Message(b"p1", "k", {"a": "b"}, "d1"), Message(b"p2")), 12.5
    )
    assert encode_entry(entry) == data


def test_version_1_entries_still_decode_and_peek() -> None:
    data = _v1(2, [b"a", b"b"], ["x", "y"], 5.0)
    head = peek_entry(data)
    assert isinstance(head, EnqueueHead) and head.dedup_ids == ["x", "y"]
    entry = decode_entry(data)
    assert isinstance(entry, EnqueueEntry)
    assert [m.payload for m in entry.messages] == [b"a", b"b"]


def test_a_body_that_does_not_match_its_head_is_a_protocol_error_and_unreadable() -> None:
    body = msgpack.packb([[b"only one", None, {}]], use_bin_type=True)
    data = msgpack.packb([4, "orders", 0, 1.0, ["a", "b"], body], use_bin_type=True)
    assert isinstance(peek_entry(data), EnqueueHead)  # applying counts 2 messages
    with pytest.raises(ProtocolError):
        decode_entry(data)
    # Readers never shift the ordinals the state machine assigned: they fail loudly.
    with pytest.raises(StorageError):
        instance_messages([data])
    state = StoreState(0, dedup_window=60.0)
    assert state.apply(1, [data]) == [
        Enqueued((make_offset(1, 0), make_offset(1, 1)), (False,) * 2)
    ]


async def test_recovery_reads_a_log_written_with_version_1_entries(tmp_path: Path) -> None:
    # A log as main wrote it before version 2: accepted and chosen records of v1 batches.
    values = {
        1: encode_batch([_v1(0, [b"a0", b"a1"], ["d-a0", "d-a1"], 100.0)]),
        2: encode_batch([_v1(1, [b"b0"], ["d-b0"], 101.0), _v1(0, [b"c0"], ["d-a0"], 102.0)]),
    }
    async with LogWriter() as writer:
        glog = await GroupLog.open(tmp_path, 0, writer)
        for instance, value in values.items():
            await glog.append_accept(instance, (1, 1), value)
            await glog.append_chosen(instance, (1, 1), instance, value)
        await glog.close()

    config = GroupConfig(group=0, node_id=1, members=(1, 2, 3))
    async with LogWriter() as writer:
        replica = await GroupReplica.open(
            config,
            tmp_path,
            lambda: GroupLog.open(tmp_path, 0, writer),
            StoreMachines(60.0),
            lambda *a: None,
            lambda *a: None,
        )
        try:
            state = replica.state
            assert isinstance(state, StoreState)
            assert state.applied_up_to == 2
            # "c0" reused the dedup id of "a0": a duplicate, stored once.
            assert dict(state.stats) == {("orders", 0): 2, ("orders", 1): 1}
            assert replica.glog.positions(("orders", 0), None, 10) == [(1, 0), (1, 1)]
            assert replica.glog.positions(("orders", 1), None, 10) == [(2, 0)]
            flat = _flatten(await replica.glog.read_value(2))
            assert [m.payload for _, m in flat] == [b"b0", b"c0"]
            assert [m.key for _, m in flat] == ["k0", "k0"]
            # A version-2 entry after them: dedup still sees the v1 originals.
            v2 = encode_enqueue(
                "orders", 0, 103.0, [[b"n", None, {}, "d-a1"], [b"m", None, {}, "n1"]]
            )
            results = state.apply(3, [v2])
            assert results == [Enqueued((make_offset(1, 1), make_offset(3, 1)), (True, False))]
            assert state.index_entries(3, [v2]) == [(("orders", 0), 1, 103.0)]
        finally:
            await replica.close()
