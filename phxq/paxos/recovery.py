"""Pure reference for rebuilding ``RecoveredState`` from durable acceptor records.

``recover_state(records, chosen_up_to, checksum)`` folds ``PromiseRecord``/``AcceptRecord`` in
write order: ``promised`` = highest ballot promised or accepted, ``max_round`` = highest round
of any record, ``accepted`` = per instance above ``chosen_up_to`` the highest-ballot value.
The simulator uses it; the PLog implements the same fold over its segment files.
"""

from __future__ import annotations

from collections.abc import Iterable

from phxq.paxos.ballot import ZERO, Ballot
from phxq.paxos.config import RecoveredState
from phxq.paxos.effects import AcceptRecord, PromiseRecord


def recover_state(
    records: Iterable[PromiseRecord | AcceptRecord], chosen_up_to: int, checksum: int
) -> RecoveredState:
    promised = ZERO
    max_round = 0
    accepted: dict[int, tuple[Ballot, bytes]] = {}
    for r in records:
        promised = max(promised, r.ballot)
        max_round = max(max_round, r.ballot.round)
        if isinstance(r, AcceptRecord) and r.instance > chosen_up_to:
            held = accepted.get(r.instance)
            if held is None or r.ballot >= held[0]:
                accepted[r.instance] = (r.ballot, r.value)
    return RecoveredState(promised, max_round, accepted, chosen_up_to, checksum)
