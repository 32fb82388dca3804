"""The simulated disk of one replica, and an independent recomputation of what it recovers.

Model (the PLog's guarantees, ``phxq/plog/__init__.py``): the records of a group form one stream
and become durable in the order they were appended. The runtime appends a ``Persist``'s records
one by one (``store.replica``), and each ``Learned`` as a *lazy* chosen record that becomes
durable with the next urgent write or after the writer's lazy delay. A crash keeps the durable
prefix plus any prefix of what was still in flight: the writer may have taken part of a
``Persist`` into a batch that reached the disk, and a torn last batch keeps the records written
completely before the tear; it never keeps a record without the ones appended before it.

``SimDisk`` keeps the durable records (which survive every crash) and the in-flight ones, plus
indexes of the durable records that the send-time checks read. ``fold(records)`` recomputes the
state a replica must restart from, written independently of ``phxq.paxos.recover_state`` and of
the PLog's recovery so that either can be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from phxq.paxos import ZERO, AcceptRecord, Ballot, PromiseRecord


@dataclass(frozen=True, slots=True)
class ChosenMark:
    """The PLog's chosen record of ``instance`` (``ballot`` None: learned through catch-up)."""

    instance: int
    ballot: Ballot | None
    checksum: int
    value: bytes


Record = PromiseRecord | AcceptRecord | ChosenMark


@dataclass(slots=True)
class Folded:
    """What a replica restarts from: the fields of ``RecoveredState``, computed by ``fold``."""

    promised: Ballot = ZERO
    max_round: int = 0
    accepted: dict[int, tuple[Ballot, bytes]] = field(default_factory=dict)
    chosen_up_to: int = 0
    checksum: int = 0


def fold(records: Iterable[Record]) -> Folded:
    """Replay ``records`` in write order: the highest ballot promised or accepted, the highest
    round of any ballot, the chosen prefix, and per instance above it the value accepted with the
    highest ballot."""
    out = Folded()
    best: dict[int, tuple[Ballot, bytes]] = {}
    for r in records:
        if isinstance(r, ChosenMark):
            if r.instance != out.chosen_up_to + 1:
                raise AssertionError(
                    f"chosen records out of order: {r.instance} after {out.chosen_up_to}"
                )
            out.chosen_up_to, out.checksum = r.instance, r.checksum
            if r.ballot is not None and r.ballot.round > out.max_round:
                out.max_round = r.ballot.round
            continue
        b = r.ballot
        if b > out.promised:
            out.promised = b
        if b.round > out.max_round:
            out.max_round = b.round
        if isinstance(r, AcceptRecord):
            held = best.get(r.instance)
            if held is None or not b < held[0]:
                best[r.instance] = (b, r.value)
    out.accepted = {i: bv for i, bv in best.items() if i > out.chosen_up_to}
    return out


class SimDisk:
    """Durable and in-flight records of one replica (see the module docstring).

    Stream positions count every record ever appended: ``append`` returns the position after its
    records, and ``sync(pos)`` makes everything before ``pos`` durable."""

    __slots__ = (
        "accepts",
        "best",
        "checksum",
        "chosen_up_to",
        "durable",
        "pending",
        "promised",
        "promises",
    )

    def __init__(self) -> None:
        self.durable: list[Record] = []
        self.pending: list[Record] = []
        # indexes of the durable records (they never shrink: durable is durable)
        self.promised = ZERO  # highest ballot of any durable promise or accept
        self.promises: set[Ballot] = set()  # ballots with a durable PromiseRecord
        self.accepts: dict[tuple[int, Ballot], bytes] = {}
        self.best: dict[int, tuple[Ballot, bytes]] = {}  # highest accept, above chosen_up_to
        self.chosen_up_to = 0
        self.checksum = 0

    @property
    def end(self) -> int:
        return len(self.durable) + len(self.pending)

    def append(self, records: Iterable[Record]) -> int:
        self.pending.extend(records)
        return self.end

    def sync(self, upto: int) -> list[Record]:
        """Everything appended before position ``upto`` is durable; returns what just became."""
        k = upto - len(self.durable)
        if k <= 0:
            return []
        moved = self.pending[:k]
        del self.pending[:k]
        self.durable.extend(moved)
        for r in moved:
            self._index(r)
        return moved

    def crash(self, keep: int) -> list[Record]:
        """Power loss: the first ``keep`` in-flight records reached the disk, the rest did not."""
        moved = self.sync(len(self.durable) + keep)
        self.pending = []
        return moved

    def _index(self, r: Record) -> None:
        if isinstance(r, ChosenMark):
            self.chosen_up_to, self.checksum = r.instance, r.checksum
            self.best.pop(r.instance, None)
            return
        if r.ballot > self.promised:
            self.promised = r.ballot
        if isinstance(r, PromiseRecord):
            self.promises.add(r.ballot)
            return
        self.accepts[(r.instance, r.ballot)] = r.value
        if r.instance > self.chosen_up_to:
            held = self.best.get(r.instance)
            if held is None or not r.ballot < held[0]:
                self.best[r.instance] = (r.ballot, r.value)
