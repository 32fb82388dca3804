"""The wire format: every frame kind round-trips; malformed input is always a ProtocolError."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phxq.errors import NotMaster, ProtocolError
from phxq.net import frames
from phxq.net.frames import ErrorReply, FrameDecoder, Notify, Request, Response, decode_body


def framed(body: bytes) -> bytes:
    return frames.prefix(body) + body


def test_request_round_trips() -> None:
    body = frames.encode_request(7, "enqueue", {"topic": "t", "payload": b"\x00\xff"})
    assert decode_body(body) == Request(7, "enqueue", {"topic": "t", "payload": b"\x00\xff"})


def test_response_round_trips_with_bytes_and_int_keys() -> None:
    body = frames.encode_response(1, {1: b"a", "k": [1, 2]})
    assert decode_body(body) == Response(1, {1: b"a", "k": [1, 2]})


def test_error_round_trips_as_the_same_exception_class() -> None:
    body = frames.encode_exception(3, NotMaster(hint="127.0.0.1:7102"))
    reply = decode_body(body)
    assert isinstance(reply, ErrorReply)
    exc = reply.to_exception()
    assert isinstance(exc, NotMaster)
    assert exc.hint == "127.0.0.1:7102"


def test_error_with_unencodable_data_still_encodes_without_data() -> None:
    body = frames.encode_exception(None, ProtocolError("bad", {"obj": object()}))
    assert decode_body(body) == ErrorReply(None, "protocol", "bad", {})


def test_notify_round_trips_and_is_recognised_by_peek() -> None:
    body = frames.encode_notify("px", b"paxos")
    assert decode_body(body) == Notify("px", b"paxos")
    assert frames.frame_kind(body) == frames.NOTIFY
    assert frames.frame_kind(frames.encode_request(1, "m", None)) == frames.REQUEST


@pytest.mark.parametrize(
    "obj",
    [
        {"not": "an array"},
        [],
        [9, 1, "m", None],
        [True, 1, "m", None],
        [0, -1, "m", None],
        [0, "id", "m", None],
        [0, 1, 42, None],
        [0, 1, "m"],
        [1, 1],
        [2, 1, 5, "msg", {}],
        [2, 1, "code", "msg", [1]],
        [3, b"method", None],
    ],
)
def test_wrong_msgpack_types_are_protocol_errors(obj: object) -> None:
    with pytest.raises(ProtocolError):
        decode_body(msgpack.packb(obj, use_bin_type=True))


def test_trailing_bytes_after_the_body_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_body(frames.encode_notify("px", None) + b"\x00")


def test_request_id_is_recovered_from_a_malformed_request() -> None:
    body = msgpack.packb([0, 42, 17, None])
    assert frames.request_id_of(body) == 42
    assert frames.request_id_of(b"\xc1garbage") is None


@given(st.binary(max_size=200))
def test_decode_body_raises_nothing_but_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_body(data)


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_decoder_returns_the_same_bodies_however_the_stream_is_split(
    bodies: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(framed(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(max_frame=1000)
    out: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[start:cut]))
        start = cut
    assert out == bodies
    assert decoder.buffered == 0


def test_oversized_length_is_rejected_as_soon_as_the_header_arrives() -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(struct.pack(">I", 101))  # no body byte has arrived yet
    assert info.value.data == {"size": 101, "max": 100}
    assert decoder.buffered == 0
    with pytest.raises(ProtocolError):
        decoder.feed(b"more")


def test_frame_of_exactly_max_size_is_accepted() -> None:
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(framed(b"x" * 10)) == [b"x" * 10]


def test_complete_frames_before_an_oversized_one_are_not_lost() -> None:
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(framed(b"ok")) == [b"ok"]
    with pytest.raises(ProtocolError):
        decoder.feed(struct.pack(">I", 1 << 31))
