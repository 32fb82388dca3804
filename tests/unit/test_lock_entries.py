"""The lock log entry codec: round trips, limits, and no byte string crashes the decoder."""

from __future__ import annotations

import contextlib
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq.errors import BadArgument, ProtocolError
from phxq.lock.entries import (
    MAX_NAME_CHARS,
    MAX_TTL,
    MAX_VALUE_BYTES,
    Acquire,
    EpochStart,
    KvDelete,
    KvPut,
    Release,
    Renew,
    Sweep,
    check_name,
    check_rid,
    check_ttl,
    check_value,
    decode_entry,
    encode_entry,
)

E = (3, 2)

EXAMPLES = [
    EpochStart(E, 12.5),
    Acquire(E, 1.0, "queue/3", "consumer-a", 5.0),
    Renew(E, 1.0, "queue/3", "consumer-a", 7 << 20),
    Release(E, 1.0, "queue/3", "consumer-a", 7 << 20, b"rid"),
    Release(E, 1.0, "queue/3", "consumer-a", 7 << 20),
    KvPut(E, 2.0, "members/a", {"load": 3, "queues": [1, 2]}, None, 3.0, b"r"),
    KvPut(E, 2.0, "settings/billing", b"\x00raw", 0, None, None),
    KvDelete(E, 2.0, "members/a", 17, b"x"),
    Sweep(E, 99.0),
]


@pytest.mark.parametrize("entry", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_entry_round_trips(entry: object) -> None:
    assert decode_entry(encode_entry(entry)) == entry  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_no_byte_string_makes_decode_raise_anything_but_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_entry(data)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**64 - 1),
            st.floats(),
            st.text(max_size=5),
            st.binary(),
        ),
        max_size=9,
    )
)
def test_arrays_of_wrong_fields_are_protocol_errors(fields: list[object]) -> None:
    with contextlib.suppress(ProtocolError):
        decode_entry(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "fields",
    [
        [2, 1, 1, 1.0, "n", "o", -1.0],  # negative ttl
        [2, 1, 1, 1.0, "n", "o", MAX_TTL * 2],  # huge ttl
        [2, 1, 1, 1.0, "", "o", 1.0],  # empty name
        [2, 1, 1, 1.0, 5, "o", 1.0],  # name not a string
        [3, 1, 1, 1.0, "n", "o", -5],  # negative token
        [2, 1, 1, "soon", "n", "o", 1.0],  # time not a float
        [2, 1, 1, math.nan, "n", "o", 1.0],
        [1, -1, 1, 1.0],  # negative round
        [1, 1, 1, 1.0, "extra"],
        [42, 1, 1, 1.0],  # unknown tag
        [True, 1, 1, 1.0],
    ],
)
def test_malformed_entries_are_protocol_errors(fields: list[object]) -> None:
    with pytest.raises(ProtocolError):
        decode_entry(msgpack.packb(fields, use_bin_type=True))


def test_checks_raise_bad_argument_for_callers() -> None:
    for bad in (None, "", 3, b"bytes", "x" * (MAX_NAME_CHARS + 1)):
        with pytest.raises(BadArgument):
            check_name(bad, "name")
    for bad_ttl in (0, -1, True, "5", math.inf, math.nan, MAX_TTL + 1, None):
        with pytest.raises(BadArgument):
            check_ttl(bad_ttl)
    assert check_ttl(3) == 3.0
    with pytest.raises(BadArgument):
        check_value(b"x" * MAX_VALUE_BYTES)
    with pytest.raises(BadArgument):
        check_value({1, 2})  # not msgpack-able
    with pytest.raises(BadArgument):
        check_rid("text")
    assert check_rid(None) is None
