"""State, roles and persistence plumbing shared by every part of ``PaxosNode``.

``NodeBase`` holds a replica's state (acceptor, learner, role, master knowledge, timers, the
queue of persists in flight with the actions waiting on each) and the role transitions
(``Role``: FOLLOWER -> CANDIDATE -> MASTER -> FOLLOWER, checked against ``TRANSITIONS``).
Replies are released only after every record persisted before them is durable
(``_after_durable``). Not used directly: see ``phxq.paxos.node.PaxosNode``.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

from phxq.paxos import proposer
from phxq.paxos.acceptor import Acceptor
from phxq.paxos.ballot import Ballot
from phxq.paxos.config import GroupConfig, RecoveredState
from phxq.paxos.effects import (
    AcceptRecord,
    Effect,
    Persist,
    PromiseRecord,
    ProposalFailed,
    RoleChanged,
    Send,
)
from phxq.paxos.learner import Learner
from phxq.paxos.messages import (
    AcceptedEntry,
    CatchupRequest,
    Message,
)

CATCHUP_BATCH = 256  # instances per catch-up request


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    MASTER = "master"


TRANSITIONS: dict[Role, frozenset[Role]] = {
    Role.FOLLOWER: frozenset({Role.CANDIDATE}),
    Role.CANDIDATE: frozenset({Role.FOLLOWER, Role.MASTER}),
    Role.MASTER: frozenset({Role.FOLLOWER}),
}


class IllegalTransition(AssertionError):
    """A role change the state table does not allow (a bug in the core, never input)."""


def failover_wait(config: GroupConfig, master: int) -> float:
    """How long this follower of ``master`` waits, after it last heard from it, before it asks
    for a pre-vote. The first in line asks once every follower's lease view of the master has
    run out -- a lease plus one heartbeat interval of slack, so that the others grant it -- and
    the next ones half a lease apart, so that they rarely duel. The line: the preferred node
    first (it would take its group back anyway), then the others in member order after the
    master ("the next live node takes over"). Availability only: safety never depends on it."""
    members, me, preferred = config.members, config.node_id, config.preferred_master
    n = len(members)
    start = members.index(master) if master in members else 0
    line = [members[(start + k) % n] for k in range(1, n)]
    if preferred in line:
        line.remove(preferred)
        line.insert(0, preferred)
    position = line.index(me) if me in line else n
    return config.lease + config.heartbeat_interval + position * config.lease / 2


class NodeBase:
    """Shared state and helpers of one replica of one group."""

    def __init__(self, config: GroupConfig, recovered: RecoveredState | None, now: float) -> None:
        rec = recovered or RecoveredState()
        self.config = config
        self.node_id = config.node_id
        self._peers = config.peers
        self._majority = config.majority
        self._rank = config.rank  # a computed property of the (frozen) config: read it once
        # Before any master is known (start-up, after a step-down): the preferred node first.
        self._timeout = config.lease + self._rank * config.lease / 2
        # While following a master: ``failover_wait`` for the master it was computed for.
        self._follow_wait, self._follow_for = self._timeout, -1
        self.acceptor = Acceptor(rec.promised, rec.accepted)
        self.learner = Learner(rec.chosen_up_to, rec.checksum)
        self._max_round = max(rec.max_round, self.acceptor.promised.round)
        self.role = Role.FOLLOWER
        self._ballot = self.acceptor.promised  # own ballot while candidate/master
        self._master: int | None = None
        self._master_ballot = self.acceptor.promised
        self._master_seen = now
        self._election_at = now + self._timeout
        self._takeover_at = now
        self._last_tick = now
        # pre-vote (before phase 1): the ballot asked about, who said yes, and why we asked
        self._prevote: Ballot | None = None
        self._grants: set[int] = set()
        self._prevote_takeover = False
        self._prevote_ok_until = -float("inf")
        self._resume_at: int | None = None  # retry phase 1 once learned up to here
        # phase 1
        self._from = 0
        self._promises: dict[int, tuple[AcceptedEntry, ...]] = {}
        self._phase1_deadline = 0.0
        # phase 2
        self._window: proposer.Window | None = None
        self._peer_seen: dict[int, float] = {}
        self._rejected_by: set[int] = set()  # peers that promised above our master ballot
        self._refresh_at: float | None = None  # when a master re-runs phase 1 to win them back
        self._master_since = now
        self._heartbeat_at = now
        self._newly_chosen: list[int] = []
        # persistence: tokens in submission order, each with the actions waiting on it
        self._token = 0
        self._held: deque[tuple[int, list[Any]]] = deque()

    @property
    def is_master(self) -> bool:
        return self.role is Role.MASTER

    @property
    def master(self) -> int | None:
        return self.node_id if self.role is Role.MASTER else self._master

    @property
    def ready(self) -> bool:
        """Master, and every instance it re-proposed after phase 1 has been learned here."""
        w = self._window
        return w is not None and self.learner.chosen_up_to >= w.recovery_end

    @property
    def ballot(self) -> Ballot:
        return self._ballot if self.role is not Role.FOLLOWER else self._master_ballot

    @property
    def promised(self) -> Ballot:
        return self.acceptor.promised

    @property
    def chosen_up_to(self) -> int:
        return self.learner.chosen_up_to

    @property
    def checksum(self) -> int:
        return self.learner.checksum

    @property
    def known_chosen(self) -> int:
        return self.learner.known_chosen

    @property
    def diverged(self) -> bool:
        return self.learner.diverged

    def next_deadline(self) -> float | None:
        # Called after every input by the runtime: no allocation on this path.
        role = self.role
        if role is Role.MASTER:
            deadline = self._heartbeat_at
        elif role is Role.CANDIDATE:
            deadline = self._phase1_deadline
        else:
            deadline = self._election_at
            if self._rank == 0 and self._master is not None:
                # the preferred node polls for "caught up, take the group back"
                poll = max(self._takeover_at, self._last_tick + self.config.heartbeat_interval)
                deadline = min(deadline, poll)
        learner = self.learner
        if learner.catchup_peer is not None and learner.catchup_deadline < deadline:
            deadline = learner.catchup_deadline
        return deadline

    def _persist(self, records: tuple[PromiseRecord | AcceptRecord, ...], out: list[Effect]) -> int:
        self._token += 1
        out.append(Persist(self._token, records))
        self._held.append((self._token, []))
        return self._token

    def _after_durable(self, action: Any, out: list[Effect]) -> None:
        """Run ``action`` once everything persisted so far is durable (now, if nothing is
        pending)."""
        if self._held:
            self._held[-1][1].append(action)
        elif isinstance(action, Send):
            out.append(action)
        else:  # pragma: no cover - internal actions are always attached to their own token
            raise AssertionError(action)

    def _send(self, to: int, msg: Message, out: list[Effect]) -> None:
        out.append(Send(to, msg))

    def _broadcast(self, msg: Message, out: list[Effect]) -> None:
        for peer in self._peers:
            out.append(Send(peer, msg))

    def _set_role(self, role: Role) -> None:
        if role not in TRANSITIONS[self.role]:
            raise IllegalTransition(f"{self.role.value} -> {role.value}")
        self.role = role

    def _note_master(self, sender: int, ballot: Ballot, now: float, out: list[Effect]) -> None:
        """A live master with ``ballot`` (>= everything we know of) was heard."""
        if self.role is Role.MASTER and ballot > self._ballot:
            self._step_down(now, out, hint=sender)
        elif self.role is Role.CANDIDATE and ballot > self._ballot:
            self._abandon(now, now + self._timeout, out)
        if self.role is not Role.FOLLOWER:
            return
        if self._master != sender or self._master_ballot != ballot:
            if self._follow_for != sender:
                self._follow_wait = failover_wait(self.config, sender)
                self._follow_for = sender
            self._master, self._master_ballot = sender, ballot
            out.append(RoleChanged(False, sender, ballot))
        self._master_seen = now
        self._election_at = now + self._follow_wait

    def _higher_ballot_seen(
        self, ballot: Ballot, now: float, out: list[Effect], by: int | None = None
    ) -> None:
        """Acceptor ``by`` promised a ballot above ours. A candidate gives up and retries soon
        -- later if the ballot is the preferred node's (it is taking its group back: do not
        duel with it). A master is *not* deposed by one such acceptor: it stops only once
        enough of them have promised higher that its ballot can never gather a majority again
        (safety never depends on this: those acceptors refuse its accepts anyway). A minority
        of them cannot vote for it, so it re-runs phase 1 (above their ballot) a lease later
        to win them back, unless a real master with a higher ballot shows up first."""
        self._max_round = max(self._max_round, ballot.round)
        yielding = ballot.node == self.config.preferred_master
        retry = now + (self._timeout if yielding else self.config.heartbeat_interval)
        if self.role is Role.MASTER and ballot > self._ballot:
            if by is not None:
                self._rejected_by.add(by)
            if by is None or len(self._rejected_by) > len(self.config.members) - self._majority:
                self._step_down(now, out, hint=None)
                self._election_at = retry
            elif self._refresh_at is None:
                self._refresh_at = now + self.config.lease
        elif self.role is Role.CANDIDATE and ballot > self._ballot:
            self._abandon(now, retry, out)

    def _step_down(self, now: float, out: list[Effect], hint: int | None) -> None:
        window = self._window
        assert window is not None
        queued, sent = window.all_pids()
        if queued:
            out.append(ProposalFailed(queued, "not_master", hint))
        if sent:
            out.append(ProposalFailed(sent, "unknown", hint))
        self._window = None
        self._set_role(Role.FOLLOWER)
        self._master, self._master_ballot = hint, self.acceptor.promised
        self._election_at = now + self._timeout
        out.append(RoleChanged(False, hint, self.acceptor.promised))

    def _abandon(self, now: float, retry_at: float, out: list[Effect]) -> None:
        self._set_role(Role.FOLLOWER)
        self._promises = {}
        self._election_at = retry_at

    def _wants_takeover(self, now: float) -> bool:
        """The preferred node takes its group back once it has caught up with the master."""
        if self._rank != 0 or self._master is None or now < self._takeover_at:
            return False
        caught_up = self.learner.chosen_up_to >= self.learner.peer_chosen.get(self._master, 0)
        return caught_up and not self.learner.diverged and self.learner.catchup_peer is None

    def _grants_prevote(self, sender: int, chosen_up_to: int, now: float) -> bool:
        """Would we promise ``sender`` a higher ballot now? Only when no live master is known
        (the master itself always says no) -- or to the preferred node once it has caught up
        with us to within one window (it is taking its group back)."""
        caught_up = chosen_up_to + self.config.window >= self.learner.chosen_up_to
        if sender == self.config.preferred_master and caught_up:
            return True
        if self.role is Role.MASTER:
            return False
        alive = self._master is not None and now < self._master_seen + self.config.lease
        return not (alive and sender != self._master)

    def _sticky(self, sender: int, now: float) -> bool:
        """Refuse a rival while a live master is known (availability only)."""
        if sender == self.config.preferred_master:
            return False
        if self.role is Role.MASTER:
            return True
        alive = self._master is not None and now < self._master_seen + self.config.lease
        return alive and sender != self._master

    def _request_catchup(
        self, now: float, out: list[Effect], exclude: int | None, prefer: int | None = None
    ) -> None:
        learner = self.learner
        if learner.catchup_peer is not None:
            return
        peer = learner.catchup_target(exclude, prefer if prefer is not None else self._master)
        if peer is None:
            return
        learner.catchup_peer = peer
        learner.catchup_deadline = now + self.config.lease / 2
        req = CatchupRequest(
            self.config.group, self.node_id, learner.chosen_up_to + 1, CATCHUP_BATCH
        )
        self._send(peer, req, out)
