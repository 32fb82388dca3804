"""The scheduled-message and transaction entries keep their on-disk bytes and their errors.

The golden bytes and error texts below were computed from the codec as it stood before its
shared parts moved into one module; a log written by any earlier build must read back the
same, and a new build must write exactly what an older replica reads.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from phxq.errors import PhxqError
from phxq.store.entries import (
    CommitEntry,
    EnqueueEntry,
    Message,
    ReplayEntry,
    decode_entry,
    encode_entry,
    instance_messages,
    peek_entry,
)
from phxq.store.schedule_entries import (
    CancelEntry,
    ReleaseEntry,
    RollEntry,
    ScheduleEntry,
    encode_scheduled,
    instance_scheduled,
)
from phxq.store.txn_entries import (
    HELD,
    DecideEntry,
    DiscardEntry,
    PrepareEntry,
    TxnReleaseEntry,
    encode_txn,
)

_M1 = Message(b"p1", "k", {"a": "b"}, "d1")
_M2 = Message(b"\x00\xff", None, {}, None)
_M3 = Message(b"", "k3", {"x": "y", "z": ""}, "d3")
_PLAIN = (Message(b"p1", "k", {"a": "b"}), _M2)
_T = 1_700_000_000.25

ENTRIES: dict[str, Any] = {
    "enqueue": EnqueueEntry("orders", 3, (_M1, _M2), _T),
    "commit": CommitEntry("g", "orders", 3, 77, 5),
    "commit_check": CommitEntry("g", "orders", 3, 77, 5, check=True, expect=None),
    "replay": ReplayEntry("g", "orders", 3, 12, "r-1"),
    "schedule": ScheduleEntry("orders", 3, (_M1, _M2, _M3), _T, (_T + 60, _T + 0.5, 1e10)),
    "release": ReleaseEntry("orders", 3, _T + 61, (1 << 32, (9 << 32) + 4), (_T + 60, _T), _PLAIN),
    "cancel": CancelEntry((7 << 32) + 1, _T + 60),
    "roll": RollEntry("orders", 0, (5, 6), (_T, HELD), _PLAIN),
    "prepare": PrepareEntry(
        "tx-1", 2, 1, 30.0, "producers", "orders", 3, _T, (_M1, _M2), ((2, 1), (4, 1))
    ),
    "prepare_minimal": PrepareEntry("tx-2", 0, 0, 0.5, None, "t", 0, _T, (_M2,)),
    "decide_commit": DecideEntry("tx-1", True, _T + 1, "producer committed"),
    "decide_rollback": DecideEntry("tx-1", False, _T + 2, ""),
    "txn_release": TxnReleaseEntry("tx-1", "orders", 3, _T + 3, (8, 9), (HELD, HELD), _PLAIN),
    "discard": DiscardEntry("tx-2", _T + 4),
}

_BODY = msgpack.packb([[b"a", None, {}]], use_bin_type=True)
_BODY2 = msgpack.packb([[b"a", None, {}], [b"b", "k", {}]], use_bin_type=True)
_LONG_TXN = "x" * 129

MALFORMED: dict[str, list[Any]] = {
    "schedule_fields": [5, "t", 0, _T, [_T], [None]],
    "schedule_due_empty": [5, "t", 0, _T, [], [], _BODY],
    "schedule_due_int": [5, "t", 0, _T, [1], [None], _BODY],
    "schedule_due_inf": [5, "t", 0, _T, [float("inf")], [None], _BODY],
    "schedule_dedup_count": [5, "t", 0, _T, [_T], [None, None], _BODY],
    "schedule_dedup_type": [5, "t", 0, _T, [_T], [3], _BODY],
    "schedule_body_str": [5, "t", 0, _T, [_T], [None], "body"],
    "schedule_topic": [5, "", 0, _T, [_T], [None], _BODY],
    "schedule_queue": [5, "t", -1, _T, [_T], [None], _BODY],
    "schedule_at": [5, "t", 0, 3, [_T], [None], _BODY],
    "schedule_body_count": [5, "t", 0, _T, [_T, _T], [None, None], _BODY],
    "schedule_body_garbage": [5, "t", 0, _T, [_T], [None], b"\xc1"],
    "release_fields": [6, "t", 0, _T, [1], [_T]],
    "release_ids_count": [6, "t", 0, _T, [1, 2], [_T], _BODY],
    "release_ids_type": [6, "t", 0, _T, ["1"], [_T], _BODY],
    "release_due": [6, "t", 0, _T, [1], "due", _BODY],
    "release_body": [6, "t", 0, _T, [1], [_T], None],
    "release_at": [6, "t", 0, float("nan"), [1], [_T], _BODY],
    "release_body_count": [6, "t", 0, _T, [1], [_T], _BODY2],
    "cancel_fields": [7, 1],
    "cancel_id": [7, -1, _T],
    "cancel_due": [7, 1, "x"],
    "roll_fields": [8, "t", 0, [1], [_T]],
    "roll_ids": [8, "t", 0, [1], [_T, _T], _BODY],
    "roll_body": [8, "t", 0, [1], [_T], b"\x93"],
    "roll_topic": [8, 3, 0, [1], [_T], _BODY],
    "prepare_fields": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 1.0, None],
    "prepare_dedup_empty": [9, "t", 0, _T, [], _BODY, "tx", 0, 0, 1.0, None, []],
    "prepare_dedup_type": [9, "t", 0, _T, [b"d"], _BODY, "tx", 0, 0, 1.0, None, []],
    "prepare_body": [9, "t", 0, _T, [None], [], "tx", 0, 0, 1.0, None, []],
    "prepare_txn_long": [9, "t", 0, _T, [None], _BODY, _LONG_TXN, 0, 0, 1.0, None, []],
    "prepare_txn_type": [9, "t", 0, _T, [None], _BODY, 5, 0, 0, 1.0, None, []],
    "prepare_home": [9, "t", 0, _T, [None], _BODY, "tx", -2, 0, 1.0, None, []],
    "prepare_part": [9, "t", 0, _T, [None], _BODY, "tx", 0, 1.5, 1.0, None, []],
    "prepare_timeout_zero": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 0.0, None, []],
    "prepare_timeout_big": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 86400.5, None, []],
    "prepare_timeout_int": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 1, None, []],
    "prepare_producer": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 1.0, 7, []],
    "prepare_expect_type": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 1.0, None, {}],
    "prepare_expect_pair": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 1.0, None, [[1]]],
    "prepare_expect_group": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 1.0, None, [[-1, 0]]],
    "prepare_expect_part": [9, "t", 0, _T, [None], _BODY, "tx", 0, 0, 1.0, None, [[1, "0"]]],
    "prepare_body_count": [9, "t", 0, _T, [None, None], _BODY, "tx", 0, 0, 1.0, None, []],
    "decide_fields": [10, "tx", True, _T],
    "decide_commit": [10, "tx", 1, _T, ""],
    "decide_reason": [10, "tx", True, _T, None],
    "decide_at": [10, "tx", True, "now", ""],
    "decide_txn": [10, _LONG_TXN, True, _T, ""],
    "txn_release_fields": [11, "t", 0, _T, [1], [_T], _BODY],
    "txn_release_ids": [11, "t", 0, _T, [1], [], _BODY, "tx"],
    "txn_release_body": [11, "t", 0, _T, [1], [_T], 1, "tx"],
    "txn_release_txn": [11, "t", 0, _T, [1], [_T], _BODY, None],
    "txn_release_body_count": [11, "t", 0, _T, [1], [_T], _BODY2, "tx"],
    "discard_fields": [12, "tx"],
    "discard_txn": [12, "", _T],
    "discard_at": [12, "tx", float("-inf")],
}


def encode_any(entry: Any) -> bytes:
    """The wire bytes of an entry of any of the three entry modules."""
    if isinstance(entry, EnqueueEntry | CommitEntry | ReplayEntry):
        return encode_entry(entry)
    if isinstance(entry, ScheduleEntry | ReleaseEntry | CancelEntry | RollEntry):
        return encode_scheduled(entry)
    return encode_txn(entry)


def _outcome(fn: Any, data: bytes) -> str | None:
    try:
        fn(data)
    except PhxqError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# encode_any(ENTRIES[name]).hex(), computed before the codecs shared a module.
GOLDEN: dict[str, str] = {
    "enqueue": "9604a66f726465727303cb41d954fc4010000092a26431c0c4149293c4027031a16b81a161a16293c40200ffc080",
    "commit": "9602a167a66f7264657273034d05",
    "commit_check": "9702a167a66f7264657273034d0591c0",
    "replay": "9603a167a66f7264657273030ca3722d31",
    "schedule": "9705a66f726465727303cb41d954fc4010000093cb41d954fc4f100000cb41d954fc40300000cb4202a05f2000000093a26431c0a26433c4229393c4027031a16b81a161a16293c40200ffc08093c400a26b3382a178a179a17aa0",
    "release": "9706a66f726465727303cb41d954fc4f50000092cf0000000100000000cf000000090000000492cb41d954fc4f100000cb41d954fc40100000c4149293c4027031a16b81a161a16293c40200ffc080",
    "cancel": "9307cf0000000700000001cb41d954fc4f100000",
    "roll": "9608a66f72646572730092050692cb41d954fc40100000cb4330000000000000c4149293c4027031a16b81a161a16293c40200ffc080",
    "prepare": "9c09a66f726465727303cb41d954fc4010000092a26431c0c4149293c4027031a16b81a161a16293c40200ffc080a474782d310201cb403e000000000000a970726f64756365727392920201920401",
    "prepare_minimal": "9c09a17400cb41d954fc4010000091c0c4089193c40200ffc080a474782d320000cb3fe0000000000000c090",
    "decide_commit": "950aa474782d31c3cb41d954fc40500000b270726f647563657220636f6d6d6974746564",
    "decide_rollback": "950aa474782d31c2cb41d954fc40900000a0",
    "txn_release": "980ba66f726465727303cb41d954fc40d0000092080992cb4330000000000000cb4330000000000000c4149293c4027031a16b81a161a16293c40200ffc080a474782d31",
    "discard": "930ca474782d32cb41d954fc41100000",
}

# (decode_entry, peek_entry) of each MALFORMED entry: the error each raised, or None.
ERRORS: dict[str, tuple[str | None, str | None]] = {
    "schedule_fields": (
        "ProtocolError: schedule entry: expected 7 fields, got 6",
        "ProtocolError: schedule entry: expected 7 fields, got 6",
    ),
    "schedule_due_empty": (
        "ProtocolError: schedule entry due: expected a non-empty array of times",
        "ProtocolError: schedule entry due: expected a non-empty array of times",
    ),
    "schedule_due_int": (
        "ProtocolError: schedule entry due: expected a finite float, got 1",
        "ProtocolError: schedule entry due: expected a finite float, got 1",
    ),
    "schedule_due_inf": (
        "ProtocolError: schedule entry due: expected a finite float, got inf",
        "ProtocolError: schedule entry due: expected a finite float, got inf",
    ),
    "schedule_dedup_count": (
        "ProtocolError: schedule entry: one dedup id (or nil) per message",
        "ProtocolError: schedule entry: one dedup id (or nil) per message",
    ),
    "schedule_dedup_type": (
        "ProtocolError: schedule entry: a dedup id must be a string or nil",
        "ProtocolError: schedule entry: a dedup id must be a string or nil",
    ),
    "schedule_body_str": (
        "ProtocolError: schedule entry: body must be bin",
        "ProtocolError: schedule entry: body must be bin",
    ),
    "schedule_topic": (
        "ProtocolError: schedule entry topic must be a non-empty string, got ''",
        "ProtocolError: schedule entry topic must be a non-empty string, got ''",
    ),
    "schedule_queue": (
        "ProtocolError: schedule entry queue must be an unsigned 64-bit integer, got -1",
        "ProtocolError: schedule entry queue must be an unsigned 64-bit integer, got -1",
    ),
    "schedule_at": (
        "ProtocolError: schedule entry enqueued_at: expected a finite float, got 3",
        "ProtocolError: schedule entry enqueued_at: expected a finite float, got 3",
    ),
    "schedule_body_count": ("ProtocolError: enqueue body: expected an array of 2 messages", None),
    "schedule_body_garbage": ("ProtocolError: undecodable enqueue body: FormatError: ", None),
    "release_fields": (
        "ProtocolError: release entry: expected 7 fields, got 6",
        "ProtocolError: release entry: expected 7 fields, got 6",
    ),
    "release_ids_count": (
        "ProtocolError: release entry: one id per due time",
        "ProtocolError: release entry: one id per due time",
    ),
    "release_ids_type": (
        "ProtocolError: release entry id must be an unsigned 64-bit integer, got '1'",
        "ProtocolError: release entry id must be an unsigned 64-bit integer, got '1'",
    ),
    "release_due": (
        "ProtocolError: release entry due: expected a non-empty array of times",
        "ProtocolError: release entry due: expected a non-empty array of times",
    ),
    "release_body": (
        "ProtocolError: release entry: body must be bin",
        "ProtocolError: release entry: body must be bin",
    ),
    "release_at": (
        "ProtocolError: release entry released_at: expected a finite float, got nan",
        "ProtocolError: release entry released_at: expected a finite float, got nan",
    ),
    "release_body_count": ("ProtocolError: enqueue body: expected an array of 1 messages", None),
    "cancel_fields": (
        "ProtocolError: cancel entry: expected 3 fields, got 2",
        "ProtocolError: cancel entry: expected 3 fields, got 2",
    ),
    "cancel_id": (
        "ProtocolError: cancel entry id must be an unsigned 64-bit integer, got -1",
        "ProtocolError: cancel entry id must be an unsigned 64-bit integer, got -1",
    ),
    "cancel_due": (
        "ProtocolError: cancel entry due: expected a finite float, got 'x'",
        "ProtocolError: cancel entry due: expected a finite float, got 'x'",
    ),
    "roll_fields": (
        "ProtocolError: roll entry: expected 6 fields, got 5",
        "ProtocolError: roll entry: expected 6 fields, got 5",
    ),
    "roll_ids": (
        "ProtocolError: roll entry: one id per due time",
        "ProtocolError: roll entry: one id per due time",
    ),
    "roll_body": (
        "ProtocolError: undecodable enqueue body: ValueError: 3 exceeds max_array_len(1)",
        None,
    ),
    "roll_topic": (
        "ProtocolError: roll entry topic must be a non-empty string, got 3",
        "ProtocolError: roll entry topic must be a non-empty string, got 3",
    ),
    "prepare_fields": (
        "ProtocolError: prepare entry: expected 12 fields, got 11",
        "ProtocolError: prepare entry: expected 12 fields, got 11",
    ),
    "prepare_dedup_empty": (
        "ProtocolError: prepare entry: one dedup id (or nil) per message",
        "ProtocolError: prepare entry: one dedup id (or nil) per message",
    ),
    "prepare_dedup_type": (
        "ProtocolError: prepare entry: a dedup id must be a string or nil",
        "ProtocolError: prepare entry: a dedup id must be a string or nil",
    ),
    "prepare_body": (
        "ProtocolError: prepare entry: body must be bin",
        "ProtocolError: prepare entry: body must be bin",
    ),
    "prepare_txn_long": (
        "ProtocolError: transaction id longer than 128 characters",
        "ProtocolError: transaction id longer than 128 characters",
    ),
    "prepare_txn_type": (
        "ProtocolError: transaction id must be a non-empty string, got 5",
        "ProtocolError: transaction id must be a non-empty string, got 5",
    ),
    "prepare_home": (
        "ProtocolError: prepare entry home must be an unsigned 64-bit integer, got -2",
        "ProtocolError: prepare entry home must be an unsigned 64-bit integer, got -2",
    ),
    "prepare_part": (
        "ProtocolError: prepare entry part must be an unsigned 64-bit integer, got 1.5",
        "ProtocolError: prepare entry part must be an unsigned 64-bit integer, got 1.5",
    ),
    "prepare_timeout_zero": (
        "ProtocolError: prepare entry: timeout out of range",
        "ProtocolError: prepare entry: timeout out of range",
    ),
    "prepare_timeout_big": (
        "ProtocolError: prepare entry: timeout out of range",
        "ProtocolError: prepare entry: timeout out of range",
    ),
    "prepare_timeout_int": (
        "ProtocolError: prepare entry timeout: expected a finite float, got 1",
        "ProtocolError: prepare entry timeout: expected a finite float, got 1",
    ),
    "prepare_producer": (
        "ProtocolError: prepare entry producer group must be a non-empty string, got 7",
        "ProtocolError: prepare entry producer group must be a non-empty string, got 7",
    ),
    "prepare_expect_type": (
        "ProtocolError: prepare entry: expect must be an array of [group, part]",
        "ProtocolError: prepare entry: expect must be an array of [group, part]",
    ),
    "prepare_expect_pair": (
        "ProtocolError: prepare entry: expect must be an array of [group, part]",
        "ProtocolError: prepare entry: expect must be an array of [group, part]",
    ),
    "prepare_expect_group": (
        "ProtocolError: prepare entry expected group must be an unsigned 64-bit integer, got -1",
        "ProtocolError: prepare entry expected group must be an unsigned 64-bit integer, got -1",
    ),
    "prepare_expect_part": (
        "ProtocolError: prepare entry expected part must be an unsigned 64-bit integer, got '0'",
        "ProtocolError: prepare entry expected part must be an unsigned 64-bit integer, got '0'",
    ),
    "prepare_body_count": ("ProtocolError: enqueue body: expected an array of 2 messages", None),
    "decide_fields": (
        "ProtocolError: decide entry: expected 5 fields, got 4",
        "ProtocolError: decide entry: expected 5 fields, got 4",
    ),
    "decide_commit": (
        "ProtocolError: decide entry: commit must be a boolean",
        "ProtocolError: decide entry: commit must be a boolean",
    ),
    "decide_reason": (
        "ProtocolError: decide entry: reason must be a string",
        "ProtocolError: decide entry: reason must be a string",
    ),
    "decide_at": (
        "ProtocolError: decide entry decided_at: expected a finite float, got 'now'",
        "ProtocolError: decide entry decided_at: expected a finite float, got 'now'",
    ),
    "decide_txn": (
        "ProtocolError: transaction id longer than 128 characters",
        "ProtocolError: transaction id longer than 128 characters",
    ),
    "txn_release_fields": (
        "ProtocolError: transaction release entry: expected 8 fields, got 7",
        "ProtocolError: transaction release entry: expected 8 fields, got 7",
    ),
    "txn_release_ids": (
        "ProtocolError: transaction release entry due: expected a non-empty array of times",
        "ProtocolError: transaction release entry due: expected a non-empty array of times",
    ),
    "txn_release_body": (
        "ProtocolError: transaction release entry: body must be bin",
        "ProtocolError: transaction release entry: body must be bin",
    ),
    "txn_release_txn": (
        "ProtocolError: transaction id must be a non-empty string, got None",
        "ProtocolError: transaction id must be a non-empty string, got None",
    ),
    "txn_release_body_count": (
        "ProtocolError: enqueue body: expected an array of 1 messages",
        None,
    ),
    "discard_fields": (
        "ProtocolError: discard entry: expected 3 fields, got 2",
        "ProtocolError: discard entry: expected 3 fields, got 2",
    ),
    "discard_txn": (
        "ProtocolError: transaction id must be a non-empty string, got ''",
        "ProtocolError: transaction id must be a non-empty string, got ''",
    ),
    "discard_at": (
        "ProtocolError: discard entry discarded_at: expected a finite float, got -inf",
        "ProtocolError: discard entry discarded_at: expected a finite float, got -inf",
    ),
}

# (topic, payload, dedup_id, due) of instance_scheduled(_BATCH), and (topic, enqueued_at,
# payload, dedup_id) of instance_messages(_BATCH): the ordinals that make the offsets.
_BATCH = (
    "enqueue",
    "schedule",
    "release",
    "prepare",
    "roll",
    "txn_release",
    "cancel",
    "decide_commit",
    "prepare_minimal",
)
_SCHEDULED = [
    ("orders", b"p1", "d1", 1700000060.25),
    ("orders", b"\x00\xff", None, 1700000000.75),
    ("orders", b"", "d3", 10000000000.0),
    ("orders", b"p1", "d1", HELD),
    ("orders", b"\x00\xff", None, HELD),
    ("orders", b"p1", None, 1700000000.25),
    ("orders", b"\x00\xff", None, HELD),
    ("t", b"\x00\xff", None, HELD),
]
_READABLE = [
    ("orders", 1700000000.25, b"p1", "d1"),
    ("orders", 1700000000.25, b"\x00\xff", None),
    ("orders", 1700000061.25, b"p1", None),
    ("orders", 1700000061.25, b"\x00\xff", None),
    ("orders", 1700000003.25, b"p1", None),
    ("orders", 1700000003.25, b"\x00\xff", None),
]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_entry_kind_encodes_to_its_golden_bytes_and_back(name: str) -> None:
    entry = ENTRIES[name]
    data = bytes.fromhex(GOLDEN[name])
    assert encode_any(entry) == data
    assert decode_entry(data) == entry
    peek_entry(data)  # a well-formed head peeks without error


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_every_malformed_entry_fails_with_its_golden_error(name: str) -> None:
    data = msgpack.packb(MALFORMED[name], use_bin_type=True)
    assert (_outcome(decode_entry, data), _outcome(peek_entry, data)) == ERRORS[name]


def test_instance_ordinals_of_a_mixed_batch_are_unchanged() -> None:
    items = [bytes.fromhex(GOLDEN[name]) for name in _BATCH]
    scheduled = instance_scheduled(items)
    assert [(e.topic, m.payload, m.dedup_id, due) for e, m, due in scheduled] == _SCHEDULED
    readable = instance_messages(items)
    assert [(e.topic, e.enqueued_at, m.payload, m.dedup_id) for e, m in readable] == _READABLE
