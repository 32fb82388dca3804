"""Voting again safely after forgetting: a replaced (empty) data directory, or a damaged log.

A Paxos acceptor must never forget a promise or an accepted value. Two things make a replica
forget: its disk is replaced (the daemon restarts with an empty data directory), or a region in
the middle of its log turns out corrupt (``GroupLog.needs_repair``: the bad bytes may have held
promises, accepts and chosen values). Such a replica **neither serves nor votes** (no
``Promise``, no ``Accepted``, no election of its own; it answers ``NotMaster`` without a hint)
until it has rebuilt, from its peers, at least what it may have forgotten. For one group:

(a) ask **every other member** for its promised ballot, ``chosen_up_to``, chain checksum and the
    values it holds accepted above ``chosen_up_to`` (``rejoin_probe``); only answers of members
    whose own replica is whole (voting) count -- a peer that is itself joining or repairing may
    have forgotten the same things;
(b) durably adopt a promise ``P`` = the highest promised ballot reported, and, per instance above
    the highest ``chosen_up_to`` reported, the highest-ballot accepted value reported (written as
    ordinary accept records);
(c) learn every chosen instance up to the highest ``chosen_up_to`` reported (``rejoin_read``,
    a peer's snapshot when the peer truncated below what we need; each value is checked against
    the chain checksum, applied and written like any learned instance), then check our chain against every
    peer's checksum at its ``chosen_up_to``;
(d) mark the damage repaired (``GroupLog.mark_repaired``), rebuild the Paxos core from the log,
    and vote. Later instances come by ordinary catch-up.

Why this is enough, and why every other member must answer (a 3-node group). A forgotten
promise or accept *mattered* only if it was counted in some quorum: then the other
``majority - 1`` members of that quorum hold it too (the proposer persists its own promise, and
an accept is counted only once durable), durably and monotonically: a peer's promise only grows;
its accepted value for an instance is replaced only by a higher ballot (which, if a value was
chosen, carries that value) or becomes a chosen value in its log (which (c) learns), or is
truncated behind a snapshot (which (c) installs). So we must hear from at least
``n - majority + 1`` other members to be sure one of them answered; for n = 3 that is **both**
other members. Example: A (master) and R choose v at instance i, B never hears of it, R loses
its disk. If R listened only to B and voted, B could win phase 1 with R's empty promise and
choose a no-op at i while A has acked v. (c) is needed because peers forget accepted values
once chosen (they keep only the chosen log): R must hold every value a future quorum with it
must report. Copying an accepted value R never received is safe: it is a value really proposed
under that ballot, and any value chosen with ballot ``b`` is, by Paxos, the value of every
accept with ballot >= b, so phase 1 still finds it. We ask all other members for every n (not
just ``n - majority + 1``): it also guarantees that any ballot this node used before as a
proposer and that had any effect is <= ``P``, so its next ballot cannot reuse one.

Fresh cluster or replaced disk. A data directory that has completed its first start holds a
``MEMBER`` file (written durably before the first vote). At start:

- ``MEMBER`` present: a member; only damaged groups repair.
- ``JOINING`` present: a join was under way (written durably before any adopted record):
  every group joins again (idempotent).
- neither, but some group log holds state (a directory from before this rule): a member; the
  file is written.
- neither and no state: **probing**. The node gets a random boot id (in memory) and asks every
  other member. If every one answers and each is probing too, or is a member that *started
  fresh* while seeing this very boot id probing, the cluster is new: it writes ``MEMBER``
  ("fresh", with the boot ids of the probing peers it saw) and votes. If any member has other
  history, it writes ``JOINING`` and joins every group. Safety: when the first node decided
  "fresh", every node's directory was empty, and a node still probing under the boot id seen
  then has not voted since; a disk replaced later gets a new boot id, so it joins.
  Liveness cost: a brand-new cluster starts voting once every node has been up at the same
  time; a joining node waits while any other member is down or not whole (it logs why, shows
  ``repair`` in ``status`` and ``phxq_replica_not_voting`` = 1).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from phxq import validate
from phxq.errors import PhxqError, ProtocolError, StorageError, Unavailable
from phxq.paxos import chain_checksum
from phxq.plog.durable import fsync_dir, replace_durably
from phxq.replication.storage import GroupStorage

log = logging.getLogger("phxq.rejoin")

MEMBER_FILE = "MEMBER"
JOINING_FILE = "JOINING"
PROBE_TIMEOUT = 2.0
READ_TIMEOUT = 10.0
RETRY_MIN = 0.05
RETRY_MAX = 1.0
READ_MAX_COUNT = 256

Ballot = tuple[int, int]


class NodeStatus(enum.Enum):
    MEMBER = "member"
    PROBING = "probing"  # empty directory, deciding between "fresh cluster" and "join"
    JOINING = "joining"


class Diverged(Exception):
    """Our chain checksum differs from a peer's while rebuilding: never vote, report loudly.
    (Internal: never sent on the wire, so not a ``PhxqError``.)"""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ------------------------------------------------------------------------- marker files


def read_marker(data: Path, name: str) -> dict[str, Any] | None:
    try:
        body = json.loads((data / name).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"unreadable {data / name}: {exc}") from None
    if not isinstance(body, dict):
        raise StorageError(f"unreadable {data / name}: not a JSON object")
    return body


def write_marker(data: Path, name: str, body: Mapping[str, Any]) -> None:
    """Write ``data/name`` atomically and durably (temporary file, fdatasync, rename, fsync)."""
    replace_durably(data / name, json.dumps(dict(body)).encode())


def remove_marker(data: Path, name: str) -> None:
    (data / name).unlink(missing_ok=True)
    fsync_dir(data)


def new_boot_id() -> int:
    return secrets.randbits(62)


# ------------------------------------------------------------------------- peer answers


@dataclass(frozen=True, slots=True)
class GroupView:
    """One peer's replica of one group, as it answered a probe."""

    whole: bool  # voting: neither joining, repairing nor failed
    promised: Ballot
    chosen_up_to: int
    checksum: int
    first_instance: int
    accepted: tuple[tuple[int, Ballot, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer node's answer to ``rejoin_probe``."""

    node: int
    status: NodeStatus
    boot: int | None = None  # while probing
    fresh_peers: Mapping[int, int] = field(default_factory=dict)  # member that started fresh
    groups: Mapping[int, GroupView] = field(default_factory=dict)


def encode_view(view: PeerView) -> dict[str, Any]:
    return {
        "node": view.node,
        "status": view.status.value,
        "boot": view.boot,
        "fresh_peers": [[n, b] for n, b in sorted(view.fresh_peers.items())],
        "groups": [
            [
                g,
                v.whole,
                list(v.promised),
                v.chosen_up_to,
                v.checksum,
                v.first_instance,
                [[i, b[0], b[1], value] for i, b, value in v.accepted],
            ]
            for g, v in sorted(view.groups.items())
        ],
    }


def _int(x: Any) -> int:
    return validate.integer(
        x, "rejoin field", minimum=-(1 << 63), maximum=None, error=ProtocolError
    )


def decode_view(raw: Any) -> PeerView:
    """A peer's probe answer; ``ProtocolError`` if malformed."""
    try:
        status = NodeStatus(raw["status"])
        boot = None if raw["boot"] is None else _int(raw["boot"])
        fresh = {_int(n): _int(b) for n, b in raw["fresh_peers"]}
        groups: dict[int, GroupView] = {}
        for g, whole, promised, cup, checksum, first, accepted in raw["groups"]:
            entries = []
            for i, r, n, value in accepted:
                if not isinstance(value, bytes):
                    raise ProtocolError("rejoin: accepted value must be bytes")
                entries.append((_int(i), (_int(r), _int(n)), value))
            groups[_int(g)] = GroupView(
                bool(whole),
                (_int(promised[0]), _int(promised[1])),
                _int(cup),
                _int(checksum),
                _int(first),
                tuple(entries),
            )
        return PeerView(_int(raw["node"]), status, boot, fresh, groups)
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProtocolError(f"rejoin: malformed probe answer: {exc!r}") from None


# ------------------------------------------------------------------------ pure decisions


def is_fresh_cluster(views: Mapping[int, PeerView], me: int, boot: int) -> bool:
    """Every other member answered (the caller checks) and none has history we lack."""
    for view in views.values():
        if view.status is NodeStatus.PROBING:
            continue
        if view.status is NodeStatus.MEMBER and view.fresh_peers.get(me) == boot:
            continue
        return False
    return True


@dataclass(frozen=True, slots=True)
class Adoption:
    """What a replica adopts before voting again in one group (see the module docstring)."""

    promised: Ballot
    chosen_up_to: int  # learn every instance up to here
    accepted: Mapping[int, tuple[Ballot, bytes]]  # above chosen_up_to
    checksums: Mapping[int, tuple[int, int]]  # peer -> (its chosen_up_to, its checksum there)
    sources: Mapping[int, int]  # peer -> its chosen_up_to (where to learn from)


def adopt(views: Mapping[int, GroupView]) -> Adoption:
    """The promise, learning target and accepted values to adopt from whole peers' answers."""
    promised: Ballot = max((v.promised for v in views.values()), default=(0, 0))
    target = max((v.chosen_up_to for v in views.values()), default=0)
    accepted: dict[int, tuple[Ballot, bytes]] = {}
    for v in views.values():
        for i, ballot, value in v.accepted:
            if i > target and (i not in accepted or ballot > accepted[i][0]):
                accepted[i] = (ballot, value)
    for ballot, _ in accepted.values():
        promised = max(promised, ballot)
    return Adoption(
        promised,
        target,
        accepted,
        {p: (v.chosen_up_to, v.checksum) for p, v in views.items()},
        {p: v.chosen_up_to for p, v in views.items()},
    )


# ---------------------------------------------------------------- rebuilding one replica

ReadFn = Callable[[int, int, int], Awaitable[dict[str, Any]]]  # (peer, group, from) -> reply


class Rebuilding(Protocol):
    """What :func:`rebuild` uses of a ``GroupReplica``."""

    @property
    def group(self) -> int: ...
    @property
    def glog(self) -> GroupStorage: ...

    async def install_snapshot(self, data: bytes, *, rebuilding: bool = False) -> bool: ...

    def apply_and_write(
        self, instance: int, ballot: Ballot | None, checksum: int, value: bytes
    ) -> tuple[Sequence[Any], asyncio.Future[None]]: ...


async def rebuild(replica: Rebuilding, adoption: Adoption, read: ReadFn) -> None:
    """Steps (b)-(c) for ``replica`` (a ``GroupReplica`` that neither serves nor votes): adopt
    the promise and accepted values durably, learn up to the target, verify the chain.
    Raises ``Diverged`` on a checksum mismatch, ``PhxqError`` when a peer fails (retry)."""
    glog = replica.glog
    group = replica.group
    futures = []
    if adoption.promised > glog.promised:
        futures.append(glog.append_promise(adoption.promised))
    held = glog.accepted_values()
    for i, (ballot, value) in sorted(adoption.accepted.items()):
        if i > glog.chosen_up_to and (i not in held or ballot > held[i][0]):
            futures.append(glog.append_accept(i, ballot, value))
    if futures:
        await futures[-1]  # one group's records become durable in order
    last: asyncio.Future[None] | None = None
    while glog.chosen_up_to < adoption.chosen_up_to:
        nxt = glog.chosen_up_to + 1
        able = sorted(
            (p for p, c in adoption.sources.items() if c >= nxt),
            key=lambda p: -adoption.sources[p],
        )
        if not able:
            raise Unavailable(f"group {group}: no peer holds instance {nxt}")
        reply = await read(able[0], group, nxt)
        snapshot = reply.get("snapshot")
        if isinstance(snapshot, bytes):
            if not await replica.install_snapshot(snapshot, rebuilding=True):
                raise Unavailable(f"group {group}: could not install peer {able[0]}'s snapshot")
            continue
        entries = reply.get("entries")
        if not isinstance(entries, list) or not entries:
            raise Unavailable(f"group {group}: peer {able[0]} sent nothing from {nxt}")
        for entry in entries:
            try:
                i, value, checksum = entry
                ok = isinstance(i, int) and isinstance(value, bytes) and isinstance(checksum, int)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ProtocolError(f"group {group}: malformed rejoin_read entry from {able[0]}")
            if i != glog.chosen_up_to + 1:
                break
            expected = chain_checksum(glog.checksum, i, value)
            if expected != checksum:
                raise Diverged(
                    f"group {group}: chain checksum mismatch at {i} rebuilding from peer "
                    f"{able[0]} (ours {expected:x}, peer {checksum:x})"
                )
            _, last = replica.apply_and_write(i, None, checksum, value)
    if last is not None:
        await last
    for peer, (instance, checksum) in adoption.checksums.items():
        ours = glog.checksum_at(instance)
        if ours is not None and ours != checksum:
            raise Diverged(
                f"group {group}: chain checksum at {instance} is {ours:x} here but "
                f"{checksum:x} on peer {peer}"
            )


class Backoff:
    """Retry pacing and rate-limited logging of why a replica still cannot vote."""

    def __init__(self, level: int = logging.WARNING) -> None:
        self.level = level
        self.delay = RETRY_MIN
        self.reason = ""
        self._logged_at = -1e9

    def note(self, what: str, reason: str) -> None:
        now = time.monotonic()
        if reason != self.reason or now - self._logged_at > 10.0:
            log.log(self.level, "%s: not voting yet: %s", what, reason)
            self._logged_at = now
        self.reason = reason

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(RETRY_MAX, self.delay * 2)


def describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, PhxqError) else f"{type(exc).__name__}: {exc}"
