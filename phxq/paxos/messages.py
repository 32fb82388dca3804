"""Every Paxos wire message, and its msgpack codec.

All messages are frozen dataclasses carrying ``group`` and ``sender`` first (construct them with
keywords). Ballots travel as ``[round, node]``.

- ``Prepare(ballot, from_instance)``: phase 1 for every instance >= ``from_instance``.
- ``Promise(ballot, from_instance, accepted, chosen_up_to)``: ``accepted`` = every
  ``AcceptedEntry(instance, ballot, value)`` the acceptor holds for instances >= from.
- ``Reject(ballot, promised)``: the acceptor refused ``ballot``; it has promised ``promised``.
- ``Accept(ballot, instance, value)`` / ``Accepted(ballot, instance)``: phase 2.
- ``Chosen(ballot, first, last)``: instances ``first..last`` were chosen with ``ballot``.
- ``Heartbeat(ballot, chosen_up_to, checksum)``: master liveness and learner progress.
- ``HeartbeatAck(ballot, chosen_up_to)``: a follower's answer (keeps the master's majority lease
  fresh). *Added to the contract.*
- ``CatchupRequest(from_instance, max_count)`` / ``CatchupReply(entries, chosen_up_to)`` with
  ``ChosenEntry(instance, value, checksum)``.
- ``PreVote(ballot, chosen_up_to)``: "would you promise a ballot above yours now?", asked before
  phase 1 with the ballot the sender would try next; changes no state anywhere.
  ``PreVoteReply(ballot, granted, promised, chosen_up_to)``: the answer (``ballot`` echoes the
  question; ``promised`` lets the asker pick a round above it). *Added to the contract.*

``encode_message(msg) -> bytes``; ``decode_message(data) -> Message`` validates every type and
bound and raises ``ProtocolError`` for anything malformed (never another exception).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from phxq.errors import ProtocolError
from phxq.paxos.ballot import Ballot

MAX_U64 = (1 << 64) - 1
MAX_ENTRIES = 1 << 16


@dataclass(frozen=True, slots=True)
class AcceptedEntry:
    instance: int
    ballot: Ballot
    value: bytes


@dataclass(frozen=True, slots=True)
class ChosenEntry:
    instance: int
    value: bytes
    checksum: int


@dataclass(frozen=True, slots=True)
class Prepare:
    group: int
    sender: int
    ballot: Ballot
    from_instance: int


@dataclass(frozen=True, slots=True)
class Promise:
    group: int
    sender: int
    ballot: Ballot
    from_instance: int
    accepted: tuple[AcceptedEntry, ...]
    chosen_up_to: int


@dataclass(frozen=True, slots=True)
class Reject:
    group: int
    sender: int
    ballot: Ballot
    promised: Ballot


@dataclass(frozen=True, slots=True)
class Accept:
    group: int
    sender: int
    ballot: Ballot
    instance: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    group: int
    sender: int
    ballot: Ballot
    instance: int


@dataclass(frozen=True, slots=True)
class Chosen:
    group: int
    sender: int
    ballot: Ballot
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    group: int
    sender: int
    ballot: Ballot
    chosen_up_to: int
    checksum: int


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    group: int
    sender: int
    ballot: Ballot
    chosen_up_to: int


@dataclass(frozen=True, slots=True)
class CatchupRequest:
    group: int
    sender: int
    from_instance: int
    max_count: int


@dataclass(frozen=True, slots=True)
class CatchupReply:
    group: int
    sender: int
    entries: tuple[ChosenEntry, ...]
    chosen_up_to: int


@dataclass(frozen=True, slots=True)
class PreVote:
    group: int
    sender: int
    ballot: Ballot
    chosen_up_to: int


@dataclass(frozen=True, slots=True)
class PreVoteReply:
    group: int
    sender: int
    ballot: Ballot
    granted: bool
    promised: Ballot
    chosen_up_to: int


Message = (
    Prepare
    | Promise
    | Reject
    | Accept
    | Accepted
    | Chosen
    | Heartbeat
    | HeartbeatAck
    | CatchupRequest
    | CatchupReply
    | PreVote
    | PreVoteReply
)

# Field kinds: u = unsigned 64-bit int, B = ballot, b = bytes, t = bool, A = accepted entries,
# C = chosen entries. The wire form is [tag, *fields] in declaration order.
_SCHEMA: dict[type[Any], tuple[int, str]] = {
    Prepare: (1, "uuBu"),
    Promise: (2, "uuBuAu"),
    Reject: (3, "uuBB"),
    Accept: (4, "uuBub"),
    Accepted: (5, "uuBu"),
    Chosen: (6, "uuBuu"),
    Heartbeat: (7, "uuBuu"),
    HeartbeatAck: (8, "uuBu"),
    CatchupRequest: (9, "uuuu"),
    CatchupReply: (10, "uuCu"),
    PreVote: (11, "uuBu"),
    PreVoteReply: (12, "uuBtBu"),
}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(cls.__dataclass_fields__) for cls in _SCHEMA
}
_BY_TAG: dict[int, tuple[type[Any], str]] = {
    tag: (cls, kinds) for cls, (tag, kinds) in _SCHEMA.items()
}


def _enc(kind: str, value: Any) -> Any:
    if kind == "B":
        return (value.round, value.node)
    if kind == "A":
        return [(e.instance, (e.ballot.round, e.ballot.node), e.value) for e in value]
    if kind == "C":
        return [(e.instance, e.value, e.checksum) for e in value]
    return value


def _enc_accept(m: Accept) -> list[Any]:
    b = m.ballot
    return [4, m.group, m.sender, (b.round, b.node), m.instance, m.value]


def _enc_accepted(m: Accepted) -> list[Any]:
    b = m.ballot
    return [5, m.group, m.sender, (b.round, b.node), m.instance]


def _enc_chosen(m: Chosen) -> list[Any]:
    b = m.ballot
    return [6, m.group, m.sender, (b.round, b.node), m.first, m.last]


def _enc_heartbeat(m: Heartbeat) -> list[Any]:
    b = m.ballot
    return [7, m.group, m.sender, (b.round, b.node), m.chosen_up_to, m.checksum]


def _enc_heartbeat_ack(m: HeartbeatAck) -> list[Any]:
    b = m.ballot
    return [8, m.group, m.sender, (b.round, b.node), m.chosen_up_to]


# The steady-state messages (several per chosen instance) skip the generic field loop; the
# result is byte-for-byte what the generic encoder produces (tested).
_FAST_ENCODERS: dict[type[Any], Any] = {
    Accept: _enc_accept,
    Accepted: _enc_accepted,
    Chosen: _enc_chosen,
    Heartbeat: _enc_heartbeat,
    HeartbeatAck: _enc_heartbeat_ack,
}


def encode_message(msg: Message) -> bytes:
    """Encode one message (msgpack array ``[tag, *fields]``)."""
    cls = type(msg)
    fast = _FAST_ENCODERS.get(cls)
    if fast is not None:
        data = msgpack.packb(fast(msg), use_bin_type=True)
        assert isinstance(data, bytes)
        return data
    return _encode_generic(msg)


def _encode_generic(msg: Message) -> bytes:
    cls = type(msg)
    tag, kinds = _SCHEMA[cls]
    out: list[Any] = [tag]
    for name, kind in zip(_FIELDS[cls], kinds, strict=True):
        out.append(_enc(kind, getattr(msg, name)))
    data = msgpack.packb(out, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def _u(x: Any) -> int:
    if type(x) is not int or x < 0 or x > MAX_U64:
        raise ProtocolError(f"expected an unsigned 64-bit int, got {type(x).__name__}")
    return x


def _ballot(x: Any) -> Ballot:
    if type(x) is not list or len(x) != 2:
        raise ProtocolError("expected a ballot [round, node]")
    return Ballot(_u(x[0]), _u(x[1]))


def _bytes(x: Any) -> bytes:
    if type(x) is not bytes:
        raise ProtocolError(f"expected bytes, got {type(x).__name__}")
    return x


def _entries(x: Any) -> list[Any]:
    if type(x) is not list or len(x) > MAX_ENTRIES:
        raise ProtocolError("expected a bounded array of entries")
    for e in x:
        if type(e) is not list or len(e) != 3:
            raise ProtocolError("expected an entry of three fields")
    return x


def _dec(kind: str, x: Any) -> Any:
    if kind == "u":
        return _u(x)
    if kind == "B":
        return _ballot(x)
    if kind == "b":
        return _bytes(x)
    if kind == "t":
        if type(x) is not bool:
            raise ProtocolError(f"expected a bool, got {type(x).__name__}")
        return x
    if kind == "A":
        return tuple(AcceptedEntry(_u(e[0]), _ballot(e[1]), _bytes(e[2])) for e in _entries(x))
    return tuple(ChosenEntry(_u(e[0]), _bytes(e[1]), _u(e[2])) for e in _entries(x))


def _u64s(*values: Any) -> bool:
    """All unsigned 64-bit ints (msgpack never yields an int above 2**64 - 1)."""
    for v in values:  # noqa: SIM110 - a plain loop: all() over a generator costs more here
        if type(v) is not int or v < 0:
            return False
    return True


def _fast_decode(raw: list[Any]) -> Message | None:
    """The steady-state messages, when every field is well-formed; else None (the generic
    decoder then decides, and raises the precise ``ProtocolError``)."""
    tag, n = raw[0], len(raw)
    if n < 5:
        return None
    b = raw[3]
    if type(b) is not list or len(b) != 2 or not _u64s(raw[1], raw[2], b[0], b[1], raw[4]):
        return None
    if tag == 4 and n == 6 and raw[4] >= 1 and type(raw[5]) is bytes:
        return Accept(raw[1], raw[2], Ballot(b[0], b[1]), raw[4], raw[5])
    if tag == 5 and n == 5 and raw[4] >= 1:
        return Accepted(raw[1], raw[2], Ballot(b[0], b[1]), raw[4])
    if tag == 6 and n == 6 and _u64s(raw[5]) and 1 <= raw[4] <= raw[5]:
        return Chosen(raw[1], raw[2], Ballot(b[0], b[1]), raw[4], raw[5])
    if tag == 7 and n == 6 and _u64s(raw[5]):
        return Heartbeat(raw[1], raw[2], Ballot(b[0], b[1]), raw[4], raw[5])
    if tag == 8 and n == 5:
        return HeartbeatAck(raw[1], raw[2], Ballot(b[0], b[1]), raw[4])
    return None


def decode_message(data: bytes) -> Message:
    """Decode one message; ``ProtocolError`` on malformed input of any kind."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("message is not bytes")
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise ProtocolError(f"undecodable message: {type(exc).__name__}") from None
    if type(raw) is not list or not raw or type(raw[0]) is not int:
        raise ProtocolError("message is not a tagged array")
    fast = _fast_decode(raw)
    if fast is not None:
        return fast
    return _decode_generic(raw)


def _decode_generic(raw: list[Any]) -> Message:
    spec = _BY_TAG.get(raw[0])
    if spec is None:
        raise ProtocolError(f"unknown message tag {raw[0]}")
    cls, kinds = spec
    if len(raw) != len(kinds) + 1:
        raise ProtocolError(f"{cls.__name__}: expected {len(kinds)} fields, got {len(raw) - 1}")
    msg = cls(*(_dec(k, x) for k, x in zip(kinds, raw[1:], strict=True)))
    _check(msg)
    return msg  # type: ignore[no-any-return]


def _check(msg: Any) -> None:
    """Semantic bounds that every well-formed message satisfies."""
    if isinstance(msg, Chosen) and not 1 <= msg.first <= msg.last:
        raise ProtocolError("Chosen: need 1 <= first <= last")
    if isinstance(msg, Accept | Accepted) and msg.instance < 1:
        raise ProtocolError("instance numbers start at 1")
    if isinstance(msg, Prepare | Promise | CatchupRequest) and msg.from_instance < 1:
        raise ProtocolError("from_instance starts at 1")
