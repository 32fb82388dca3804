"""Ballots: ``Ballot(round, node)``, totally ordered by round then node id.

A ballot is created only by the node whose id it carries, and a node never reuses a round: its
next round is above every round it ever persisted or saw (see ``RecoveredState.max_round``), so
two proposers never share a ballot. ``ZERO`` is below every real ballot (real rounds start at 1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Ballot:
    """A Paxos ballot number; compares as the tuple ``(round, node)``."""

    round: int
    node: int

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


ZERO = Ballot(0, 0)
