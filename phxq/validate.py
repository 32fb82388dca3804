"""Checks of values that come from outside: RPC params, stored entries, runtime settings.

Each check returns the value (typed) or raises ``error`` (``BadArgument`` by default; decoders
of stored or wire data pass ``ProtocolError``) whose message names the field and shows the
value briefly, and whose ``data`` is ``{"field": field}``, so a client can tell which argument
was wrong without parsing the text. Pure: no I/O, no clock.

::

    integer(value, field, *, minimum=0, maximum=MAX_U64, error=BadArgument) -> int  # None: no max
    number(value, field, *, minimum=None, maximum=None, above=None, unit="", error=...) -> float
    name(value, field, *, max_chars=MAX_NAME_CHARS, error=...) -> str     # non-empty string
    text(value, field, *, max_chars=None, error=...) -> str               # any string
    flag(value, field, *, error=...) -> bool
    param(params, field) -> Any                  # params[field], or None when absent
    shown(value, limit=60) -> str                # a short, cheap repr for error messages

``bool`` is never an integer or a number here (msgpack and JSON keep them apart, and
``True`` as a count is always a caller's mistake). Numbers must be finite.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from phxq.errors import BadArgument, PhxqError

MAX_U64 = (1 << 64) - 1
MAX_NAME_CHARS = 256  # topic, group, lock and key names (they are stored)

ErrorType = type[PhxqError]


def _fail(error: ErrorType, field: str, expected: str, value: Any) -> PhxqError:
    return error(f"{field} must be {expected}, got {shown(value)}", {"field": field})


def integer(
    value: Any,
    field: str,
    *,
    minimum: int = 0,
    maximum: int | None = MAX_U64,
    error: ErrorType = BadArgument,
) -> int:
    """An ``int`` (not a bool) in ``[minimum, maximum]`` (``maximum=None``: no upper bound)."""
    if type(value) is int and minimum <= value and (maximum is None or value <= maximum):
        return value
    if maximum == MAX_U64 and minimum == 0:
        expected = "an unsigned 64-bit integer"
    elif maximum is None or maximum == MAX_U64:
        expected = f"an integer >= {minimum}"
    else:
        expected = f"an integer in [{minimum}, {maximum}]"
    raise _fail(error, field, expected, value)


def number(
    value: Any,
    field: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    unit: str = "",
    error: ErrorType = BadArgument,
) -> float:
    """A finite ``int`` or ``float`` (not a bool), ``>= minimum``, ``> above``, ``<= maximum``
    (each bound optional), as a float. ``unit`` (e.g. ``"seconds"``) only words the error."""
    if (
        type(value) in (int, float)
        and math.isfinite(value)
        and (minimum is None or value >= minimum)
        and (above is None or value > above)
        and (maximum is None or value <= maximum)
    ):
        return float(value)
    expected = f"a number of {unit}" if unit else "a number"
    low = f"[{minimum:g}" if minimum is not None else f"({above:g}" if above is not None else ""
    if low or maximum is not None:
        low = low or "(-inf"
        high = f"{maximum:g}]" if maximum is not None else "inf)"
        expected = f"{expected} in {low}, {high}"
    raise _fail(error, field, expected, value)


def name(
    value: Any,
    field: str,
    *,
    max_chars: int | None = MAX_NAME_CHARS,
    error: ErrorType = BadArgument,
) -> str:
    """A non-empty ``str`` of at most ``max_chars`` characters (``None``: any length)."""
    if type(value) is str and value and (max_chars is None or len(value) <= max_chars):
        return value
    limit = "" if max_chars is None else f" of at most {max_chars} characters"
    raise _fail(error, field, f"a non-empty string{limit}", value)


def text(
    value: Any, field: str, *, max_chars: int | None = None, error: ErrorType = BadArgument
) -> str:
    """A ``str`` (empty allowed) of at most ``max_chars`` characters, if given."""
    if type(value) is str and (max_chars is None or len(value) <= max_chars):
        return value
    limit = "" if max_chars is None else f" of at most {max_chars} characters"
    raise _fail(error, field, f"a string{limit}", value)


def flag(value: Any, field: str, *, error: ErrorType = BadArgument) -> bool:
    if type(value) is bool:
        return value
    raise _fail(error, field, "true or false", value)


def param(params: Any, field: str) -> Any:
    """``params[field]``, or ``None`` when it is absent; ``BadArgument`` when ``params`` is
    not a map (every RPC takes a map of named params)."""
    if type(params) is not dict:
        raise BadArgument(f"params must be a map, got {shown(params)}", {"field": "params"})
    return params.get(field)


def shown(value: Any, limit: int = 60) -> str:
    """A short printable form of a value decoded from the wire, for error messages: never a
    full ``repr`` (of megabytes, or of an array nested past Python's recursion limit), and at
    a cost independent of the value's size."""
    text = _short(value, 3, limit)
    return text if len(text) <= limit + 3 else text[:limit] + "..."


def _short(value: Any, depth: int, limit: int) -> str:
    if isinstance(value, str | bytes):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        if depth == 0:
            return "[...]"
        inner = [_short(v, depth - 1, limit) for v in value[:4]]
        return "[" + ", ".join(inner) + (", ...]" if len(value) > 4 else "]")
    if isinstance(value, dict):
        if depth == 0:
            return "{...}"
        pairs = [
            f"{_short(k, 0, limit)}: {_short(v, depth - 1, limit)}"
            for k, v in itertools.islice(value.items(), 4)
        ]
        return "{" + ", ".join(pairs) + (", ...}" if len(value) > 4 else "}")
    return f"<{type(value).__name__}>"  # msgpack ext types and the like
