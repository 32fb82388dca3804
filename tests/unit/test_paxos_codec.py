"""Wire codec (malformed input), batch values and chain checksums of the Paxos core."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq.errors import ProtocolError
from phxq.paxos import (
    Accept,
    Ballot,
    PreVoteReply,
    chain_checksum,
    decode_batch,
    decode_message,
    encode_batch,
    encode_message,
)

# Every message's round trip, and decoding arbitrary or mutated bytes: test_paxos_codec_fuzz.py.


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=14), st.lists(msgpack_values, max_size=7))
def test_well_formed_msgpack_with_wrong_shapes_raises_protocol_error(
    tag: int, fields: list[object]
) -> None:
    data = msgpack.packb([tag, *fields], use_bin_type=True)
    with contextlib.suppress(ProtocolError):
        decode_message(data)


@pytest.mark.parametrize(
    "raw",
    [
        [4, 1, 2, [1, 1], 0, b"v"],  # instance 0
        [4, 1, 2, [1, 1], 5, "text"],  # value not bytes
        [4, 1, 2, [1, True], 5, b"v"],  # bool is not an int
        [4, 1, -2, [1, 1], 5, b"v"],  # negative sender
        [4, 1, 2, [1, 1], 5],  # missing field
        [6, 1, 2, [1, 1], 9, 3],  # Chosen first > last
        [11, 1, 2, [1, 1]],  # PreVote without chosen_up_to
        [12, 1, 2, [1, 1], 1, [0, 0], 5],  # PreVoteReply: granted is not a bool
        [12, 1, 2, [1, 1], True, [0, 0], -5],  # PreVoteReply: negative chosen_up_to
        [99, 1, 2],  # unknown tag
        {"tag": 4},  # not an array
    ],
)
def test_malformed_messages_are_rejected(raw: object) -> None:
    with pytest.raises(ProtocolError):
        decode_message(msgpack.packb(raw, use_bin_type=True))


def test_truncated_message_is_rejected() -> None:
    data = encode_message(
        Accept(group=1, sender=2, ballot=Ballot(3, 2), instance=9, value=b"x" * 50)
    )
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_message(data[:cut])


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_batches_round_trip_and_empty_is_the_noop(items: list[bytes]) -> None:
    value = encode_batch(items)
    assert decode_batch(value) == items
    assert (value == b"") == (not items)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=100))
def test_bad_batch_values_raise_protocol_error(value: bytes) -> None:
    try:
        items = decode_batch(value)
    except ProtocolError:
        return
    assert all(isinstance(i, bytes) for i in items) and items


def test_chain_checksum_is_a_64_bit_chain_over_instance_and_value() -> None:
    c1 = chain_checksum(0, 1, b"a")
    assert 0 <= c1 < 1 << 64
    assert chain_checksum(c1, 2, b"b") != chain_checksum(c1, 2, b"c")
    assert chain_checksum(c1, 2, b"b") != chain_checksum(c1, 3, b"b")
    assert chain_checksum(0, 1, b"a") == c1  # deterministic
    assert chain_checksum(c1, 2, b"b") != chain_checksum(chain_checksum(0, 1, b"x"), 2, b"b")


def test_prevote_reply_travels_with_its_bool() -> None:
    msg = PreVoteReply(
        group=3, sender=2, ballot=Ballot(7, 1), granted=False, promised=Ballot(6, 3), chosen_up_to=9
    )
    assert msgpack.unpackb(encode_message(msg), raw=False) == [12, 3, 2, [7, 1], False, [6, 3], 9]
    assert decode_message(encode_message(msg)) == msg
