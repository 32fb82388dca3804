"""Planted bugs: deliberately broken Paxos cores that prove the simulator can fail.

``BUGS[name]`` is a ``Bug``: a broken ``PaxosNode`` subclass and/or a broken recovery fold that
``Sim(seed, n, bug=name)`` runs instead of the real ones. Each must be caught (a
``SimViolation`` that is not a liveness failure) by at least ``MIN_SHARE`` of the CI seeds;
``test_sim_paxos.test_planted_bug_is_caught_by_enough_ci_seeds`` asserts it and

    python -m tests.sim.planted [--seeds 300] [--steps 2000] [--n 3] [--no-restart-check] [BUG ...]

prints, for each bug, the share of the seeds that catch it and which check did.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from phxq.paxos import (
    ZERO,
    AcceptRecord,
    Ballot,
    PaxosNode,
    Promise,
    PromiseRecord,
    RecoveredState,
    Send,
    recover_state,
)
from phxq.paxos.acceptor import Acceptor

MIN_SHARE = 0.10

Recover = Callable[[Sequence[PromiseRecord | AcceptRecord], int, int], RecoveredState]


@dataclass(frozen=True, slots=True)
class Bug:
    name: str
    what: str
    node: type[PaxosNode] | None = None  # None: the real PaxosNode
    recover: Recover | None = None  # None: the real recover_state


# --------------------------------------------------------------- broken replies (durability)


class EarlyReplyNode(PaxosNode):
    """Sends every reply without waiting for its records to be durable."""

    def _after_durable(self, action: Any, out: list[Any]) -> None:
        out.append(action)


class EarlyPromiseNode(PaxosNode):
    """Sends a Promise before its PromiseRecord is durable (accept replies still wait)."""

    def _after_durable(self, action: Any, out: list[Any]) -> None:
        if isinstance(action, Send) and isinstance(action.msg, Promise):
            out.append(action)
        else:
            super()._after_durable(action, out)


class EarlyPrepareNode(PaxosNode):
    """A candidate sends Prepare before its own promise of the ballot is durable."""

    def _start_phase1(self, now: float, out: list[Any]) -> None:
        super()._start_phase1(now, out)
        _, ballot = self._held[-1][1].pop()
        self._send_prepare(ballot, now, out)


class EarlyVoteNode(PaxosNode):
    """The master counts its own vote before its AcceptRecord is durable."""

    def _fill_window(self, now: float, out: list[Any]) -> None:
        token = self._token
        super()._fill_window(now, out)
        if self._token != token:
            _, ballot, instances = self._held[-1][1].pop()
            self._own_votes(ballot, instances)


# ----------------------------------------------------------- same-round elections (promises)


class SameRoundAcceptor(Acceptor):
    """Compares rounds, not ballots, when promising: a same-round rival is promised too."""

    def can_promise(self, ballot: Ballot) -> bool:
        return ballot.round >= self.promised.round

    def promise(self, ballot: Ballot) -> None:
        self.promised = ballot


class SameRoundPromiseNode(PaxosNode):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.acceptor = SameRoundAcceptor(self.acceptor.promised, self.acceptor.accepted)


# ------------------------------------------------------------------------ broken recovery


def _forget_promise(records: Sequence[Any], cup: int, checksum: int) -> RecoveredState:
    rec = recover_state(records, cup, checksum)
    return RecoveredState(ZERO, rec.max_round, {}, cup, checksum)


def _forget_promised_ballot(records: Sequence[Any], cup: int, checksum: int) -> RecoveredState:
    """Rebuilds ``promised`` from the accept records only (PromiseRecords are ignored)."""
    full = recover_state(records, cup, checksum)
    accepts = recover_state([r for r in records if isinstance(r, AcceptRecord)], cup, checksum)
    return dataclasses.replace(accepts, max_round=full.max_round)


def _drop_last_accept(records: Sequence[Any], cup: int, checksum: int) -> RecoveredState:
    """Loses the last AcceptRecord of the log (an off-by-one at the tail)."""
    last = max((k for k, r in enumerate(records) if isinstance(r, AcceptRecord)), default=None)
    if last is not None:
        records = [r for k, r in enumerate(records) if k != last]
    return recover_state(records, cup, checksum)


def _misorder_ballots(records: Sequence[Any], cup: int, checksum: int) -> RecoveredState:
    """Orders ballots as (node, round) instead of (round, node)."""

    def key(b: Ballot) -> tuple[int, int]:
        return (b.node, b.round)

    promised, max_round = ZERO, 0
    accepted: dict[int, tuple[Ballot, bytes]] = {}
    for r in records:
        promised = max(promised, r.ballot, key=key)
        max_round = max(max_round, r.ballot.round)
        if isinstance(r, AcceptRecord) and r.instance > cup:
            held = accepted.get(r.instance)
            if held is None or key(r.ballot) >= key(held[0]):
                accepted[r.instance] = (r.ballot, r.value)
    return RecoveredState(promised, max_round, accepted, cup, checksum)


_ALL = (
    Bug(
        "forget_promise",
        "restart forgets the promised ballot and accepted values",
        recover=_forget_promise,
    ),
    Bug(
        "reply_before_persist",
        "every reply leaves before its records are durable",
        node=EarlyReplyNode,
    ),
    Bug(
        "promise_before_persist",
        "Promise leaves before its PromiseRecord is durable",
        node=EarlyPromiseNode,
    ),
    Bug(
        "prepare_before_persist",
        "Prepare leaves before the candidate's own promise is durable",
        node=EarlyPrepareNode,
    ),
    Bug(
        "vote_before_persist",
        "the master counts its own vote before its accept is durable",
        node=EarlyVoteNode,
    ),
    Bug(
        "forget_promised_ballot",
        "restart rebuilds the promise from accept records only",
        recover=_forget_promised_ballot,
    ),
    Bug(
        "recovery_drops_last_accept",
        "recovery loses the last AcceptRecord of the log",
        recover=_drop_last_accept,
    ),
    Bug(
        "recovery_misorders_ballots",
        "recovery orders ballots by node before round",
        recover=_misorder_ballots,
    ),
    Bug(
        "same_round_promise",
        "an acceptor promises a rival of the same round (rounds compared)",
        node=SameRoundPromiseNode,
    ),
)
BUGS: dict[str, Bug] = {b.name: b for b in _ALL}


# ------------------------------------------------------------------------ the catch table


@dataclass(slots=True)
class Share:
    bug: str
    seeds: int = 0
    caught: int = 0
    first: int | None = None
    by: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def share(self) -> float:
        return self.caught / self.seeds if self.seeds else 0.0


def catch_share(
    bug: str,
    seeds: Iterable[int],
    n: int = 3,
    steps: int = 2000,
    enough: int | None = None,
    **sim: Any,
) -> Share:
    """Run ``bug`` over ``seeds`` and count the seeds whose run fails a safety, durability or
    recovery check (a liveness failure does not count). Stops early once ``enough`` caught.
    ``sim``: more ``Sim`` arguments."""
    from tests.sim.sim import Sim, SimViolation

    out = Share(bug)
    for seed in seeds:
        out.seeds += 1
        try:
            Sim(seed, n, bug=bug, **sim).run(steps)
        except SimViolation as exc:
            kind = exc.kind
            if kind == "LIVENESS":
                out.by["(liveness only)"] += 1
                continue
            out.caught += 1
            out.by[kind] += 1
            if out.first is None:
                out.first = seed
            if enough is not None and out.caught >= enough:
                break
    return out


def needed(seeds: int) -> int:
    return math.ceil(MIN_SHARE * seeds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.planted", description=__doc__)
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument(
        "--no-restart-check",
        action="store_true",
        help="without the recovered-state comparison at restarts: what the other checks catch",
    )
    parser.add_argument("bugs", nargs="*", default=list(BUGS))
    args = parser.parse_args(argv)
    print(
        f"{'bug':28} {'caught':>9} {'share':>6} {'first':>5}  checks  ({args.n} replicas, "
        f"{args.steps} steps)"
    )
    low = 0
    for name in args.bugs:
        started = time.monotonic()
        s = catch_share(
            name, range(args.seeds), args.n, args.steps, restart_check=not args.no_restart_check
        )
        low += s.share < MIN_SHARE
        by = ", ".join(f"{k} {v}" for k, v in s.by.most_common())
        print(
            f"{name:28} {s.caught:4}/{s.seeds:<4} {s.share:6.0%} {s.first!s:>5}  {by}  "
            f"({time.monotonic() - started:.1f}s)",
            flush=True,
        )
    return 1 if low else 0


if __name__ == "__main__":
    raise SystemExit(main())
