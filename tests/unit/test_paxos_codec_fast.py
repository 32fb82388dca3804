"""The codec's fast paths for steady-state messages agree exactly with the generic codec."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq.errors import ProtocolError
from phxq.paxos import Accept, Accepted, Ballot, Chosen, Heartbeat, HeartbeatAck
from phxq.paxos.messages import _decode_generic, _encode_generic, _fast_decode, encode_message

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
inst = st.integers(min_value=1, max_value=(1 << 64) - 1)
ballots = st.builds(Ballot, u64, u64)
hdr = {"group": u64, "sender": u64}

hot_messages = st.one_of(
    st.builds(Accept, **hdr, ballot=ballots, instance=inst, value=st.binary(max_size=64)),
    st.builds(Accepted, **hdr, ballot=ballots, instance=inst),
    st.builds(Chosen, **hdr, ballot=ballots, first=inst, last=inst),
    st.builds(Heartbeat, **hdr, ballot=ballots, chosen_up_to=u64, checksum=u64),
    st.builds(HeartbeatAck, **hdr, ballot=ballots, chosen_up_to=u64),
)


@given(hot_messages)
def test_fast_encoding_is_byte_identical_to_the_generic_one(msg: Any) -> None:
    assert encode_message(msg) == _encode_generic(msg)


field = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.binary(max_size=4),
    st.text(max_size=3),
    st.lists(st.one_of(st.integers(min_value=-3, max_value=3), st.booleans()), max_size=3),
)


@settings(max_examples=1000)
@given(st.integers(min_value=3, max_value=13), st.lists(field, min_size=0, max_size=6))
def test_fast_decoding_agrees_with_the_generic_decoder(tag: int, fields: list[Any]) -> None:
    raw = [tag, *fields]
    fast = _fast_decode(raw)
    try:
        generic = _decode_generic(list(raw))
    except ProtocolError:
        assert fast is None  # the fast path never accepts what the generic decoder rejects
        return
    assert fast is None or fast == generic


@given(hot_messages)
def test_fast_decoding_takes_every_well_formed_hot_message(msg: Any) -> None:
    raw = msgpack.unpackb(encode_message(msg), raw=False)
    if isinstance(msg, Chosen) and msg.first > msg.last:
        assert _fast_decode(raw) is None
    else:
        assert _fast_decode(raw) == msg
