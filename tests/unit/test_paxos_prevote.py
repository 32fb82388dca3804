"""Pre-vote decisions: who says yes, what asking changes (nothing), when phase 1 follows, and
how a master treats acceptors that promised above its ballot."""

from __future__ import annotations

from phxq.paxos import (
    Ballot,
    GroupConfig,
    Heartbeat,
    PaxosNode,
    Persist,
    Prepare,
    PreVote,
    PreVoteReply,
    Reject,
    RoleChanged,
)
from tools.loopback import LoopbackCluster, campaign, of, persist_all, sent

LEASE = 1.0
NONE = Ballot(0, 0)


def node(node_id: int, group: int = 0, n: int = 3) -> PaxosNode:
    cfg = GroupConfig(group=group, node_id=node_id, members=tuple(range(1, n + 1)), lease=LEASE)
    return PaxosNode(cfg, None, 0.0)


def ask(sender: int, ballot: Ballot, chosen_up_to: int = 0, group: int = 0) -> PreVote:
    return PreVote(group=group, sender=sender, ballot=ballot, chosen_up_to=chosen_up_to)


def answer(sender: int, ballot: Ballot, granted: bool, promised: Ballot = NONE) -> PreVoteReply:
    return PreVoteReply(
        group=0, sender=sender, ballot=ballot, granted=granted, promised=promised, chosen_up_to=0
    )


def heartbeat(sender: int, ballot: Ballot, group: int = 0) -> Heartbeat:
    return Heartbeat(group=group, sender=sender, ballot=ballot, chosen_up_to=0, checksum=0)


def reply_of(effects: list, to: int) -> PreVoteReply:
    (reply,) = sent(effects, PreVoteReply, to=to)
    return reply


def test_a_follower_hearing_a_live_master_says_no_and_changes_nothing() -> None:
    n2 = node(2)
    n2.on_message(heartbeat(1, Ballot(4, 1)), 0.5)
    effects = n2.on_message(ask(3, Ballot(9, 3)), 0.6)
    reply = reply_of(effects, 3)
    assert not reply.granted and reply.ballot == Ballot(9, 3)
    assert reply.promised == Ballot(0, 0) == n2.promised  # nothing promised, nothing persisted
    assert not of(effects, Persist) and not of(effects, RoleChanged)
    assert n2.master == 1


def test_a_follower_says_yes_once_the_master_is_silent_for_a_lease() -> None:
    n2 = node(2)
    n2.on_message(heartbeat(1, Ballot(4, 1)), 0.5)
    assert not reply_of(n2.on_message(ask(3, Ballot(9, 3)), 0.5 + LEASE * 0.9), 3).granted
    assert reply_of(n2.on_message(ask(3, Ballot(9, 3)), 0.5 + LEASE * 1.1), 3).granted


def test_a_follower_says_yes_to_its_own_master_running_again() -> None:
    n2 = node(2)
    n2.on_message(heartbeat(1, Ballot(4, 1)), 0.5)
    assert reply_of(n2.on_message(ask(1, Ballot(5, 1)), 0.6), 1).granted


def test_a_master_says_no_to_everyone_but_its_caught_up_preferred_node() -> None:
    c = LoopbackCluster(3, group=1)  # preferred master: node 2
    c.down.add(2)
    c.elect(3)
    for pid in range(1, 21):
        c.propose(3, pid, b"x")
        c.run()
    master = c.nodes[3]
    assert master.chosen_up_to >= 20
    assert not reply_of(master.on_message(ask(1, Ballot(9, 1), 20, group=1), c.now), 1).granted
    behind = ask(2, Ballot(9, 2), 0, group=1)
    assert not reply_of(master.on_message(behind, c.now), 2).granted  # not caught up
    caught_up = ask(2, Ballot(9, 2), master.chosen_up_to - 1, group=1)
    assert reply_of(master.on_message(caught_up, c.now), 2).granted
    assert master.is_master  # a yes is no promise


def test_election_timer_asks_first_and_raises_nothing() -> None:
    n1 = node(1)
    effects = n1.on_tick(LEASE + 0.01)
    asks = sent(effects, PreVote)
    assert {a.ballot for a in asks} == {Ballot(1, 1)} and len(asks) == 2
    assert not of(effects, Persist) and not sent(effects, Prepare)
    assert n1.promised == Ballot(0, 0)
    # asking again after a failed attempt uses the same round: nothing was raised
    effects = n1.on_tick(n1.next_deadline() or 0.0)
    assert {a.ballot for a in sent(effects, PreVote)} == {Ballot(1, 1)}


