"""The proposer side of ``PaxosNode``: phase 1 once per term, then phase 2 only.

Phase 1 covers every instance from the first one not learned here; the proposer's own promise is
durable before ``Prepare`` leaves; a promiser that has already learned past that point aborts
the attempt (catch up first, retry with a higher ballot). Once elected, the master re-proposes
what it found (no-ops for holes) ahead of new proposals, pipelines up to ``window`` instances,
batches the backlog into one instance per free slot, counts its own vote only after its own
``AcceptRecord`` is durable, retransmits unanswered accepts on heartbeat, and steps down when it
has not heard from a majority within the lease.
"""

from __future__ import annotations

from phxq.paxos import proposer
from phxq.paxos.ballot import Ballot
from phxq.paxos.base import NodeBase, Role
from phxq.paxos.effects import (
    AcceptRecord,
    Effect,
    PromiseRecord,
    RoleChanged,
    Send,
)
from phxq.paxos.messages import (
    Accept,
    Accepted,
    Heartbeat,
    HeartbeatAck,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Reject,
)


class MasterMixin(NodeBase):
    """Phase 1 and phase 2 of the master (see module docstring)."""

    def _start_phase1(self, now: float, out: list[Effect]) -> None:
        self._resume_at = None
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
        self._rejected_by = set()
        self._refresh_at = None
        self._set_role(Role.MASTER)
        self._window = proposer.Window(self.config, self._from, values)
        self._master, self._master_ballot = self.node_id, self._ballot
        self._master_since = self._master_seen = now
        self._heartbeat_at = now
        out.append(RoleChanged(True, self.node_id, self._ballot))
        self._master_tick(now, out)

    def _on_promise(self, msg: Promise, now: float, out: list[Effect]) -> None:
        self.learner.note_peer(msg.sender, msg.chosen_up_to)
        if self.role is not Role.CANDIDATE or msg.ballot != self._ballot:
            return
        if msg.chosen_up_to >= self._from:
            # The peer has learned (and dropped) accepted values we would need: catch up first,
            # and try again as soon as we have (or after a heartbeat interval, whichever first).
            self._abandon(now, now + self.config.heartbeat_interval, out)
            self._resume_at = msg.chosen_up_to
            self._request_catchup(now, out, exclude=None, prefer=msg.sender)
            return
        self._promises[msg.sender] = msg.accepted
        if self.node_id in self._promises:
            self._maybe_elected(now, out)

    def _on_reject(self, msg: Reject, now: float, out: list[Effect]) -> None:
        if msg.ballot == self._ballot:
            self._higher_ballot_seen(msg.promised, now, out, by=msg.sender)
        else:
            self._max_round = max(self._max_round, msg.promised.round)

    def _start_prevote(self, now: float, out: list[Effect], takeover: bool) -> None:
        """Ask the peers whether they would promise a higher ballot now; nothing is raised or
        persisted. Phase 1 starts once a majority (counting us) says yes -- at once when a
        pre-vote succeeded within the last lease (a retry of the same election)."""
        if now < self._prevote_ok_until or self._majority == 1:
            self._start_phase1(now, out)
            return
        ballot = Ballot(max(self._max_round, self.acceptor.promised.round) + 1, self.node_id)
        self._prevote = ballot
        self._grants = {self.node_id}
        self._prevote_takeover = takeover
        cup = self.learner.chosen_up_to
        self._broadcast(PreVote(self.config.group, self.node_id, ballot, cup), out)

    def _resume_phase1(self, now: float, out: list[Effect]) -> None:
        """Caught up with the promiser that made us give up: try again now, unless a master was
        heard meanwhile or the pre-vote is too old to rely on."""
        self._resume_at = None
        if self.role is Role.FOLLOWER and self._master is None and now < self._prevote_ok_until:
            self._start_phase1(now, out)

    def _on_prevote_reply(self, msg: PreVoteReply, now: float, out: list[Effect]) -> None:
        self._max_round = max(self._max_round, msg.promised.round)
        self.learner.note_peer(msg.sender, msg.chosen_up_to)
        if not msg.granted or msg.ballot != self._prevote or self.role is not Role.FOLLOWER:
            return
        self._grants.add(msg.sender)
        if len(self._grants) < self._majority:
            return
        self._prevote = None
        alive = self._master is not None and now < self._master_seen + self.config.lease
        if alive and not self._prevote_takeover:
            return  # a master was heard while we asked: follow it
        self._prevote_ok_until = now + self.config.lease
        self._master = None
        self._start_phase1(now, out)

    def _master_tick(self, now: float, out: list[Effect]) -> None:
        window = self._window
        assert window is not None
        if now >= self._heartbeat_at:
            lease = self.config.lease
            refused = self._rejected_by
            live = 1 + sum(
                1
                for p in self._peers
                if self._peer_seen.get(p, -lease) > now - lease and p not in refused
            )
            # A tick far behind its time: this node was stalled (paused, starved of CPU), not
            # its peers. Ask them again (this heartbeat) before concluding they are gone.
            stalled = now - self._heartbeat_at > lease / 2
            if live < self._majority and now - self._master_since > lease and not stalled:
                self._step_down(now, out, hint=None)
                return
            if self._refresh_at is not None and now >= self._refresh_at:
                # A minority promised above our ballot and cannot vote for us: run phase 1
                # again above it (our peers still see us as their master and say yes).
                self._step_down(now, out, hint=None)
                self._election_at = now
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

    def _on_accepted(self, msg: Accepted, now: float, out: list[Effect]) -> None:
        if self.role is Role.MASTER and msg.ballot == self._ballot:
            self._vote(msg.instance, msg.sender)

    def _on_heartbeat_ack(self, msg: HeartbeatAck, now: float, out: list[Effect]) -> None:
        self.learner.note_peer(msg.sender, msg.chosen_up_to)
