"""The learner: chosen values in, ``Learned`` effects out, strictly in instance order.

A value becomes *chosen* here only from an explicit source: the local master counting a
majority, a ``Chosen(b, i..j)`` for which the local acceptor holds ``(i, b)`` with that exact
ballot, or a catch-up entry whose chain checksum verifies. The learner tracks how far peers have
learned (``peer_chosen``) and runs at most one catch-up request at a time, with a timeout that
moves on to another peer. A checksum mismatch emits ``Divergence`` and stops learning for good.
"""

from __future__ import annotations

from phxq.paxos.ballot import Ballot
from phxq.paxos.checksum import chain_checksum
from phxq.paxos.effects import Divergence, Learned
from phxq.paxos.messages import ChosenEntry

RECENT_CHECKSUMS = 1024


class Learner:
    """In-order learning, catch-up bookkeeping and divergence detection."""

    def __init__(self, chosen_up_to: int, checksum: int) -> None:
        self.chosen_up_to = chosen_up_to
        self.checksum = checksum
        self.known_chosen = chosen_up_to
        self.diverged = False
        self.peer_chosen: dict[int, int] = {}
        # chosen but not yet learnable (a predecessor is missing): value, ballot, proposal ids
        self.ready: dict[int, tuple[bytes, Ballot | None, tuple[int, ...]]] = {}
        # instances known chosen with a ballot whose value we do not hold (yet)
        self.chosen_ballot: dict[int, Ballot] = {}
        self.recent: dict[int, int] = {chosen_up_to: checksum}
        self.catchup_peer: int | None = None
        self.catchup_deadline = 0.0

    def note_known(self, instance: int) -> None:
        if instance > self.known_chosen:
            self.known_chosen = instance

    def note_peer(self, peer: int, chosen_up_to: int) -> None:
        if chosen_up_to > self.peer_chosen.get(peer, 0):
            self.peer_chosen[peer] = chosen_up_to
        self.note_known(chosen_up_to)

    def add_chosen(
        self, instance: int, value: bytes, ballot: Ballot | None, pids: tuple[int, ...] = ()
    ) -> None:
        """Record that ``instance`` was chosen with ``value``; learned later, in order."""
        if instance <= self.chosen_up_to:
            return
        old = self.ready.get(instance)
        if old is None or (pids and old[0] == value):
            self.ready[instance] = (value, ballot, pids)
        self.chosen_ballot.pop(instance, None)
        self.note_known(instance)

    def drain(self) -> list[Learned]:
        """Learn every instance that is now contiguous with ``chosen_up_to``."""
        out: list[Learned] = []
        ready = self.ready
        while not self.diverged:
            nxt = self.chosen_up_to + 1
            entry = ready.pop(nxt, None)
            if entry is None:
                break
            value, ballot, pids = entry
            out.append(self._learn(nxt, value, ballot, pids))
        return out

    def _learn(
        self, instance: int, value: bytes, ballot: Ballot | None, pids: tuple[int, ...]
    ) -> Learned:
        checksum = chain_checksum(self.checksum, instance, value)
        self.chosen_up_to = instance
        self.checksum = checksum
        self.recent[instance] = checksum
        self.recent.pop(instance - RECENT_CHECKSUMS, None)
        self.chosen_ballot.pop(instance, None)
        return Learned(instance, value, checksum, ballot, pids)

    def jump(self, instance: int, checksum: int) -> None:
        """Everything up to ``instance`` was learned out of band (a snapshot from a peer whose
        log no longer holds those instances): continue learning from ``instance + 1``."""
        if instance <= self.chosen_up_to:
            return
        self.chosen_up_to = instance
        self.checksum = checksum
        self.note_known(instance)
        self.recent = {instance: checksum}
        for i in [i for i in self.ready if i <= instance]:
            del self.ready[i]
        for i in [i for i in self.chosen_ballot if i <= instance]:
            del self.chosen_ballot[i]
        self.catchup_peer = None

    def check(self, instance: int, remote: int, peer: int) -> Divergence | None:
        """Compare a peer's checksum at ``instance`` with ours, when we still remember ours."""
        local = self.recent.get(instance)
        if local is None or local == remote or self.diverged:
            return None
        self.diverged = True
        return Divergence(instance, local, remote, peer)

    def on_catchup_entries(
        self, entries: tuple[ChosenEntry, ...], peer: int
    ) -> tuple[list[Learned], Divergence | None]:
        """Learn catch-up entries in order, verifying the chain checksum of each."""
        learned: list[Learned] = []
        for e in entries:
            if self.diverged:
                break
            if e.instance <= self.chosen_up_to:
                div = self.check(e.instance, e.checksum, peer)
                if div is not None:
                    return learned, div
                continue
            if e.instance != self.chosen_up_to + 1:
                break
            expected = chain_checksum(self.checksum, e.instance, e.value)
            if expected != e.checksum:
                self.diverged = True
                return learned, Divergence(e.instance, expected, e.checksum, peer)
            held = self.ready.pop(e.instance, None)
            pids = held[2] if held is not None and held[0] == e.value else ()
            learned.append(self._learn(e.instance, e.value, None, pids))
            learned.extend(self.drain())
        return learned, None

    def catchup_target(self, exclude: int | None, prefer: int | None) -> int | None:
        """The peer to ask for the next missing instance, or None if not needed/possible."""
        if self.diverged:
            return None
        nxt = self.chosen_up_to + 1
        if nxt > self.known_chosen or nxt in self.ready:
            return None
        able = [p for p, c in self.peer_chosen.items() if c >= nxt]
        if not able:
            return None
        if prefer in able and prefer != exclude:
            return prefer
        others = sorted(p for p in able if p != exclude)
        if not others:
            return exclude
        return max(others, key=lambda p: self.peer_chosen[p])
