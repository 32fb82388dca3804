"""The acceptor's state and rules (pure; persistence and reply-holding live in ``PaxosNode``).

One promised ballot for the whole group. ``Prepare(b, from)`` is promised iff ``b > promised``;
``Accept(b, i, v)`` is accepted iff ``b >= promised`` (which also raises ``promised`` to ``b``).
Accepted values are kept only above the learner's ``chosen_up_to`` (``trim`` drops them as they
are learned; the chosen values live in the PLog).
"""

from __future__ import annotations

from collections.abc import Mapping

from phxq.paxos.ballot import ZERO, Ballot
from phxq.paxos.messages import AcceptedEntry


class Acceptor:
    """Promise/accept state of one replica of one group."""

    __slots__ = ("accepted", "promised")

    def __init__(
        self, promised: Ballot = ZERO, accepted: Mapping[int, tuple[Ballot, bytes]] | None = None
    ) -> None:
        self.promised = promised
        self.accepted: dict[int, tuple[Ballot, bytes]] = dict(accepted or {})
        for ballot, _ in self.accepted.values():
            if ballot > self.promised:
                self.promised = ballot  # accepting b implies having promised b

    def can_promise(self, ballot: Ballot) -> bool:
        return ballot > self.promised

    def promise(self, ballot: Ballot) -> None:
        """Promise ``ballot`` (caller checked ``can_promise`` and persists a PromiseRecord)."""
        assert ballot > self.promised, (ballot, self.promised)
        self.promised = ballot

    def can_accept(self, ballot: Ballot) -> bool:
        return ballot >= self.promised

    def accept(self, instance: int, ballot: Ballot, value: bytes) -> bool:
        """Accept ``(instance, ballot, value)``; returns False when it was already accepted with
        exactly this ballot (nothing new to persist)."""
        assert ballot >= self.promised, (ballot, self.promised)
        self.promised = ballot
        if self.accepted.get(instance, (ZERO, b""))[0] == ballot:
            return False
        self.accepted[instance] = (ballot, value)
        return True

    def entries_from(self, from_instance: int) -> tuple[AcceptedEntry, ...]:
        """Every accepted (instance, ballot, value) held for instances >= ``from_instance``."""
        return tuple(
            AcceptedEntry(i, b, v)
            for i, (b, v) in sorted(self.accepted.items())
            if i >= from_instance
        )

    def trim(self, instance: int) -> None:
        """Forget the accepted value of a learned instance."""
        self.accepted.pop(instance, None)
