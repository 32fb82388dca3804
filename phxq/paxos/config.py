"""Static configuration of one replica of one group, and the state it restarts from.

- ``GroupConfig(group, node_id, members, window=8, window_bytes=8 MiB, max_batch_bytes=1 MiB,
  max_batch_items=1024, heartbeat_interval=0.1, lease=0.6)``; ``preferred_master`` is
  ``members[group % len(members)]``; ``rank`` is this node's position after the preferred one
  (0 for the preferred node), used to stagger elections.
- ``RecoveredState(promised, max_round, accepted, chosen_up_to, checksum)``: what the PLog
  returns on restart (see ``recovery.recover_state`` for the pure reference implementation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from phxq.errors import BadArgument
from phxq.paxos.ballot import ZERO, Ballot


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """One replica's view of its group. ``members`` are the sorted node ids of the group."""

    group: int
    node_id: int
    members: tuple[int, ...]
    window: int = 8
    window_bytes: int = 8 << 20
    max_batch_bytes: int = 1 << 20
    max_batch_items: int = 1024
    heartbeat_interval: float = 0.1
    lease: float = 0.6

    def __post_init__(self) -> None:
        if tuple(sorted(set(self.members))) != tuple(self.members) or not self.members:
            raise BadArgument(f"members must be sorted, unique and non-empty: {self.members}")
        if self.node_id not in self.members:
            raise BadArgument(f"node {self.node_id} is not a member of {self.members}")
        if self.window < 1 or self.window_bytes < 1:
            raise BadArgument("window and window_bytes must be >= 1")
        if self.max_batch_bytes < 1 or self.max_batch_items < 1:
            raise BadArgument("max_batch_bytes and max_batch_items must be >= 1")
        if not 0 < self.heartbeat_interval < self.lease:
            raise BadArgument("need 0 < heartbeat_interval < lease")

    @property
    def preferred_master(self) -> int:
        return self.members[self.group % len(self.members)]

    @property
    def rank(self) -> int:
        """Position of this node after the preferred master (0 = preferred)."""
        n = len(self.members)
        return (self.members.index(self.node_id) - self.group) % n

    @property
    def majority(self) -> int:
        return len(self.members) // 2 + 1

    @property
    def peers(self) -> tuple[int, ...]:
        return tuple(m for m in self.members if m != self.node_id)


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """Durable acceptor and learner state a replica restarts from.

    ``promised`` is the highest ballot promised *or accepted*; ``max_round`` the highest round
    ever persisted in any ballot; ``accepted`` the highest-ballot accepted value per instance
    above ``chosen_up_to``; ``checksum`` the chain checksum at ``chosen_up_to``."""

    promised: Ballot = ZERO
    max_round: int = 0
    accepted: Mapping[int, tuple[Ballot, bytes]] = field(default_factory=dict)
    chosen_up_to: int = 0
    checksum: int = 0
