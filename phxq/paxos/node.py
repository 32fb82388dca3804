"""``PaxosNode``: one replica of one Multi-Paxos group as a sans-I/O state machine.

Inputs (each returns ``list[Effect]``, see ``effects``): ``propose(pid, item, now)``,
``on_message(msg, now)``, ``on_persisted(token, now)``, ``on_tick(now)``; ``next_deadline()``
says when ``on_tick`` is due. Read-only state: ``is_master``, ``master``, ``ready`` (master and
every instance found in phase 1 is learned), ``ballot``, ``promised``, ``chosen_up_to``,
``checksum``, ``known_chosen``, ``diverged``, ``role``.

Roles (``Role``): FOLLOWER -> CANDIDATE (phase 1 running) -> MASTER (phase 2 only) -> FOLLOWER.
Rules kept here: replies leave only after every record persisted before them is durable; the
proposer persists its own promise before sending ``Prepare``; the master's own vote counts only
once its ``AcceptRecord`` is durable; the master is whoever completed phase 1 with the highest
ballot, and leases (``lease``, stickiness, staggered elections by ``config.rank``) only decide
*who tries* -- safety never depends on them.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

from phxq.errors import PhxqError
from phxq.paxos import proposer
from phxq.paxos.acceptor import Acceptor
from phxq.paxos.ballot import Ballot
from phxq.paxos.config import GroupConfig, RecoveredState
from phxq.paxos.effects import (
    AcceptRecord,
    Effect,
    Learned,
    Persist,
    PromiseRecord,
    ProposalFailed,
    RoleChanged,
    Send,
    ServeCatchup,
)
from phxq.paxos.learner import Learner
from phxq.paxos.messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    CatchupReply,
    CatchupRequest,
    Chosen,
    Heartbeat,
    HeartbeatAck,
    Message,
    Prepare,
    Promise,
    Reject,
)

CATCHUP_BATCH = 256  # instances per catch-up request
CHOSEN_SCAN_LIMIT = 4096  # instances of one Chosen range examined at once (the rest: catch-up)


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    MASTER = "master"


_TRANSITIONS: dict[Role, frozenset[Role]] = {
    Role.FOLLOWER: frozenset({Role.CANDIDATE}),
    Role.CANDIDATE: frozenset({Role.FOLLOWER, Role.MASTER}),
    Role.MASTER: frozenset({Role.FOLLOWER}),
}


class IllegalTransition(PhxqError):
    """A role change the state table does not allow (a bug in the core)."""

    code = "paxos_illegal_transition"


class PaxosNode:
    """One replica of one group. Deterministic: same inputs, same effects."""

    def __init__(self, config: GroupConfig, recovered: RecoveredState | None, now: float) -> None:
        rec = recovered or RecoveredState()
        self.config = config
        self.node_id = config.node_id
        self._peers = config.peers
        self._majority = config.majority
        self._timeout = config.lease + config.rank * config.lease / 2
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
        # phase 1
        self._from = 0
        self._promises: dict[int, tuple[AcceptedEntry, ...]] = {}
        self._phase1_deadline = 0.0
        # phase 2
        self._window: proposer.Window | None = None
        self._peer_seen: dict[int, float] = {}
        self._master_since = now
        self._heartbeat_at = now
        self._newly_chosen: list[int] = []
        # persistence: tokens in submission order, each with the actions waiting on it
        self._token = 0
        self._held: deque[tuple[int, list[Any]]] = deque()

    # ------------------------------------------------------------------ read-only state

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
        if self.role is Role.MASTER:
            deadlines = [self._heartbeat_at]
        elif self.role is Role.CANDIDATE:
            deadlines = [self._phase1_deadline]
        else:
            deadlines = [self._election_at]
            if self.config.rank == 0 and self._master is not None:
                # the preferred node polls for "caught up, take the group back"
                deadlines.append(
                    max(self._takeover_at, self._last_tick + self.config.heartbeat_interval)
                )
        if self.learner.catchup_peer is not None:
            deadlines.append(self.learner.catchup_deadline)
        return min(deadlines)

    # -------------------------------------------------------------------------- inputs

    def propose(self, pid: int, item: bytes, now: float) -> list[Effect]:
        """Queue one item for the next instance; fails at once unless this node is master."""
        if self._window is None:
            return [ProposalFailed((pid,), "not_master", self._master)]
        self._window.pending.append((pid, item))
        out: list[Effect] = []
        self._finish(now, out)
        return out

    def on_message(self, msg: Message, now: float) -> list[Effect]:
        out: list[Effect] = []
        if msg.group != self.config.group or msg.sender == self.node_id:
            return out
        if msg.sender not in self.config.members:
            return out
        self._peer_seen[msg.sender] = now
        handler = _HANDLERS[type(msg)]
        handler(self, msg, now, out)
        self._finish(now, out)
        return out

    def on_persisted(self, token: int, now: float) -> list[Effect]:
        out: list[Effect] = []
        held = self._held
        while held and held[0][0] <= token:
            _, actions = held.popleft()
            for action in actions:
                if isinstance(action, Send):
                    out.append(action)
                elif action[0] == "votes":
                    self._own_votes(action[1], action[2])
                else:
                    self._send_prepare(action[1], now, out)
        self._finish(now, out)
        return out

    def on_tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        self._last_tick = now
        if self.role is Role.MASTER:
            self._master_tick(now, out)
        elif self.role is Role.CANDIDATE and now >= self._phase1_deadline:
            self._abandon(now, now + self._timeout, out)
        if self.role is Role.FOLLOWER:
            if now >= self._election_at:
                self._master = None
                self._start_phase1(now, out)
            elif self._wants_takeover(now):
                self._takeover_at = now + self.config.lease
                self._start_phase1(now, out)
        learner = self.learner
        if learner.catchup_peer is not None and now >= learner.catchup_deadline:
            failed = learner.catchup_peer
            learner.catchup_peer = None
            self._request_catchup(now, out, exclude=failed)
        self._finish(now, out)
        return out

    # ------------------------------------------------------------------- persistence

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

    # ------------------------------------------------------------------------- roles

    def _set_role(self, role: Role) -> None:
        if role not in _TRANSITIONS[self.role]:
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
            self._master, self._master_ballot = sender, ballot
            out.append(RoleChanged(False, sender, ballot))
        self._master_seen = now
        self._election_at = now + self._timeout

    def _higher_ballot_seen(self, ballot: Ballot, now: float, out: list[Effect]) -> None:
        """An acceptor promised a ballot above ours: stop leading, retry soon."""
        self._max_round = max(self._max_round, ballot.round)
        retry = now + self.config.heartbeat_interval
        if self.role is Role.MASTER and ballot > self._ballot:
            self._step_down(now, out, hint=None)
            self._election_at = retry
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
        if self.config.rank != 0 or self._master is None or now < self._takeover_at:
            return False
        caught_up = self.learner.chosen_up_to >= self.learner.peer_chosen.get(self._master, 0)
        return caught_up and not self.learner.diverged and self.learner.catchup_peer is None

    def _sticky(self, sender: int, now: float) -> bool:
        """Refuse a rival while a live master is known (availability only)."""
        if sender == self.config.preferred_master:
            return False
        if self.role is Role.MASTER:
            return True
        alive = self._master is not None and now < self._master_seen + self.config.lease
        return alive and sender != self._master

    # ------------------------------------------------------------------------ phase 1

    def _start_phase1(self, now: float, out: list[Effect]) -> None:
        self._max_round = max(self._max_round, self.acceptor.promised.round) + 1
        ballot = Ballot(self._max_round, self.node_id)
        self.acceptor.promise(ballot)
        self._set_role(Role.CANDIDATE)
        self._ballot = ballot
        self._from = self.learner.chosen_up_to + 1
        self._promises = {}
        self._phase1_deadline = now + self.config.lease
        self._persist((PromiseRecord(ballot),), out)
        self._held[-1][1].append(("prepare", ballot))

    def _send_prepare(self, ballot: Ballot, now: float, out: list[Effect]) -> None:
        """Our own promise of ``ballot`` is durable: ask the peers."""
        if self.role is not Role.CANDIDATE or self._ballot != ballot:
            return
        if self.acceptor.promised != ballot:
            self._abandon(now, now + self.config.heartbeat_interval, out)
            return
        self._promises[self.node_id] = self.acceptor.entries_from(self._from)
        self._broadcast(Prepare(self.config.group, self.node_id, ballot, self._from), out)
        self._maybe_elected(now, out)

    def _maybe_elected(self, now: float, out: list[Effect]) -> None:
        if len(self._promises) < self._majority:
            return
        if self.learner.chosen_up_to >= self._from:
            # We learned instances our own promise no longer reports: redo phase 1 from there.
            self._abandon(now, now, out)
            return
        entries = [e for group in self._promises.values() for e in group]
        values = proposer.merge_promises(entries, self._from)
        self._promises = {}
        self._set_role(Role.MASTER)
        self._window = proposer.Window(self.config, self._from, values)
        self._master, self._master_ballot = self.node_id, self._ballot
        self._master_since = self._master_seen = now
        self._heartbeat_at = now
        out.append(RoleChanged(True, self.node_id, self._ballot))
        self._master_tick(now, out)

    def _on_prepare(self, msg: Prepare, now: float, out: list[Effect]) -> None:
        acceptor = self.acceptor
        b = msg.ballot
        self._max_round = max(self._max_round, b.round)
        if acceptor.can_promise(b) and not self._sticky(msg.sender, now):
            acceptor.promise(b)
            self._persist((PromiseRecord(b),), out)
            if self.role is not Role.FOLLOWER and b > self._ballot:
                if self.role is Role.MASTER:
                    self._step_down(now, out, hint=None)
                else:
                    self._abandon(now, now + self._timeout, out)
        elif not (b == acceptor.promised and msg.sender == b.node):
            self._send(
                msg.sender, Reject(self.config.group, self.node_id, b, acceptor.promised), out
            )
            return
        promise = Promise(
            self.config.group,
            self.node_id,
            b,
            msg.from_instance,
            acceptor.entries_from(msg.from_instance),
            self.learner.chosen_up_to,
        )
        self._after_durable(Send(msg.sender, promise), out)

    def _on_promise(self, msg: Promise, now: float, out: list[Effect]) -> None:
        self.learner.note_peer(msg.sender, msg.chosen_up_to)
        if self.role is not Role.CANDIDATE or msg.ballot != self._ballot:
            return
        if msg.chosen_up_to >= self._from:
            # The peer has learned (and dropped) accepted values we would need: catch up first.
            self._abandon(now, now + self.config.heartbeat_interval, out)
            self._request_catchup(now, out, exclude=None, prefer=msg.sender)
            return
        self._promises[msg.sender] = msg.accepted
        if self.node_id in self._promises:
            self._maybe_elected(now, out)

    def _on_reject(self, msg: Reject, now: float, out: list[Effect]) -> None:
        if msg.ballot == self._ballot:
            self._higher_ballot_seen(msg.promised, now, out)
        else:
            self._max_round = max(self._max_round, msg.promised.round)

    # ------------------------------------------------------------------------ phase 2

    def _master_tick(self, now: float, out: list[Effect]) -> None:
        window = self._window
        assert window is not None
        if now >= self._heartbeat_at:
            lease = self.config.lease
            live = 1 + sum(1 for p in self._peers if self._peer_seen.get(p, -lease) > now - lease)
            if live < self._majority and now - self._master_since > lease:
                self._step_down(now, out, hint=None)
                return
            self._heartbeat_at = now + self.config.heartbeat_interval
            self._master_seen = now
            hb = Heartbeat(
                self.config.group,
                self.node_id,
                self._ballot,
                self.learner.chosen_up_to,
                self.learner.checksum,
            )
            self._broadcast(hb, out)
            resend_before = now - self.config.heartbeat_interval
            for instance, slot in window.inflight.items():
                if slot.sent_at <= resend_before:  # retransmit to peers that did not vote
                    slot.sent_at = now
                    acc = Accept(
                        self.config.group, self.node_id, self._ballot, instance, slot.value
                    )
                    for peer in self._peers:
                        if peer not in slot.votes:
                            out.append(Send(peer, acc))

    def _fill_window(self, now: float, out: list[Effect]) -> None:
        window = self._window
        assert window is not None
        records: list[AcceptRecord] = []
        instances: list[int] = []
        ballot, group, me = self._ballot, self.config.group, self.node_id
        sends: list[Effect] = []
        while (taken := window.take_next(now)) is not None:
            instance, slot = taken
            self.acceptor.accept(instance, ballot, slot.value)
            records.append(AcceptRecord(instance, ballot, slot.value))
            instances.append(instance)
            acc = Accept(group, me, ballot, instance, slot.value)
            for peer in self._peers:
                sends.append(Send(peer, acc))
        if records:
            self._persist(tuple(records), out)
            self._held[-1][1].append(("votes", ballot, instances))
            out.extend(sends)

    def _own_votes(self, ballot: Ballot, instances: list[int]) -> None:
        if self.role is Role.MASTER and ballot == self._ballot:
            for instance in instances:
                self._vote(instance, self.node_id)

    def _vote(self, instance: int, voter: int) -> None:
        window = self._window
        assert window is not None
        slot = window.inflight.get(instance)
        if slot is None:
            return
        slot.votes.add(voter)
        if len(slot.votes) >= self._majority:
            window.remove(instance)
            self.learner.add_chosen(instance, slot.value, self._ballot, slot.pids)
            self._newly_chosen.append(instance)

    def _on_accept(self, msg: Accept, now: float, out: list[Effect]) -> None:
        acceptor = self.acceptor
        b, i = msg.ballot, msg.instance
        if not acceptor.can_accept(b):
            self._send(
                msg.sender, Reject(self.config.group, self.node_id, b, acceptor.promised), out
            )
            return
        self._max_round = max(self._max_round, b.round)
        self._note_master(msg.sender, b, now, out)
        reply = Send(msg.sender, Accepted(self.config.group, self.node_id, b, i))
        if i <= self.learner.chosen_up_to:
            # Already chosen (so any value proposed for it is that value): vote, keep nothing.
            self._after_durable(reply, out)
            return
        if acceptor.accept(i, b, msg.value):
            self._persist((AcceptRecord(i, b, msg.value),), out)
        self._after_durable(reply, out)
        if self.learner.chosen_ballot.get(i) == b:
            self.learner.add_chosen(i, msg.value, b)

    def _on_accepted(self, msg: Accepted, now: float, out: list[Effect]) -> None:
        if self.role is Role.MASTER and msg.ballot == self._ballot:
            self._vote(msg.instance, msg.sender)

    def _on_chosen(self, msg: Chosen, now: float, out: list[Effect]) -> None:
        learner = self.learner
        learner.note_known(msg.last)
        if msg.ballot >= self.acceptor.promised:
            self._note_master(msg.sender, msg.ballot, now, out)
        first = max(msg.first, learner.chosen_up_to + 1)
        last = min(msg.last, learner.chosen_up_to + CHOSEN_SCAN_LIMIT)
        accepted = self.acceptor.accepted
        for i in range(first, last + 1):
            if i in learner.ready:
                continue
            held = accepted.get(i)
            if held is not None and held[0] == msg.ballot:
                learner.add_chosen(i, held[1], msg.ballot)
            else:
                learner.chosen_ballot[i] = msg.ballot

    def _on_heartbeat(self, msg: Heartbeat, now: float, out: list[Effect]) -> None:
        if msg.ballot < self.acceptor.promised:
            reject = Reject(self.config.group, self.node_id, msg.ballot, self.acceptor.promised)
            self._send(msg.sender, reject, out)
            return
        self._note_master(msg.sender, msg.ballot, now, out)
        self.learner.note_peer(msg.sender, msg.chosen_up_to)
        div = self.learner.check(msg.chosen_up_to, msg.checksum, msg.sender)
        if div is not None:
            out.append(div)
        ack = HeartbeatAck(self.config.group, self.node_id, msg.ballot, self.learner.chosen_up_to)
        self._send(msg.sender, ack, out)

    def _on_heartbeat_ack(self, msg: HeartbeatAck, now: float, out: list[Effect]) -> None:
        self.learner.note_peer(msg.sender, msg.chosen_up_to)

    # ---------------------------------------------------------------------- catch-up

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

    def _on_catchup_request(self, msg: CatchupRequest, now: float, out: list[Effect]) -> None:
        cup = self.learner.chosen_up_to
        if msg.from_instance <= cup and not self.learner.diverged:
            out.append(
                ServeCatchup(msg.sender, msg.from_instance, min(msg.max_count, CATCHUP_BATCH))
            )
        else:
            self._send(msg.sender, CatchupReply(self.config.group, self.node_id, (), cup), out)

    def _on_catchup_reply(self, msg: CatchupReply, now: float, out: list[Effect]) -> None:
        learner = self.learner
        if learner.catchup_peer == msg.sender:
            learner.catchup_peer = None
        learned, div = learner.on_catchup_entries(msg.entries, msg.sender)
        self._emit_learned(learned, out)
        if div is not None:
            out.append(div)
        learner.note_peer(msg.sender, msg.chosen_up_to)
        if learner.peer_chosen.get(msg.sender, 0) > msg.chosen_up_to:
            learner.peer_chosen[msg.sender] = msg.chosen_up_to  # the peer truncated or lost it

    # ------------------------------------------------------------------------ finish

    def _emit_learned(self, learned: list[Learned], out: list[Effect]) -> None:
        window = self._window
        for effect in learned:
            self.acceptor.trim(effect.instance)
            if window is not None and effect.instance in window.inflight:
                # Learned through another path while still in flight: same value by Paxos.
                slot = window.remove(effect.instance)
                assert slot is not None
                if slot.pids and slot.value != effect.value:
                    out.append(ProposalFailed(slot.pids, "unknown", None))
            out.append(effect)

    def _finish(self, now: float, out: list[Effect]) -> None:
        """Common tail of every input: announce, learn, refill the window, catch up."""
        if self._newly_chosen:
            chosen = sorted(self._newly_chosen)
            self._newly_chosen = []
            start = prev = chosen[0]
            for i in [*chosen[1:], -1]:
                if i != prev + 1:
                    self._broadcast(
                        Chosen(self.config.group, self.node_id, self._ballot, start, prev), out
                    )
                    start = i
                prev = i
        self._emit_learned(self.learner.drain(), out)
        if self._window is not None:
            self._fill_window(now, out)
        if self.learner.catchup_peer is None:
            self._request_catchup(now, out, exclude=None)


_HANDLERS: dict[type[Any], Any] = {
    Prepare: PaxosNode._on_prepare,
    Promise: PaxosNode._on_promise,
    Reject: PaxosNode._on_reject,
    Accept: PaxosNode._on_accept,
    Accepted: PaxosNode._on_accepted,
    Chosen: PaxosNode._on_chosen,
    Heartbeat: PaxosNode._on_heartbeat,
    HeartbeatAck: PaxosNode._on_heartbeat_ack,
    CatchupRequest: PaxosNode._on_catchup_request,
    CatchupReply: PaxosNode._on_catchup_reply,
}
