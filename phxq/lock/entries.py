"""The lock service's log entries (the items of a chosen Paxos batch) and their msgpack codec.

Public API::

    Epoch = tuple[int, int]                     # the proposing master's ballot (round, node)

    EpochStart(epoch, at)                       # a master starts its lease epoch
    Acquire(epoch, at, name, owner, ttl)
    Renew(epoch, at, name, owner, token)
    Release(epoch, at, name, owner, token, rid)
    KvPut(epoch, at, key, value, expect_version, ttl, rid)
    KvDelete(epoch, at, key, expect_version, rid)
    Sweep(epoch, at)                            # drop what expired by ``at``
    Entry = EpochStart | Acquire | Renew | Release | KvPut | KvDelete | Sweep

    encode_entry(entry) -> bytes
    decode_entry(data) -> Entry                 # ProtocolError (only) on anything malformed

    check_name(value, what, error=BadArgument) -> str          # lock names, owners, keys
    check_ttl(value, what="ttl", error=BadArgument) -> float
    check_version(value, what, error=BadArgument) -> int | None
    check_value(value, error=BadArgument) -> Any                # msgpack-able, size-limited
    check_rid(value, error=BadArgument) -> bytes | None

Every entry carries ``epoch`` and ``at``: the ballot of the master that proposed it and that
master's **monotonic** clock reading when it proposed it. Times of one epoch are comparable
(one clock); times of different epochs never are (see :mod:`phxq.lock.state`).

``rid`` is a caller's request id (random bytes): a retried ``Release``/``KvPut``/``KvDelete``
with the same ``rid`` gets the first attempt's answer instead of being applied twice.

Limits (checked the same way by the RPC handlers, with ``BadArgument``, and by the decoder,
with ``ProtocolError``): names, owners and keys are non-empty strings of at most
``MAX_NAME_CHARS`` characters; ``0 < ttl <= MAX_TTL`` seconds (finite); a value's msgpack
encoding is at most ``MAX_VALUE_BYTES``; versions and tokens are unsigned 64-bit integers.

Wire form: ``msgpack([tag, epoch_round, epoch_node, at, field, ...])``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgpack

from phxq import validate
from phxq.errors import BadArgument, PhxqError, ProtocolError
from phxq.net.frames import shown

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_RID_BYTES",
    "MAX_TTL",
    "MAX_VALUE_BYTES",
    "Acquire",
    "Entry",
    "Epoch",
    "EpochStart",
    "KvDelete",
    "KvPut",
    "Release",
    "Renew",
    "Sweep",
    "check_name",
    "check_rid",
    "check_ttl",
    "check_value",
    "check_version",
    "decode_entry",
    "encode_entry",
]

MAX_NAME_CHARS: Final = 256
MAX_TTL: Final = 3600.0
MAX_VALUE_BYTES: Final = 64 << 10
MAX_RID_BYTES: Final = 32
_MAX_U64: Final = (1 << 64) - 1

Epoch: TypeAlias = tuple[int, int]


@dataclass(frozen=True, slots=True)
class EpochStart:
    """The master with ballot ``epoch`` starts serving; ``at`` is on its clock, taken after it
    became master. Every lease it inherits is honoured for a full ttl (plus margin) from ``at``."""

    epoch: Epoch
    at: float


@dataclass(frozen=True, slots=True)
class Acquire:
    epoch: Epoch
    at: float
    name: str
    owner: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Renew:
    epoch: Epoch
    at: float
    name: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class Release:
    epoch: Epoch
    at: float
    name: str
    owner: str
    token: int
    rid: bytes | None = None


@dataclass(frozen=True, slots=True)
class KvPut:
    epoch: Epoch
    at: float
    key: str
    value: Any
    expect_version: int | None = None
    ttl: float | None = None
    rid: bytes | None = None


@dataclass(frozen=True, slots=True)
class KvDelete:
    epoch: Epoch
    at: float
    key: str
    expect_version: int | None = None
    rid: bytes | None = None


@dataclass(frozen=True, slots=True)
class Sweep:
    """Drop every lease and KV entry that expired by ``at`` (wakes KV watchers)."""

    epoch: Epoch
    at: float


Entry: TypeAlias = EpochStart | Acquire | Renew | Release | KvPut | KvDelete | Sweep

_TAGS: Final[dict[type, int]] = {
    EpochStart: 1,
    Acquire: 2,
    Renew: 3,
    Release: 4,
    KvPut: 5,
    KvDelete: 6,
    Sweep: 7,
}


# ------------------------------------------------------------------------------- checks


def check_name(value: Any, what: str, error: type[PhxqError] = BadArgument) -> str:
    return validate.name(value, what, max_chars=MAX_NAME_CHARS, error=error)


def check_ttl(value: Any, what: str = "ttl", error: type[PhxqError] = BadArgument) -> float:
    return validate.number(value, what, above=0, maximum=MAX_TTL, unit="seconds", error=error)


def check_uint(value: Any, what: str, error: type[PhxqError] = BadArgument) -> int:
    return validate.integer(value, what, error=error)


def check_version(value: Any, what: str, error: type[PhxqError] = BadArgument) -> int | None:
    return None if value is None else check_uint(value, what, error)


def check_value(value: Any, error: type[PhxqError] = BadArgument) -> Any:
    try:
        size = len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise error(f"value is not msgpack-able: {exc}") from None
    if size > MAX_VALUE_BYTES:
        raise error(f"value of {size} bytes exceeds {MAX_VALUE_BYTES} bytes")
    return value


def check_rid(value: Any, error: type[PhxqError] = BadArgument) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_RID_BYTES:
        raise error(f"rid must be 1..{MAX_RID_BYTES} bytes or nil, got {shown(value)}")
    return value


def _opt_ttl(value: Any, error: type[PhxqError]) -> float | None:
    return None if value is None else check_ttl(value, "ttl", error)


# ------------------------------------------------------------------------------- encode


def encode_entry(entry: Entry) -> bytes:
    """The wire bytes of ``entry`` (see the module docstring)."""
    tag = _TAGS.get(type(entry))
    if tag is None:
        raise TypeError(f"not a lock log entry: {entry!r}")
    fields: list[Any] = [tag, entry.epoch[0], entry.epoch[1], float(entry.at)]
    if isinstance(entry, Acquire):
        fields += [entry.name, entry.owner, float(entry.ttl)]
    elif isinstance(entry, Renew):
        fields += [entry.name, entry.owner, entry.token]
    elif isinstance(entry, Release):
        fields += [entry.name, entry.owner, entry.token, entry.rid]
    elif isinstance(entry, KvPut):
        fields += [entry.key, entry.value, entry.expect_version, entry.ttl, entry.rid]
    elif isinstance(entry, KvDelete):
        fields += [entry.key, entry.expect_version, entry.rid]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


# ------------------------------------------------------------------------------- decode

P = ProtocolError


def _fields(fields: list[Any], count: int, what: str) -> list[Any]:
    if len(fields) != 4 + count:
        raise ProtocolError(f"{what} entry: expected {4 + count} fields, got {len(fields)}")
    return fields[4:]


def _epoch_start(epoch: Epoch, at: float, fields: list[Any]) -> Entry:
    _fields(fields, 0, "epoch")
    return EpochStart(epoch, at)


def _sweep(epoch: Epoch, at: float, fields: list[Any]) -> Entry:
    _fields(fields, 0, "sweep")
    return Sweep(epoch, at)


def _acquire(epoch: Epoch, at: float, fields: list[Any]) -> Entry:
    name, owner, ttl = _fields(fields, 3, "acquire")
    return Acquire(
        epoch,
        at,
        check_name(name, "name", P),
        check_name(owner, "owner", P),
        check_ttl(ttl, "ttl", P),
    )


def _renew(epoch: Epoch, at: float, fields: list[Any]) -> Entry:
    name, owner, token = _fields(fields, 3, "renew")
    return Renew(
        epoch,
        at,
        check_name(name, "name", P),
        check_name(owner, "owner", P),
        check_uint(token, "token", P),
    )


def _release(epoch: Epoch, at: float, fields: list[Any]) -> Entry:
    name, owner, token, rid = _fields(fields, 4, "release")
    return Release(
        epoch,
        at,
        check_name(name, "name", P),
        check_name(owner, "owner", P),
        check_uint(token, "token", P),
        check_rid(rid, P),
    )


def _kv_put(epoch: Epoch, at: float, fields: list[Any]) -> Entry:
    key, value, expect, ttl, rid = _fields(fields, 5, "kv_put")
    return KvPut(
        epoch,
        at,
        check_name(key, "key", P),
        check_value(value, P),
        check_version(expect, "expect_version", P),
        _opt_ttl(ttl, P),
        check_rid(rid, P),
    )


def _kv_delete(epoch: Epoch, at: float, fields: list[Any]) -> Entry:
    key, expect, rid = _fields(fields, 3, "kv_delete")
    return KvDelete(
        epoch,
        at,
        check_name(key, "key", P),
        check_version(expect, "expect_version", P),
        check_rid(rid, P),
    )


_DECODERS: Final[dict[int, Callable[[Epoch, float, list[Any]], Entry]]] = {
    1: _epoch_start,
    2: _acquire,
    3: _renew,
    4: _release,
    5: _kv_put,
    6: _kv_delete,
    7: _sweep,
}


def decode_entry(data: bytes) -> Entry:
    """The entry encoded in ``data``. Raises :class:`ProtocolError` (only) if malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"log entry must be bytes, got {type(data).__name__}")
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"undecodable log entry: {type(exc).__name__}: {exc}") from None
    if not isinstance(fields, list) or len(fields) < 4:
        raise ProtocolError("lock log entry must be an array [tag, round, node, at, ...]")
    tag, round_, node, at = fields[:4]
    decoder = _DECODERS.get(tag) if type(tag) is int else None
    if decoder is None:
        raise ProtocolError(f"unknown lock log entry tag {tag!r:.40}")
    epoch = (check_uint(round_, "epoch round", P), check_uint(node, "epoch node", P))
    if not isinstance(at, float) or not math.isfinite(at):
        raise ProtocolError(f"entry time must be a finite float, got {at!r:.40}")
    return decoder(epoch, at, fields)
