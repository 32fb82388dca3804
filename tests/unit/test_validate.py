"""phxq.validate: one set of checks for values from outside, with typed errors naming the field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq import validate
from phxq.errors import BadArgument, ProtocolError


def _error(check: Any, *args: Any, **kwargs: Any) -> BadArgument | ProtocolError:
    with pytest.raises((BadArgument, ProtocolError)) as info:
        check(*args, **kwargs)
    return info.value  # type: ignore[return-value]


@pytest.mark.parametrize("value", [True, False, -1, 1.0, "3", None, [1], 1 << 64])
def test_integer_refuses_what_is_not_an_unsigned_64_bit_int(value: Any) -> None:
    error = _error(validate.integer, value, "limit")
    assert type(error) is BadArgument
    assert error.data == {"field": "limit"}
    assert error.message.startswith("limit must be an unsigned 64-bit integer, got ")


def test_integer_bounds_and_the_error_type_of_decoders() -> None:
    assert validate.integer(0, "n") == 0
    assert validate.integer((1 << 64) - 1, "n") == (1 << 64) - 1
    assert validate.integer(5, "n", minimum=1, maximum=5) == 5
    assert "in [1, 5]" in _error(validate.integer, 6, "n", minimum=1, maximum=5).message
    assert ">= 1" in _error(validate.integer, 0, "n", minimum=1).message
    assert validate.integer(1 << 70, "offset", maximum=None) == 1 << 70
    assert ">= 0" in _error(validate.integer, -1, "offset", maximum=None).message
    error = _error(validate.integer, "x", "instance", error=ProtocolError)
    assert type(error) is ProtocolError and error.data == {"field": "instance"}


@pytest.mark.parametrize("value", [True, math.nan, math.inf, -math.inf, "1", None])
def test_number_refuses_bools_strings_and_what_is_not_finite(value: Any) -> None:
    error = _error(validate.number, value, "wait", unit="seconds")
    assert error.message.startswith("wait must be a number of seconds, got ")
    assert error.data == {"field": "wait"}


def test_number_bounds_are_inclusive_except_above() -> None:
    assert validate.number(0, "t", minimum=0, maximum=60) == 0.0
    assert validate.number(60, "t", minimum=0, maximum=60) == 60.0
    assert isinstance(validate.number(3, "t"), float)
    assert "in [0, 60]" in _error(validate.number, 61, "t", minimum=0, maximum=60).message
    assert "in (0, 10]" in _error(validate.number, 0, "ttl", above=0, maximum=10).message
    assert validate.number(0.001, "ttl", above=0) == 0.001


def test_names_are_non_empty_bounded_strings_and_text_may_be_empty() -> None:
    assert validate.name("orders", "topic") == "orders"
    for bad in ("", "x" * 257, b"orders", None, 5):
        error = _error(validate.name, bad, "topic")
        assert "topic must be a non-empty string of at most 256 characters" in error.message
    assert validate.name("x" * 1000, "id", max_chars=None) == "x" * 1000
    assert validate.text("", "prefix", max_chars=3) == ""
    assert "at most 3" in _error(validate.text, "abcd", "prefix", max_chars=3).message
    assert validate.flag(False, "paused") is False
    assert "true or false" in _error(validate.flag, 0, "paused").message


def test_param_reads_a_map_and_refuses_anything_else() -> None:
    assert validate.param({"a": 1}, "a") == 1
    assert validate.param({}, "a") is None
    assert _error(validate.param, [1], "a").data == {"field": "params"}


@settings(max_examples=50)
@given(st.recursive(st.none() | st.integers() | st.text() | st.binary(), st.lists, max_leaves=50))
def test_shown_is_short_whatever_the_value(value: Any) -> None:
    assert len(validate.shown(value)) <= 63


def test_shown_survives_nesting_beyond_the_recursion_limit() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    assert validate.shown(value).startswith("[[[")
