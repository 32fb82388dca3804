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
bound and raises ``ProtocolError`` for anything malformed (never another exception);
``decode_raw(value)`` does the same for an unpacked value. ``phxq.paxos.bundle``: several per body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from phxq.errors import ProtocolError
from phxq.paxos.ballot import Ballot

MAX_U64 = (1 << 64) - 1
MAX_ENTRIES = 1 << 16
_PACKER = msgpack.Packer(use_bin_type=True)


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

# The wire form of each message is [tag, *fields] in declaration order; ballots are [round,
# node]. Field kinds, for the error messages: u = unsigned 64-bit int, B = ballot, b = bytes,
# t = bool, A = accepted entries, C = chosen entries.
_WIRE: dict[type[Any], tuple[int, str]] = {
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

# ---------------------------------------------------------------------------- encoding
# One encoder per message: it builds the array directly (no generic field loop), since several
# messages go out per chosen instance.


def _enc_prepare(m: Prepare) -> list[Any]:
    b = m.ballot
    return [1, m.group, m.sender, (b.round, b.node), m.from_instance]


def _enc_promise(m: Promise) -> list[Any]:
    b = m.ballot
    accepted = [(e.instance, (e.ballot.round, e.ballot.node), e.value) for e in m.accepted]
    return [2, m.group, m.sender, (b.round, b.node), m.from_instance, accepted, m.chosen_up_to]


def _enc_reject(m: Reject) -> list[Any]:
    b, p = m.ballot, m.promised
    return [3, m.group, m.sender, (b.round, b.node), (p.round, p.node)]


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


def _enc_catchup_request(m: CatchupRequest) -> list[Any]:
    return [9, m.group, m.sender, m.from_instance, m.max_count]


def _enc_catchup_reply(m: CatchupReply) -> list[Any]:
    entries = [(e.instance, e.value, e.checksum) for e in m.entries]
    return [10, m.group, m.sender, entries, m.chosen_up_to]


def _enc_prevote(m: PreVote) -> list[Any]:
    b = m.ballot
    return [11, m.group, m.sender, (b.round, b.node), m.chosen_up_to]


def _enc_prevote_reply(m: PreVoteReply) -> list[Any]:
    b, p = m.ballot, m.promised
    return [12, m.group, m.sender, (b.round, b.node), m.granted, (p.round, p.node), m.chosen_up_to]


_ENCODERS: dict[type[Any], Callable[[Any], list[Any]]] = {
    Prepare: _enc_prepare,
    Promise: _enc_promise,
    Reject: _enc_reject,
    Accept: _enc_accept,
    Accepted: _enc_accepted,
    Chosen: _enc_chosen,
    Heartbeat: _enc_heartbeat,
    HeartbeatAck: _enc_heartbeat_ack,
    CatchupRequest: _enc_catchup_request,
    CatchupReply: _enc_catchup_reply,
    PreVote: _enc_prevote,
    PreVoteReply: _enc_prevote_reply,
}


def encode_message(msg: Message) -> bytes:
    """Encode one message (msgpack array ``[tag, *fields]``)."""
    # One Packer (packb makes one per call); packing ints, bytes, arrays never drops the GIL.
    return _PACKER.pack(_ENCODERS[type(msg)](msg))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- decoding
# One decoder per message: it checks every field inline and builds the message, or raises the
# precise ProtocolError that _malformed works out (only on the error path).


def _u64s(*values: Any) -> bool:
    """All unsigned 64-bit ints (msgpack never yields an int above 2**64 - 1; a bool is not
    an int here)."""
    for v in values:  # noqa: SIM110 - a plain loop: all() over a generator costs more here
        if type(v) is not int or v < 0:
            return False
    return True


def _accepted_entries(x: Any) -> tuple[AcceptedEntry, ...] | None:
    if type(x) is not list or len(x) > MAX_ENTRIES:
        return None
    out = []
    for e in x:
        if type(e) is not list or len(e) != 3:
            return None
        i, b, v = e
        if type(b) is not list or len(b) != 2 or not _u64s(i, b[0], b[1]) or type(v) is not bytes:
            return None
        out.append(AcceptedEntry(i, Ballot(b[0], b[1]), v))
    return tuple(out)


def _chosen_entries(x: Any) -> tuple[ChosenEntry, ...] | None:
    if type(x) is not list or len(x) > MAX_ENTRIES:
        return None
    out = []
    for e in x:
        if type(e) is not list or len(e) != 3:
            return None
        i, v, c = e
        if not _u64s(i, c) or type(v) is not bytes:
            return None
        out.append(ChosenEntry(i, v, c))
    return tuple(out)


def _dec_prepare(raw: list[Any]) -> Prepare:
    if len(raw) == 5:
        _, g, s, b, f = raw
        if type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], f) and f >= 1:
            return Prepare(g, s, Ballot(b[0], b[1]), f)
    raise _malformed(Prepare, raw)


def _dec_promise(raw: list[Any]) -> Promise:
    if len(raw) == 7:
        _, g, s, b, f, a, c = raw
        if type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], f, c) and f >= 1:
            accepted = _accepted_entries(a)
            if accepted is not None:
                return Promise(g, s, Ballot(b[0], b[1]), f, accepted, c)
    raise _malformed(Promise, raw)


def _dec_reject(raw: list[Any]) -> Reject:
    if len(raw) == 5:
        _, g, s, b, p = raw
        ballots = type(b) is list and len(b) == 2 and type(p) is list and len(p) == 2
        if ballots and _u64s(g, s, b[0], b[1], p[0], p[1]):
            return Reject(g, s, Ballot(b[0], b[1]), Ballot(p[0], p[1]))
    raise _malformed(Reject, raw)


