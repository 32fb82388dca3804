"""The simulator's ground truth and the checks that read it (see ``sim.py``).

Ground truth is what the disks hold, never what the nodes say: an instance is *chosen* with value
v at ballot b once a majority of replicas hold a durable ``AcceptRecord(i, b, v)``.

``check_send`` runs on every message a node sends, before it reaches the network, and asserts
what the message implies already holds on the sender's simulated disk (``disk.SimDisk``):

- ``Promise(b)``: a durable promise of b (or higher); every accepted value it reports is durable;
  every durable accept below b above the sender's ``chosen_up_to`` from ``from_instance`` on is
  reported (with that ballot or a higher one) -- a promise that forgets a vote breaks Paxos;
- ``Accepted(b, i)``: a durable ``AcceptRecord(i, b)``;
- ``Prepare(b)``: b is the sender's own ballot, its ``PromiseRecord(b)`` is durable, and no
  earlier life of the sender used b (a restart must never reuse a ballot);
- ``Accept(b, i, v)``: the sender's durable promise of b, a majority promised b (the promises
  sent, counting the sender's own), no other value was proposed for (i, b), and if i was chosen
  with value w at a ballot below b then v == w (Paxos' P2b; also checked when i becomes chosen);
- ``Chosen(b, i..j)``: a majority holds durable accepts of every instance of the range at b;
- ``Heartbeat(b)``: the sender's durable promise of its master ballot b;
- and an acceptor's votes never go back: the ballots of the ``Promise``, ``Accepted`` and
  ``Prepare`` (its promise to itself) a node sends, over all its lives, never decrease.

``on_durable`` counts durable votes and checks no instance is chosen twice. ``check_recovered``
compares what a restarted node recovered with ``disk.fold`` of its durable records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from phxq.paxos import (
    AcceptRecord,
    Ballot,
    PaxosNode,
    RecoveredState,
)
from phxq.paxos.messages import Accept, Accepted, Chosen, Heartbeat, Prepare, Promise
from tests.sim.disk import Folded, Record, SimDisk


class Oracle:
    """Votes, chosen values and proposals of one simulated group; ``fail(what)`` raises."""

    def __init__(self, majority: int, fail: Callable[[str], None]) -> None:
        self.majority = majority
        self.fail = fail
        self.votes: dict[tuple[int, Ballot], tuple[bytes, set[int]]] = {}
        self.chosen: dict[int, bytes] = {}
        self.chosen_ballot: dict[int, Ballot] = {}  # lowest ballot it was chosen with
        self.proposals: dict[int, dict[Ballot, bytes]] = {}  # instance -> ballot -> value
        self.prepared: dict[Ballot, int] = {}  # ballot -> life (epoch) of its proposer
        self.promisers: dict[Ballot, set[int]] = {}  # ballot -> nodes that sent Promise(b)
        self.voted: dict[int, tuple[Ballot, str]] = {}  # node -> highest vote sent, and what
        self._checks: dict[type[Any], Callable[[int, int, Any, SimDisk], None]] = {
            Promise: self._promise,
            Accepted: self._accepted,
            Prepare: self._prepare,
            Accept: self._accept,
            Chosen: self._chosen,
            Heartbeat: self._heartbeat,
        }

    # ------------------------------------------------------------------ durable votes

    def on_durable(self, m: int, records: Iterable[Record]) -> None:
        for r in records:
            if type(r) is not AcceptRecord:
                continue
            key = (r.instance, r.ballot)
            held = self.votes.get(key)
            if held is None:
                held = self.votes[key] = (r.value, set())
            elif held[0] != r.value:
                self.fail(f"SAFETY: two values accepted for instance {r.instance} at {r.ballot}")
            held[1].add(m)
            if len(held[1]) >= self.majority:
                self._now_chosen(r.instance, r.ballot, r.value)

    def _now_chosen(self, i: int, b: Ballot, value: bytes) -> None:
        old = self.chosen.setdefault(i, value)
        if old != value:
            self.fail(
                f"SAFETY: instance {i} chosen twice: {old[:40]!r} then {value[:40]!r} (ballot {b})"
            )
        low = self.chosen_ballot.get(i)
        if low is None or b < low:
            self.chosen_ballot[i] = b
            for pb, pv in self.proposals.get(i, {}).items():
                if pb > b and pv != value:
                    self.fail(
                        f"SAFETY: instance {i} chosen at {b} with {value[:40]!r}, but ballot {pb} "
                        f"proposed {pv[:40]!r}"
                    )

    # ------------------------------------------------------------------- at every send

    def check_send(self, m: int, epoch: int, msg: Any, disk: SimDisk) -> None:
        check = self._checks.get(type(msg))
        if check is not None:
            check(m, epoch, msg, disk)

    def _vote(self, m: int, b: Ballot, what: str) -> None:
        last = self.voted.get(m)
        if last is not None and b < last[0]:
            self.fail(
                f"SAFETY: node {m} sent {what}({b}) after {last[1]}({last[0]}): an "
                "acceptor's votes never go back"
            )
        self.voted[m] = (b, what)

    def _promise(self, m: int, epoch: int, msg: Promise, disk: SimDisk) -> None:
        b = msg.ballot
        if disk.promised < b:
            self.fail(
                f"DURABILITY: node {m} sent Promise({b}) but its durable promise is {disk.promised}"
            )
        reported: dict[int, Ballot] = {}
        for e in msg.accepted:
            if disk.accepts.get((e.instance, e.ballot)) != e.value:
                self.fail(
                    f"DURABILITY: node {m} reported accepting ({e.instance}, {e.ballot}) "
                    "in a Promise without a durable record of it"
                )
            reported[e.instance] = e.ballot
        low = max(msg.from_instance, msg.chosen_up_to + 1)
        for i, (ab, _) in disk.best.items():
            if i >= low and ab < b and (i not in reported or reported[i] < ab):
                self.fail(
                    f"SAFETY: node {m} promised {b} from instance {msg.from_instance} "
                    f"without its durable accept ({i}, {ab}) (reported {reported.get(i)})"
                )
        self.promisers.setdefault(b, set()).add(m)
        self._vote(m, b, "Promise")

    def _accepted(self, m: int, epoch: int, msg: Accepted, disk: SimDisk) -> None:
        if (msg.instance, msg.ballot) not in disk.accepts:
            self.fail(
                f"DURABILITY: node {m} sent Accepted({msg.instance}, {msg.ballot}) before "
                "its AcceptRecord was durable"
            )
        self._vote(m, msg.ballot, "Accepted")

    def _prepare(self, m: int, epoch: int, msg: Prepare, disk: SimDisk) -> None:
        b = msg.ballot
        if b.node != m or b not in disk.promises:
            self.fail(f"DURABILITY: node {m} sent Prepare({b}) without a durable promise of it")
        life = self.prepared.setdefault(b, epoch)
        if life != epoch:
            self.fail(f"SAFETY: node {m} reused ballot {b} after a restart")
        self._vote(m, b, "Prepare")

    def _accept(self, m: int, epoch: int, msg: Accept, disk: SimDisk) -> None:
        b, i, v = msg.ballot, msg.instance, msg.value
        if b.node != m or b not in disk.promises:
            self.fail(f"DURABILITY: node {m} sent Accept({b}) without a durable promise of it")
        if len(self.promisers.get(b, ())) + 1 < self.majority:
            self.fail(
                f"SAFETY: node {m} sent Accept({b}, {i}) without a majority of promises "
                f"(promised by {sorted(self.promisers.get(b, ()))})"
            )
        props = self.proposals.setdefault(i, {})
        old = props.setdefault(b, v)
        if old != v:
            self.fail(
                f"SAFETY: two values proposed for instance {i} at ballot {b}: "
                f"{old[:40]!r} and {v[:40]!r}"
            )
        low = self.chosen_ballot.get(i)
        if low is not None and b > low and v != self.chosen[i]:
            self.fail(
                f"SAFETY: instance {i} was chosen at {low} with {self.chosen[i][:40]!r}; "
                f"node {m} proposes {v[:40]!r} at {b}"
            )

    def _chosen(self, m: int, epoch: int, msg: Chosen, disk: SimDisk) -> None:
        for i in range(msg.first, msg.last + 1):
            held = self.votes.get((i, msg.ballot))
            if held is None or len(held[1]) < self.majority:
                self.fail(
                    f"DURABILITY: node {m} announced instance {i} chosen at {msg.ballot} "
                    f"with durable votes from {sorted(held[1]) if held else []}"
                )

    def _heartbeat(self, m: int, epoch: int, msg: Heartbeat, disk: SimDisk) -> None:
        if msg.ballot not in disk.promises:
            self.fail(
                f"DURABILITY: node {m} leads with ballot {msg.ballot} without a durable "
                "promise of it"
            )

    # ------------------------------------------------------------------- at restart

    def check_recovered(
        self,
        m: int,
        rec: RecoveredState,
        node: PaxosNode | None,
        expect: Folded,
        source: str = "recovery",
    ) -> None:
        """The state ``source`` recovered from the node's durable records, and the core's
        acceptor after taking it (``node``), must equal ``expect`` (``disk.fold`` of them)."""
        got = (rec.promised, rec.max_round, dict(rec.accepted), rec.chosen_up_to, rec.checksum)
        want = (
            expect.promised,
            expect.max_round,
            expect.accepted,
            expect.chosen_up_to,
            expect.checksum,
        )
        names = ("promised", "max_round", "accepted", "chosen_up_to", "checksum")
        for name, g, w in zip(names, got, want, strict=True):
            if g != w:
                self.fail(
                    f"RECOVERY: {source} of node {m} gave {name}={_show(g)}, its durable "
                    f"records say {_show(w)}"
                )
        if node is None:
            return
        core = (node.promised, node.acceptor.accepted, node.chosen_up_to, node.checksum)
        if core != (expect.promised, expect.accepted, expect.chosen_up_to, expect.checksum):
            self.fail(
                f"RECOVERY: node {m}'s core took {_show(core)} from its recovered state, "
                f"durable records say {_show(want)}"
            )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."
