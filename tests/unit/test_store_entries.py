"""Store log entries round-trip, reject anything malformed with ProtocolError, and routing is
stable."""

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phxq.errors import BadArgument, ProtocolError
from phxq.routing import (
    MAX_MESSAGES_PER_INSTANCE,
    group_for_queue,
    make_offset,
    queue_for_key,
    split_offset,
)
from phxq.store.entries import (
    CommitEntry,
    EnqueueEntry,
    Message,
    ReplayEntry,
    decode_entry,
    encode_entry,
    instance_messages,
)

text = st.text(min_size=1, max_size=20)
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
messages = st.builds(
    Message,
    payload=st.binary(max_size=64),
    key=st.none() | st.text(max_size=10),
    headers=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    dedup_id=st.none() | st.text(max_size=10),
)
entries = st.one_of(
    st.builds(
        EnqueueEntry,
        topic=text,
        queue=u64,
        messages=st.lists(messages, min_size=1, max_size=5).map(tuple),
        enqueued_at=st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.builds(CommitEntry, consumer_group=text, topic=text, queue=u64, offset=u64, token=u64),
    st.builds(
        CommitEntry,
        consumer_group=text,
        topic=text,
        queue=u64,
        offset=u64,
        token=u64,
        check=st.just(True),
        expect=st.none() | u64,
    ),
    st.builds(ReplayEntry, consumer_group=text, topic=text, queue=u64, offset=u64, replay_id=text),
)


@given(entries)
def test_every_entry_round_trips(entry: object) -> None:
    assert decode_entry(encode_entry(entry)) == entry  # type: ignore[arg-type]


def _decodes_cleanly_or_raises_protocol_error(data: bytes) -> None:
    try:
        entry = decode_entry(data)
    except ProtocolError:
        return
    # whatever decodes is a valid entry: it survives another round trip unchanged
    assert decode_entry(encode_entry(entry)) == entry


@given(st.binary(max_size=200))
def test_no_byte_string_crashes_the_decoder(data: bytes) -> None:
    _decodes_cleanly_or_raises_protocol_error(data)


@given(entries, st.data())
def test_corrupted_entries_decode_or_raise_protocol_error(
    entry: object, data: st.DataObject
) -> None:
    raw = bytearray(encode_entry(entry))  # type: ignore[arg-type]
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        _decodes_cleanly_or_raises_protocol_error(candidate)


def _fields(*fields: object) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


@pytest.mark.parametrize(
    "raw",
    [
        _fields(9, "t"),  # unknown tag
        _fields(True, "g", "t", 0, 1, 1),  # bool is not a tag
        _fields(2, "g", "t", -1, 1, 1),  # negative queue
        _fields(2, "g", "t", 0, 1, 1.5),  # float token
        _fields(2, "", "t", 0, 1, 1),  # empty consumer group
        _fields(3, "g", "t", 0, 1),  # replay without id
        _fields(1, "t", 0, [], 1.0),  # enqueue without messages
        _fields(1, "t", 0, [["text payload", None, {}, None]], 1.0),  # payload must be bin
        _fields(1, "t", 0, [[b"p", None, {"k": 1}, None]], 1.0),  # header value not a str
        _fields(1, "t", 0, [[b"p", 7, {}, None]], 1.0),  # key not a str
        _fields(1, "t", 0, [[b"p", None, {}, None]], math.inf),  # infinite time
        _fields(1, "t", 0, [[b"p", None, {}, None]], "now"),
        msgpack.packb({"tag": 1}),
        b"",
        b"\xc1",
        _fields(2, "g", "t", 0, 1, 1) + b"\x00",  # trailing bytes
        _fields(2, "g", "t", 0, 1, 1, 5),  # expect not wrapped in an array
        _fields(2, "g", "t", 0, 1, 1, [-1]),  # negative expect
        _fields(2, "g", "t", 0, 1, 1, [1, 2]),  # two expects
        _fields(2, "g", "t", 0, 1, 1, [None], 0),  # too many fields
    ],
)
def test_malformed_entries_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_entry(raw)


def test_instance_messages_counts_every_decodable_enqueue_message_in_item_order() -> None:
    a = EnqueueEntry("t", 0, (Message(b"a1"), Message(b"a2")), 1.0)
    b = EnqueueEntry("u", 3, (Message(b"b1"),), 2.0)
    items = [
        encode_entry(a),
        b"garbage",
        encode_entry(CommitEntry("g", "t", 0, 0, 1)),
        encode_entry(b),
    ]
    flat = instance_messages(items)
    assert [(e.topic, m.payload) for e, m in flat] == [("t", b"a1"), ("t", b"a2"), ("u", b"b1")]


# -------------------------------------------------------------------------------- routing


def test_queue_for_key_is_a_fixed_crc32_mapping() -> None:
    # Pinned values: changing the hash would move every key to another queue.
    # 0xCBF43926 is the published CRC-32 check value of "123456789".
    assert queue_for_key("123456789", 1 << 32) == 0xCBF43926
    assert queue_for_key("user-42", 8) == 3
    assert queue_for_key("", 8) == 0
    assert queue_for_key("ключ", 1000) == queue_for_key("ключ", 1000)


@given(st.text(), st.integers(1, 10_000))
def test_queue_for_key_is_in_range(key: str, queues: int) -> None:
    assert 0 <= queue_for_key(key, queues) < queues


def test_group_for_queue_is_queue_modulo_groups() -> None:
    assert [group_for_queue(q, 4) for q in range(6)] == [0, 1, 2, 3, 0, 1]


@given(u64, st.integers(0, MAX_MESSAGES_PER_INSTANCE - 1))
def test_offsets_split_back_and_order_by_instance_then_index(instance: int, index: int) -> None:
    offset = make_offset(instance, index)
    assert split_offset(offset) == (instance, index)
    assert make_offset(instance + 1, 0) > offset


@pytest.mark.parametrize(
    "call",
    [
        lambda: queue_for_key("k", 0),
        lambda: group_for_queue(-1, 4),
        lambda: group_for_queue(1, 0),
        lambda: make_offset(1, MAX_MESSAGES_PER_INSTANCE),
        lambda: make_offset(-1, 0),
        lambda: split_offset(-5),
    ],
)
def test_routing_rejects_invalid_arguments(call: object) -> None:
    with pytest.raises(BadArgument):
        call()  # type: ignore[operator]
