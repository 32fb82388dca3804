"""The Paxos wire codec under Hypothesis: one encoder and one decoder per message, no byte
string crashes the decoder, and whatever it accepts is exactly what the bytes said."""

from __future__ import annotations

import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq.errors import ProtocolError
from phxq.paxos import (
    Accept,
    Accepted,
    AcceptedEntry,
    Ballot,
    CatchupReply,
    CatchupRequest,
    Chosen,
    ChosenEntry,
    Heartbeat,
    HeartbeatAck,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Reject,
    decode_message,
    encode_message,
)
from phxq.paxos.messages import _DECODERS, _ENCODERS, _WIRE, Message

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
inst = st.integers(min_value=1, max_value=(1 << 64) - 1)
ballots = st.builds(Ballot, u64, u64)
blobs = st.binary(max_size=32)
hdr = {"group": u64, "sender": u64}

messages = st.one_of(
    st.builds(Prepare, **hdr, ballot=ballots, from_instance=inst),
    st.builds(
        Promise,
        **hdr,
        ballot=ballots,
        from_instance=inst,
        accepted=st.lists(st.builds(AcceptedEntry, inst, ballots, blobs), max_size=3).map(tuple),
        chosen_up_to=u64,
    ),
    st.builds(Reject, **hdr, ballot=ballots, promised=ballots),
    st.builds(Accept, **hdr, ballot=ballots, instance=inst, value=blobs),
    st.builds(Accepted, **hdr, ballot=ballots, instance=inst),
    st.tuples(inst, inst).flatmap(
        lambda fl: st.builds(
            Chosen, **hdr, ballot=ballots, first=st.just(min(fl)), last=st.just(max(fl))
        )
    ),
    st.builds(Heartbeat, **hdr, ballot=ballots, chosen_up_to=u64, checksum=u64),
    st.builds(HeartbeatAck, **hdr, ballot=ballots, chosen_up_to=u64),
    st.builds(CatchupRequest, **hdr, from_instance=inst, max_count=u64),
    st.builds(
        CatchupReply,
        **hdr,
        entries=st.lists(st.builds(ChosenEntry, inst, blobs, u64), max_size=3).map(tuple),
        chosen_up_to=u64,
    ),
    st.builds(PreVote, **hdr, ballot=ballots, chosen_up_to=u64),
    st.builds(
        PreVoteReply,
        **hdr,
        ballot=ballots,
        granted=st.booleans(),
        promised=ballots,
        chosen_up_to=u64,
    ),
)


def test_every_message_type_has_exactly_one_encoder_and_one_decoder() -> None:
    classes = set(typing.get_args(Message))
    assert set(_ENCODERS) == set(_WIRE) == classes
    assert sorted(_DECODERS) == sorted(tag for tag, _ in _WIRE.values())


@settings(max_examples=500)
@given(messages)
def test_every_message_round_trips_and_carries_its_tag(msg: Message) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert msgpack.unpackb(data, raw=False)[0] == _WIRE[type(msg)][0]


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_no_byte_string_crashes_the_decoder(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except ProtocolError:
        return
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=300)
@given(messages, st.data())
def test_a_mutated_encoding_decodes_exactly_or_raises_protocol_error(
    msg: Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(encoded) - 1)))
        if op == "flip" and encoded:
            encoded[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del encoded[at:]
        else:
            encoded[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode_message(bytes(encoded))
    except ProtocolError:
        return
    # Accepted: then it is exactly what the bytes say, field by field (msgpack may spell a
    # value in more than one way, so the values are compared, not the bytes).
    assert msgpack.unpackb(encode_message(decoded), raw=False) == msgpack.unpackb(
        bytes(encoded), raw=False
    )


field = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.binary(max_size=4),
    st.text(max_size=3),
    st.lists(st.one_of(st.integers(min_value=-3, max_value=3), st.booleans()), max_size=3),
    st.lists(st.lists(st.integers(min_value=0, max_value=3), max_size=3), max_size=2),
)


@settings(max_examples=1000)
@given(st.integers(min_value=0, max_value=14), st.lists(field, max_size=7))
def test_arrays_of_any_shape_decode_exactly_or_raise_protocol_error(
    tag: int, fields: list[Any]
) -> None:
    raw = [tag, *fields]
    data = msgpack.packb(raw, use_bin_type=True)
    try:
        msg = decode_message(data)
    except ProtocolError:
        return
    assert encode_message(msg) == data


@settings(max_examples=300)
@given(messages, st.data())
def test_a_field_of_the_wrong_type_is_named_in_the_error(msg: Message, data: st.DataObject) -> None:
    raw = msgpack.unpackb(encode_message(msg), raw=False)
    names = list(type(msg).__dataclass_fields__)
    index = data.draw(st.integers(0, len(names) - 1))
    raw[index + 1] = "not this"  # a string is right for no field of any message
    with pytest.raises(ProtocolError, match=rf"{type(msg).__name__}\.{names[index]}: expected"):
        decode_message(msgpack.packb(raw, use_bin_type=True))
