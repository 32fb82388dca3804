"""The JSON Schema subset the gateway's route table is written in, and its validator.

The same schema objects are served in the OpenAPI document and used here to check requests, so
what the document promises is what the gateway enforces. Pure: no I/O.

:func:`validate` checks a decoded JSON value against a schema and raises
:class:`phxq.errors.BadArgument` naming the first offending place (``body.messages[3].key``).
:func:`parse_param` turns the text of a path, query or header parameter into the typed value
its schema declares (integer, number, string, boolean), checked the same way.

Keywords understood (anything else in a schema is documentation only): ``type`` (a name or a
list of names), ``properties``, ``required``, ``additionalProperties`` (false or a schema),
``maxProperties``, ``items``, ``minItems``, ``maxItems``, ``minimum``, ``maximum``,
``minLength``, ``maxLength``, ``pattern``, ``enum``. Strings must be valid Unicode (no lone
surrogates): they are stored as UTF-8.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any, Final

from phxq.errors import BadArgument

INT64_MAX: Final = (1 << 63) - 1
NAME_MAX: Final = 256  # topic, consumer group and lock owner names (the store's limit)


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    raise ValueError(f"schema type {kind!r} is not supported")


def _any_type_ok(kinds: list[str], value: Any) -> bool:
    return any(_type_ok(k, value) for k in kinds)


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def validate(schema: dict[str, Any], value: Any, where: str = "body") -> None:
    """Raise ``BadArgument`` unless ``value`` satisfies ``schema``."""
    kinds = schema.get("type")
    if kinds is not None:
        # One type (the common case) without building a list and a generator per value.
        ok = _type_ok(kinds, value) if isinstance(kinds, str) else _any_type_ok(kinds, value)
        if not ok:
            names = [kinds] if isinstance(kinds, str) else list(kinds)
            raise BadArgument(f"{where} must be {' or '.join(names)}, got {_show(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise BadArgument(f"{where} must be one of {schema['enum']}, got {_show(value)}")
    if isinstance(value, str):
        _check_string(schema, value, where)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise BadArgument(f"{where} must be >= {schema['minimum']}, got {value!r}")
        if "maximum" in schema and value > schema["maximum"]:
            raise BadArgument(f"{where} must be <= {schema['maximum']}, got {value!r}")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise BadArgument(f"{where} needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise BadArgument(f"{where} holds at most {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                validate(items, item, f"{where}[{i}]")
    elif isinstance(value, dict):
        _check_object(schema, value, where)


def _check_string(schema: dict[str, Any], value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadArgument(f"{where} is not valid Unicode text") from None
    if len(value) < schema.get("minLength", 0):
        raise BadArgument(f"{where} must have at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise BadArgument(f"{where} must have at most {schema['maxLength']} characters")
    if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
        raise BadArgument(f"{where} must match {schema['pattern']}, got {_show(value)}")


def _check_object(schema: dict[str, Any], value: dict[str, Any], where: str) -> None:
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise BadArgument(f"{where} holds at most {schema['maxProperties']} entries")
    for name in schema.get("required", ()):
        if name not in value:
            raise BadArgument(f"{where}.{name} is required")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = props.get(name)
        if sub is not None:
            validate(sub, item, f"{where}.{name}")
        elif extra is False:
            raise BadArgument(f"{where}.{_show(name)} is not a known field")
        elif isinstance(extra, dict):
            _check_string({}, name, f"{where} key")
            validate(extra, item, f"{where}.{name}")


def parse_param(schema: dict[str, Any], text: str, where: str) -> Any:
    """The typed value of a parameter given as ``text`` (query, path or header), checked
    against ``schema``; ``BadArgument`` if it does not parse or fit."""
    kinds = schema.get("type", "string")
    kind = kinds if isinstance(kinds, str) else next(k for k in kinds if k != "null")
    value: Any = text
    if kind == "integer":
        if not re.fullmatch(r"[+-]?\d{1,20}", text.strip()):
            raise BadArgument(f"{where} must be an integer, got {_show(text)}")
        value = int(text)
    elif kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise BadArgument(f"{where} must be a number, got {_show(text)}") from None
        if not math.isfinite(value):
            raise BadArgument(f"{where} must be a finite number, got {_show(text)}")
    elif kind == "boolean":
        if text not in ("true", "false"):
            raise BadArgument(f"{where} must be true or false, got {_show(text)}")
        value = text == "true"
    validate(schema, value, where)
    return value


# ----------------------------------------------------------------------- shared schemas

NAME: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": NAME_MAX,
    "pattern": r"^[^\x00-\x1f]+$",
}
OFFSET: Final = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
QUEUE: Final = {"type": "integer", "minimum": 0, "maximum": 1 << 31}
TOKEN: Final = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
HEADERS: Final = {
    "type": "object",
    "maxProperties": 64,
    "additionalProperties": {"type": "string"},
}
PROBLEM: Final = {
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "phxq's error code (phxq.errors)"},
        "detail": {"type": "string"},
        "retry_after": {"type": "integer"},
    },
}