def test_phase1_starts_with_a_majority_of_yes_and_above_every_reported_promise() -> None:
    n1 = node(1)
    now = LEASE + 0.01
    n1.on_tick(now)
    no = n1.on_message(answer(2, Ballot(1, 1), False, Ballot(3, 2)), now)
    assert not of(no, Persist)
    yes = n1.on_message(answer(3, Ballot(1, 1), True, Ballot(7, 3)), now)
    assert len(of(yes, Persist)) == 1  # our own promise, before any Prepare leaves
    assert n1.promised == Ballot(8, 1)  # above 7.3 reported by the peers
    prepares = sent(persist_all(n1, yes, now), Prepare)
    assert {m.ballot for m in prepares} == {Ballot(8, 1)}


def test_all_no_means_no_phase1_and_a_retry_after_the_timeout() -> None:
    n3 = node(3)  # rank 2: timeout 2 leases
    now = 2 * LEASE + 0.01
    effects = n3.on_tick(now)
    ballot = sent(effects, PreVote)[0].ballot
    for peer in (1, 2):
        assert not of(n3.on_message(answer(peer, ballot, False), now), Persist)
    assert n3.next_deadline() == now + 2 * LEASE
    assert n3.promised == Ballot(0, 0)


def test_a_yes_arriving_after_a_master_was_heard_starts_nothing() -> None:
    n2 = node(2)
    now = 1.5 * LEASE + 0.01
    ballot = sent(n2.on_tick(now), PreVote)[0].ballot
    n2.on_message(heartbeat(1, Ballot(4, 1)), now + 0.01)
    assert not of(n2.on_message(answer(3, ballot, True), now + 0.02), Persist)
    assert n2.master == 1 and n2.promised == Ballot(0, 0)


def test_a_stale_or_foreign_answer_is_ignored() -> None:
    n1 = node(1)
    n1.on_tick(LEASE + 0.01)
    effects = n1.on_message(answer(2, Ballot(77, 1), True), LEASE + 0.02)
    assert not of(effects, Persist)


def test_a_master_refused_by_one_acceptor_keeps_leading_then_wins_it_back() -> None:
    c = LoopbackCluster(3, lease=LEASE)
    c.elect(1)
    master = c.nodes[1]
    ballot = master.ballot
    reject = Reject(group=0, sender=3, ballot=ballot, promised=Ballot(40, 3))
    effects = master.on_message(reject, c.now)
    assert master.is_master and master.ballot == ballot and not of(effects, RoleChanged)
    c.propose(1, 1, b"still served")
    c.run()
    assert 1 in c.acked
    for _ in range(int(2 * LEASE / 0.1)):
        c.tick(0.1)
    assert c.master() == 1 and master.ballot > Ballot(40, 3)


def test_a_refusing_acceptor_and_a_dead_one_do_not_strand_the_group() -> None:
    c = LoopbackCluster(3, lease=LEASE)
    c.elect(1)
    master = c.nodes[1]
    c.down.add(2)
    stale = Reject(group=0, sender=3, ballot=master.ballot, promised=Ballot(40, 3))
    c.nodes[3].acceptor.promised = Ballot(40, 3)  # as if it had promised that (in memory)
    master.on_message(stale, c.now)
    c.propose(1, 1, b"needs node 3")
    c.run()
    assert 1 not in c.acked  # node 3 refuses ballot 1.1: no majority
    for _ in range(int(3 * LEASE / 0.1)):
        c.tick(0.1)
        if master.is_master and master.ballot > Ballot(40, 3):
            break
    assert master.is_master and master.ballot > Ballot(40, 3)
    c.propose(1, 2, b"after")
    c.run()
    assert 2 in c.acked


def test_phase1_given_up_for_a_promiser_ahead_resumes_as_soon_as_caught_up() -> None:
    from phxq.paxos import CatchupReply, CatchupRequest, ChosenEntry, Promise, chain_checksum

    n1 = node(1)
    now = LEASE + 0.01
    effects = persist_all(n1, campaign(n1, now), now)
    (prep,) = sent(effects, Prepare, to=2)
    ahead = Promise(
        group=0, sender=2, ballot=prep.ballot, from_instance=1, accepted=(), chosen_up_to=2
    )
    effects = n1.on_message(ahead, now)
    assert not n1.is_master and sent(effects, CatchupRequest, to=2)
    assert not of(effects, Persist)  # given up: no new ballot yet
    c1 = chain_checksum(0, 1, b"")
    entries = (ChosenEntry(1, b"", c1), ChosenEntry(2, b"", chain_checksum(c1, 2, b"")))
    reply = CatchupReply(group=0, sender=2, entries=entries, chosen_up_to=2)
    effects = n1.on_message(reply, now + 0.001)  # well before the heartbeat-interval retry
    assert len(of(effects, Persist)) == 1  # the new ballot's promise
    assert n1.chosen_up_to == 2 and n1.promised > prep.ballot
    prepares = sent(persist_all(n1, effects, now + 0.002), Prepare)
    assert {m.from_instance for m in prepares} == {3}