def _dec_accept(raw: list[Any]) -> Accept:
    if len(raw) == 6:
        _, g, s, b, i, v = raw
        ok = type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], i)
        if ok and i >= 1 and type(v) is bytes:
            return Accept(g, s, Ballot(b[0], b[1]), i, v)
    raise _malformed(Accept, raw)


def _dec_accepted(raw: list[Any]) -> Accepted:
    if len(raw) == 5:
        _, g, s, b, i = raw
        if type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], i) and i >= 1:
            return Accepted(g, s, Ballot(b[0], b[1]), i)
    raise _malformed(Accepted, raw)


def _dec_chosen(raw: list[Any]) -> Chosen:
    if len(raw) == 6:
        _, g, s, b, first, last = raw
        ok = type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], first, last)
        if ok and 1 <= first <= last:
            return Chosen(g, s, Ballot(b[0], b[1]), first, last)
    raise _malformed(Chosen, raw)


def _dec_heartbeat(raw: list[Any]) -> Heartbeat:
    if len(raw) == 6:
        _, g, s, b, c, k = raw
        if type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], c, k):
            return Heartbeat(g, s, Ballot(b[0], b[1]), c, k)
    raise _malformed(Heartbeat, raw)


def _dec_heartbeat_ack(raw: list[Any]) -> HeartbeatAck:
    if len(raw) == 5:
        _, g, s, b, c = raw
        if type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], c):
            return HeartbeatAck(g, s, Ballot(b[0], b[1]), c)
    raise _malformed(HeartbeatAck, raw)


def _dec_catchup_request(raw: list[Any]) -> CatchupRequest:
    if len(raw) == 5:
        _, g, s, f, n = raw
        if _u64s(g, s, f, n) and f >= 1:
            return CatchupRequest(g, s, f, n)
    raise _malformed(CatchupRequest, raw)


def _dec_catchup_reply(raw: list[Any]) -> CatchupReply:
    if len(raw) == 5:
        _, g, s, e, c = raw
        if _u64s(g, s, c):
            entries = _chosen_entries(e)
            if entries is not None:
                return CatchupReply(g, s, entries, c)
    raise _malformed(CatchupReply, raw)


def _dec_prevote(raw: list[Any]) -> PreVote:
    if len(raw) == 5:
        _, g, s, b, c = raw
        if type(b) is list and len(b) == 2 and _u64s(g, s, b[0], b[1], c):
            return PreVote(g, s, Ballot(b[0], b[1]), c)
    raise _malformed(PreVote, raw)


def _dec_prevote_reply(raw: list[Any]) -> PreVoteReply:
    if len(raw) == 7:
        _, g, s, b, t, p, c = raw
        ballots = type(b) is list and len(b) == 2 and type(p) is list and len(p) == 2
        if ballots and type(t) is bool and _u64s(g, s, b[0], b[1], p[0], p[1], c):
            return PreVoteReply(g, s, Ballot(b[0], b[1]), t, Ballot(p[0], p[1]), c)
    raise _malformed(PreVoteReply, raw)


_DECODERS: dict[int, Callable[[list[Any]], Message]] = {
    1: _dec_prepare,
    2: _dec_promise,
    3: _dec_reject,
    4: _dec_accept,
    5: _dec_accepted,
    6: _dec_chosen,
    7: _dec_heartbeat,
    8: _dec_heartbeat_ack,
    9: _dec_catchup_request,
    10: _dec_catchup_reply,
    11: _dec_prevote,
    12: _dec_prevote_reply,
}


def decode_message(data: bytes) -> Message:
    """Decode one message; ``ProtocolError`` on malformed input of any kind."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("message is not bytes")
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise ProtocolError(f"undecodable message: {type(exc).__name__}") from None
    return decode_raw(raw)


def decode_raw(raw: Any) -> Message:
    if type(raw) is not list or not raw or type(raw[0]) is not int:
        raise ProtocolError("message is not a tagged array")
    decoder = _DECODERS.get(raw[0])
    if decoder is None:
        raise ProtocolError(f"unknown message tag {raw[0]}")
    return decoder(raw)


# ---------------------------------------------------------------------------- error reports

_BOUNDS = {
    Prepare: "from_instance starts at 1",
    Promise: "from_instance starts at 1",
    CatchupRequest: "from_instance starts at 1",
    Accept: "instance numbers start at 1",
    Accepted: "instance numbers start at 1",
    Chosen: "need 1 <= first <= last",
}


def _malformed(cls: type[Any], raw: list[Any]) -> ProtocolError:
    """The precise error for ``raw``, which the decoder of ``cls`` refused."""
    kinds = _WIRE[cls][1]
    name = cls.__name__
    if len(raw) != len(kinds) + 1:
        return ProtocolError(f"{name}: expected {len(kinds)} fields, got {len(raw) - 1}")
    for field, kind, value in zip(cls.__dataclass_fields__, kinds, raw[1:], strict=True):
        problem = _problem(kind, value)
        if problem is not None:
            return ProtocolError(f"{name}.{field}: {problem}")
    return ProtocolError(f"{name}: {_BOUNDS.get(cls, 'malformed')}")


def _problem(kind: str, x: Any) -> str | None:
    if kind == "u":
        ok = _u64s(x)
        return None if ok else f"expected an unsigned 64-bit int, got {type(x).__name__}"
    if kind == "B":
        ok = type(x) is list and len(x) == 2 and _u64s(*x)
        return None if ok else "expected a ballot [round, node]"
    if kind == "b":
        return None if type(x) is bytes else f"expected bytes, got {type(x).__name__}"
    if kind == "t":
        return None if type(x) is bool else f"expected a bool, got {type(x).__name__}"
    entries = _accepted_entries(x) if kind == "A" else _chosen_entries(x)
    return None if entries is not None else "expected a bounded array of well-formed entries"
