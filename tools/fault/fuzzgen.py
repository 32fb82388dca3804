"""The frame fuzzer's generator: seeded random and mutated frame bodies, and the safety net.

Pure: a ``random.Random`` in, bytes out (no sockets, no clock). The runner that sends them to
live daemons and checks the outcome is :mod:`tools.fault.fuzz` (whose docstring lists the
categories).

Public API::

    gen = Generator(random.Random(seed), topics={"orders": 8}, groups=4)
    shot = gen.shot(category, "store" | "lock")      # Shot(category, body, poison) or None
    classify(body, kind, groups, members)             # "reply" | "none" | "skip"

``CATEGORIES``/``WEIGHTS``/``STREAM`` name the categories, their relative frequencies and the
ones that break a stream (sent on a connection of their own, by the runner). ``WRITES`` is every
method that can change stored data.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import msgpack

from phxq.errors import ProtocolError
from phxq.lock.state import LockState
from phxq.net.frames import Notify, Request, decode_body, encode_request, request_id_of
from phxq.paxos import decode_message
from phxq.paxos.ballot import Ballot
from phxq.paxos.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Chosen,
    ChosenEntry,
    Heartbeat,
    HeartbeatAck,
    Prepare,
    PreVote,
    PreVoteReply,
    encode_message,
)
from phxq.replication.snapshot import Snapshot, decode_snapshot, encode_snapshot
from phxq.store.state import StoreState

CATEGORIES = (
    "random_body",
    "bad_msgpack",
    "wrong_fields",
    "read_params",
    "write_poison",
    "px_garbage",
    "huge_length",
    "truncated",
    "random_stream",
    "half_open",
)
# Relative frequencies: the framed categories ride on long-lived connections in batches; the
# stream-breaking ones cost a connection each, so they are rarer.
WEIGHTS = (14, 14, 12, 18, 18, 14, 2, 3, 3, 2)
STREAM = {"huge_length", "truncated", "random_stream", "half_open"}

WRITES = frozenset(
    {"enqueue", "commit", "seek", "acquire", "renew", "release", "kv_put", "kv_delete"}
)

# Request ids from here up are the runner's (replies it checks); an ordinary body carrying one
# after a mutation is not sent (see ``classify``).
RESERVED_IDS = 1 << 63

WEIRD: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**63, -(2**63), 2**64 - 1, 0.5, -0.0, 1e308,
    math.nan, math.inf, -math.inf, "", "x", "é\u2028\x00", "a" * 300, b"", b"\xff" * 40,
    [], [None], {}, {"k": 1}, {1: 2}, msgpack.ExtType(7, b"ext"), msgpack.Timestamp(1, 0),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Shot:
    """One framed body for a long-lived connection. ``poison``: a write that must fail."""

    category: str
    body: bytes
    poison: bool = False


class _Deep:
    """Stands for a value nested deeper than Python's repr can print (spliced in as bytes:
    ``msgpack.packb`` refuses such depth)."""


_DEEP_EXT = msgpack.ExtType(99, b"DEEP")


def _default(obj: Any) -> Any:
    if obj is _Deep:
        return _DEEP_EXT
    raise TypeError(type(obj).__name__)


def _deep(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def _pack(obj: Any) -> bytes | None:
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True, default=_default)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        return None
    return data.replace(msgpack.packb(_DEEP_EXT), _deep(999))


BAD_NAMES: tuple[Any, ...] = (None, "", 7, "n" * 300, b"b", ["x"], [_Deep], 1.5)
BAD_UINTS: tuple[Any, ...] = (-1, "1", 1.5, True, [], -(2**63), [_Deep])


class Generator:
    """Seeded bodies for one cluster; a method returns ``None`` when what it built cannot be
    encoded (the caller draws again)."""

    def __init__(self, rng: random.Random, topics: dict[str, int], groups: int) -> None:
        self.rng = rng
        self.topics = topics
        self.groups = groups
        self.ids = 0
        self.checked_ids = RESERVED_IDS

    def next_id(self) -> int:
        self.ids += 1
        return self.ids

    def checked_id(self) -> int:
        """An id whose reply the runner checks (write poisons, sentinels): from a range that
        ordinary bodies never use, so a mutated body cannot take it (see ``RESERVED_IDS``)."""
        self.checked_ids += 1
        return self.checked_ids

    def junk(self, depth: int = 0) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth > 2 or roll < 0.55:
            return rng.choice(WEIRD)
        if roll < 0.65:
            return rng.randbytes(rng.randint(0, 64))
        if roll < 0.75:
            return rng.randint(-(2**63), 2**64 - 1)
        if roll < 0.78:
            return _Deep
        if roll < 0.9:
            return [self.junk(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(("topic", "queue", "name", "x", 1)): self.junk(depth + 1)}

    def _tq(self) -> tuple[str, int]:
        t = self.rng.choice(sorted(self.topics))
        return t, self.rng.randrange(self.topics[t])

    def read_request(self, kind: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        t, q = self._tq()
        choices: list[tuple[str, dict[str, Any]]]
        if kind == "store":
            choices = [
                ("meta", {}),
                ("status", {}),
                ("dequeue", {"group": "fz", "topic": t, "queue": q, "after": None,
                             "limit": rng.choice((1, 10, 100))}),
                ("dequeue", {"topic": t, "queue": q, "limit": 5, "local": True}),
                ("cursor", {"group": "fz", "topic": t, "queue": q}),
                ("reconcile", {"topic": t, "queue": q, "groups": ["fz"]}),
                ("checksum", {"group": rng.randrange(self.groups), "instance": 1}),
            ]  # fmt: skip
        else:
            choices = [
                ("meta", {}),
                ("status", {}),
                ("get", {"name": "fz/" + t}),
                ("kv_get", {"key": "fz/" + t}),
                ("kv_list", {"prefix": rng.choice(("", "fz/", "x"))}),
                ("kv_wait", {"key": "fz/k", "after_version": 2**40, "timeout": 0.01}),
            ]
        return rng.choice(choices)

    def poison_request(self, kind: str) -> tuple[str, dict[str, Any]]:
        """A write request with one field that every daemon must refuse before it proposes."""
        rng = self.rng
        t, q = self._tq()
        msg: list[Any] = [b"p", None, {}, None]
        if kind == "store":
            method = rng.choice(("enqueue", "commit", "seek"))
            if method == "enqueue":
                params: dict[str, Any] = {"topic": t, "batches": [[q, [msg]]]}
                which = rng.randrange(5)
                if which == 0:
                    params["topic"] = rng.choice((*BAD_NAMES, "no-such-topic"))
                elif which == 1:
                    params["batches"] = rng.choice(
                        (None, [], "x", {}, [[q]], [[q, []]], [["0", [msg]]], [[-1, [msg]]],
                         [[10**6, [msg]]], [[True, [msg]]], [[None, [msg]]], [_Deep])
                    )  # fmt: skip
                elif which == 2:
                    params["batches"][0][1] = [rng.choice(
                        ([b"p"], [b"p", None, {}], [b"p", None, {}, None, 1], "msg", None,
                         ["text", None, {}, None], [5, None, {}, None], [b"p", 5, {}, None],
                         [b"p", None, {"a": 1}, None], [b"p", None, [], None],
                         [b"p", None, {}, "d" * 300], [b"p", None, {}, 12], [_Deep, None, {}, None],
                         [b"p", None, {str(i): "v" for i in range(65)}, None])
                    )]  # fmt: skip
                elif which == 3:  # a valid batch first, then one that breaks the request
                    other = [x for x in range(self.topics[t]) if x % self.groups != q % self.groups]
                    bad = [other[0], [msg]] if other else [q, []]
                    params["batches"].append(rng.choice((bad, [q, [msg, "x"]], None, [q, []])))
                else:
                    params["batches"][0][1] = [[b"x" * ((1 << 20) + 1), None, {}, None]]
            else:
                params = {"group": "fz", "topic": t, "queue": q, "offset": 0}
                spots = ["group", "topic", "queue", "offset"]
                if method == "commit":
                    params["token"] = 1
                    spots += ["token", "expect"]
                else:
                    spots += ["both", "neither", "time"]
                spot = rng.choice(spots)
                if spot in ("group", "topic"):
                    params[spot] = rng.choice(BAD_NAMES)
                elif spot == "queue":
                    params["queue"] = rng.choice((-1, "0", None, 1.5, True, 10**6, [_Deep]))
                elif spot in ("offset", "token", "expect"):
                    params[spot] = rng.choice(BAD_UINTS)
                elif spot == "both":
                    params["time"] = 1.0
                elif spot == "neither":
                    del params["offset"]
                else:
                    del params["offset"]
                    params["time"] = rng.choice(
                        ("yesterday", True, [], [_Deep], math.nan, math.inf, -math.inf)
                    )
        else:
            method = rng.choice(("acquire", "renew", "release", "kv_put", "kv_delete"))
            templates: dict[str, dict[str, Any]] = {
                "acquire": {"name": "fz/l", "owner": "fz", "ttl": 1.0},
                "renew": {"name": "fz/l", "owner": "fz", "token": 1},
                "release": {"name": "fz/l", "owner": "fz", "token": 1, "rid": b"r"},
                "kv_put": {"key": "fz/k", "value": 1, "expect_version": 0, "rid": b"r"},
                "kv_delete": {"key": "fz/k", "expect_version": 0},
            }
            params = templates[method]
            spot = rng.choice(list(params))
            if spot in ("name", "owner", "key"):
                params[spot] = rng.choice(BAD_NAMES)
            elif spot == "ttl":
                params["ttl"] = rng.choice((-1, 0, 1e9, "5", True, math.nan, math.inf, None, []))
            elif spot == "token":
                params["token"] = rng.choice((*BAD_UINTS, None))
            elif spot == "expect_version":
                params[spot] = rng.choice(BAD_UINTS)
            elif spot == "rid":
                params["rid"] = rng.choice(("text", b"", b"r" * 33, 5, [], [_Deep]))
            else:
                params["value"] = b"v" * ((64 << 10) + 1)
        for _ in range(rng.choice((0, 0, 1, 2))):  # extra keys: ignored by the daemons
            params[rng.choice(("zz", "extra", "_", "priority"))] = self.junk()
        return method, params

    # ---------------------------------------------------------------- framed bodies

    def shot(self, category: str, kind: str) -> Shot | None:
        rng = self.rng
        body: bytes | None
        if category == "random_body":
            body = rng.randbytes(rng.choice((1, 2, 3, 8, 40, 300)))
        elif category == "bad_msgpack":
            buf = bytearray(encode_request(self.next_id(), *self.read_request(kind)))
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(buf))
                op = rng.randrange(3)
                if op == 0:
                    buf[pos] = rng.randrange(256)
                elif op == 1:
                    del buf[max(pos, 1) :]
                else:
                    buf[pos:pos] = rng.randbytes(rng.randint(1, 5))
            body = bytes(buf)
        elif category == "wrong_fields":
            body = self.wrong_fields()
        elif category == "read_params":
            body = self.read_params(kind)
        elif category == "write_poison":
            body = _pack([0, self.checked_id(), *self.poison_request(kind)])
            return None if body is None else Shot(category, body, poison=True)
        elif category == "px_garbage":
            body = self.px_garbage(kind)
        else:
            raise ValueError(f"not a framed category: {category}")
        return None if body is None else Shot(category, body)

    def wrong_fields(self) -> bytes | None:
        rng = self.rng
        i = self.next_id()
        choices: list[Any] = [
            [rng.choice((4, 5, 99, -1, "0", None, 0.0, True)), i, "meta", {}],
            [0, rng.choice((-1, "1", None, 1.5, [], b"", True)), "meta", {}],
            [0, i, self.junk(), {}],
            [0, i, "meta"],
            [0, i, "meta", {}, "extra"],
            [1, i, self.junk()],
            [2, i, "bad_argument", "sent to a server", {}],
            [2, None, self.junk(), self.junk(), self.junk()],
            [3, self.junk(), self.junk()],
            {"method": "meta", "id": i},
            [],
            self.junk(),
        ]
        if rng.random() < 0.08:
            return _deep(rng.choice((900, 999, 1020, 1100, 5000)))
        return _pack(rng.choice(choices))

    def read_params(self, kind: str) -> bytes | None:
        rng = self.rng
        method, params = self.read_request(kind)
        roll = rng.random()
        if roll < 0.004:  # a value of megabytes: its quote in an error must still fit a frame
            params = dict(params)
            params[rng.choice(("topic", "group", "name", "key", "limit"))] = rng.choice(
                (b"\xff", "\u2028", [0])
            ) * rng.randint(1 << 20, 4 << 20)
        elif roll < 0.1:
            method = rng.choice(("drop", "", "META", "px", "__init__", "\x00", "a" * 1000))
        elif roll < 0.25:
            params = self.junk()  # mostly not a map at all
        else:
            params = dict(params)
            for _ in range(rng.randint(1, 3)):
                key = rng.choice([*params, "zz", "wait", "timeout", "local", "after", "limit"])
                if rng.random() < 0.2:
                    params.pop(key, None)
                else:
                    params[key] = self.junk()
        return _pack([0, self.next_id(), method, params])

    def px_garbage(self, kind: str) -> bytes | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:
            return _pack([3, rng.choice(("px", "snap", "gossip", "")), self.junk()])
        if roll < 0.2:
            return _pack([3, "snap", self.bad_snapshot(kind)])
        return _pack([3, "px", self.bad_paxos()])

    def paxos_message(self) -> Any:
        rng = self.rng
        g, s = rng.randrange(self.groups), rng.randint(1, 3)
        b = Ballot(rng.randint(0, 2**40), rng.randint(0, 5))
        n = rng.randint(1, 2**40)
        return rng.choice(
            [
                Prepare(group=g, sender=s, ballot=b, from_instance=n),
                Accept(group=g, sender=s, ballot=b, instance=n, value=rng.randbytes(20)),
                Accepted(group=g, sender=s, ballot=b, instance=n),
                Chosen(group=g, sender=s, ballot=b, first=n, last=n + 3),
                Heartbeat(group=g, sender=s, ballot=b, chosen_up_to=n, checksum=n),
                HeartbeatAck(group=g, sender=s, ballot=b, chosen_up_to=n),
                CatchupRequest(group=g, sender=s, from_instance=n, max_count=10),
                PreVote(group=g, sender=s, ballot=b, chosen_up_to=n),
                PreVoteReply(group=g, sender=s, ballot=b, granted=True, promised=b,
                             chosen_up_to=n),
                CatchupReply(group=g, sender=s, chosen_up_to=n,
                             entries=(ChosenEntry(n, b"v", 1),)),
            ]
        )  # fmt: skip

    def bad_paxos(self) -> bytes:
        """Bytes that look like a peer's Paxos message but are malformed, or name a group or a
        sender that does not exist (the daemons must drop both)."""
        rng = self.rng
        data = encode_message(self.paxos_message())
        raw = msgpack.unpackb(data, raw=False)
        roll = rng.randrange(9)
        if roll == 0:
            return rng.randbytes(rng.randint(0, 60))
        if roll == 1:
            return data[: rng.randrange(len(data))]
        if roll == 2:
            raw[rng.randrange(len(raw))] = self.junk()
        elif roll == 3:
            raw.append(self.junk())
        elif roll == 4:
            raw.pop()
        elif roll == 5:
            raw[0] = rng.choice((0, 11, 99, -1, 2**40, "4"))
        elif roll == 6:
            raw[1] = rng.choice((self.groups, self.groups + 1, 2**32, 2**64 - 1))  # no group
        elif roll == 7:
            raw[2] = rng.choice((0, 4, 77, 2**64 - 1))  # no member
        else:
            buf = bytearray(data)
            buf[rng.randrange(len(buf))] = rng.randrange(256)
            return bytes(buf)
        return _pack(raw) or b"\xc1"

    def bad_snapshot(self, kind: str) -> Any:
        rng = self.rng
        group = rng.choice((0, 1, -1, self.groups + 5, "0", None, 2**64 - 1))
        roll = rng.randrange(4)
        if roll == 0:
            return [group, rng.randbytes(rng.randint(0, 80))]
        if roll == 1:
            return self.junk()
        state = bytearray(
            StoreState(0, dedup_window=1.0).snapshot()
            if kind == "store"
            else LockState().snapshot()
        )
        for _ in range(rng.randint(1, 3)):
            state[rng.randrange(len(state))] = rng.randrange(256)
        snap = encode_snapshot(Snapshot(1, rng.getrandbits(64), bytes(state)))
        if roll == 2:
            snap = snap[:-1] + bytes([snap[-1] ^ 0xFF])  # breaks the envelope's CRC
        return [group, snap]


def classify(body: bytes, kind: str, groups: int, members: frozenset[int]) -> str:
    """What sending ``body`` to a ``kind`` daemon does, decided with the daemons' own decoders:
    ``"reply"`` (one reply frame), ``"none"`` (a notify: no reply), or ``"skip"`` (do not send:
    it could write, forge a peer's Paxos message or snapshot, long-poll, or carry a reserved
    request id)."""
    request_id = request_id_of(body)
    if request_id is not None and request_id >= RESERVED_IDS:
        return "skip"
    try:
        frame = decode_body(body)
    except ProtocolError:
        return "reply"
    if type(frame) is Request:
        if frame.method in WRITES:
            return "skip"
        if isinstance(frame.params, dict):
            for name in ("wait", "timeout"):
                v = frame.params.get(name)
                if isinstance(v, int | float) and not isinstance(v, bool) and v > 0.05:
                    return "skip"
        return "reply"
    if type(frame) is not Notify:
        return "reply"
    params = frame.params
    if frame.method == "px" and isinstance(params, bytes):
        try:
            msg = decode_message(params)
        except ProtocolError:
            return "none"
        return "skip" if msg.group < groups and msg.sender in members else "none"
    if frame.method == "snap" and isinstance(params, list) and len(params) == 2:
        if not isinstance(params[1], bytes):
            return "none"
        try:
            snap = decode_snapshot(params[1])
            (StoreState if kind == "store" else LockState).restore(snap.state)
        except ProtocolError:
            return "none"
        except Exception:  # not a typed rejection: send it, the daemon must cope (logs show)
            return "none"
        return "skip"
    return "none"
