"""``PaxosNode``: one replica of one Multi-Paxos group as a sans-I/O state machine.

Inputs (each returns ``list[Effect]``, see ``effects``): ``propose(pid, item, now)``,
``on_message(msg, now)``, ``on_persisted(token, now)``, ``on_tick(now)``; ``next_deadline()``
says when ``on_tick`` is due. Read-only state: ``is_master``, ``master``, ``ready`` (master and
every instance found in phase 1 is learned), ``ballot``, ``promised``, ``chosen_up_to``,
``checksum``, ``known_chosen``, ``diverged``, ``role``.

Roles (``Role``): FOLLOWER -> CANDIDATE (phase 1 running) -> MASTER (phase 2 only) -> FOLLOWER.
Pre-vote: a follower whose election timer fires (or the preferred node taking its group back)
first asks ``PreVote``; peers say yes only when they know no live master (the preferred node,
caught up, always gets a yes); it runs phase 1 only with a majority of yeses, so a node cut off
from the group never raises its round and cannot depose a healthy master when it returns. A
master steps down on a higher ballot only when a majority refuses its own (or a real master with
a higher ballot is heard); a minority that refuses it is won back by a new phase 1 a lease later.
Layout: ``base.NodeBase`` (state, roles, persistence plumbing) <- ``master.MasterMixin``
(proposer: phase 1 and 2) <- ``PaxosNode`` (inputs, acceptor and learner handlers). Rules: replies leave only after every record persisted before them is durable; the
proposer persists its own promise before sending ``Prepare``; the master's own vote counts only
once its ``AcceptRecord`` is durable; the master is whoever completed phase 1 with the highest
ballot, and leases (``lease``, stickiness, staggered elections by ``config.rank``) only decide
*who tries* -- safety never depends on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from phxq.paxos.base import CATCHUP_BATCH, TRANSITIONS, IllegalTransition, Role
from phxq.paxos.effects import (
    AcceptRecord,
    Effect,
    Learned,
    PromiseRecord,
    ProposalFailed,
    Send,
    ServeCatchup,
)
from phxq.paxos.master import MasterMixin
from phxq.paxos.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Chosen,
    Heartbeat,
    HeartbeatAck,
    Message,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Reject,
)

CHOSEN_SCAN_LIMIT = 4096  # instances of one Chosen range examined at once (the rest: catch-up)

__all__ = ["CATCHUP_BATCH", "TRANSITIONS", "IllegalTransition", "PaxosNode", "Role"]


class PaxosNode(MasterMixin):
    """One replica of one group. Deterministic: same inputs, same effects."""

    def propose(self, pid: int, item: bytes, now: float) -> list[Effect]:
        """Queue one item for the next instance; fails at once unless this node is master."""
        return self.propose_many(((pid, item),), now)

    def propose_many(self, items: Sequence[tuple[int, bytes]], now: float) -> list[Effect]:
        """Queue several (pid, item) pairs before the window is refilled, so that they share
        instances (as many as ``max_batch_*`` allow) instead of each taking a free slot of the
        pipelining window as :meth:`propose` one at a time would."""
        if self._window is None:
            return [ProposalFailed(tuple(pid for pid, _ in items), "not_master", self._master)]
        self._window.pending.extend(items)
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
                self._election_at = now + self._timeout  # retry if the pre-vote fails
                self._start_prevote(now, out, takeover=False)
            elif self._wants_takeover(now):
                self._takeover_at = now + self.config.lease
                self._start_prevote(now, out, takeover=True)
        learner = self.learner
        if learner.catchup_peer is not None and now >= learner.catchup_deadline:
            failed = learner.catchup_peer
            learner.catchup_peer = None
            self._request_catchup(now, out, exclude=failed)
        self._finish(now, out)
        return out

    def install_snapshot(self, instance: int, checksum: int, now: float) -> list[Effect]:
        """The runtime installed a peer's snapshot covering every instance up to ``instance``
        (whose chain checksum is ``checksum``) because the peers' logs no longer hold them:
        learn on from ``instance + 1``. Ignored by a master (it is never that far behind) and
        when ``instance`` is not ahead of ``chosen_up_to``. Accepted values above ``instance``
        are kept: they are votes this acceptor may have given."""
        if self.role is Role.MASTER or instance <= self.learner.chosen_up_to:
            return []
        self.learner.jump(instance, checksum)
        for i in [i for i in self.acceptor.accepted if i <= instance]:
            self.acceptor.trim(i)
        out: list[Effect] = []
        self._finish(now, out)
        return out

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

    def _on_prevote(self, msg: PreVote, now: float, out: list[Effect]) -> None:
        """Answer without changing any state but what we know of the asker's progress."""
        self.learner.note_peer(msg.sender, msg.chosen_up_to)
        granted = self._grants_prevote(msg.sender, msg.chosen_up_to, now)
        reply = PreVoteReply(
            self.config.group,
            self.node_id,
            msg.ballot,
            granted,
            self.acceptor.promised,
            self.learner.chosen_up_to,
        )
        self._send(msg.sender, reply, out)

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
        if i <= self.learner.chosen_up_to:
            # Already learned here: no vote without a durable record. The master learns it
            # through catch-up (our HeartbeatAck tells it how far we are).
            return
        reply = Send(msg.sender, Accepted(self.config.group, self.node_id, b, i))
        if acceptor.accept(i, b, msg.value):
            self._persist((AcceptRecord(i, b, msg.value),), out)
        self._after_durable(reply, out)
        if self.learner.chosen_ballot.get(i) == b:
            self.learner.add_chosen(i, msg.value, b)

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

    def _emit_learned(self, learned: list[Learned], out: list[Effect]) -> None:
        window = self._window
        for effect in learned:
            self.acceptor.trim(effect.instance)
            if window is not None and effect.instance in window.inflight:
                # Learned through another path while still in flight: same value by Paxos.
                slot = window.remove(effect.instance)
                assert slot is not None
                if slot.pids and slot.value == effect.value and not effect.proposals:
                    effect = dataclasses.replace(effect, proposals=slot.pids)
                elif slot.pids and slot.value != effect.value:
                    out.append(ProposalFailed(slot.pids, "unknown", None))
            out.append(effect)
        if window is not None and learned:
            window.skip_learned(self.learner.chosen_up_to)

    def _finish(self, now: float, out: list[Effect]) -> None:
        """Common tail of every input: learn, announce, refill the window, catch up. Learned
        effects go first: the runtime applies them (and answers the client) before it encodes
        the Chosen announcement, which nothing waits on promptly."""
        self._emit_learned(self.learner.drain(), out)
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
        if self._resume_at is not None and self.learner.chosen_up_to >= self._resume_at:
            self._resume_phase1(now, out)
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
    PreVote: PaxosNode._on_prevote,
    PreVoteReply: PaxosNode._on_prevote_reply,
}
