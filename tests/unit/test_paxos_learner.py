"""Learner rules: explicit commit with the exact ballot, in-order learning, catch-up with
checksum verification, divergence stops learning."""

from __future__ import annotations

from phxq.paxos import (
    Accept,
    Ballot,
    CatchupReply,
    CatchupRequest,
    Chosen,
    ChosenEntry,
    Divergence,
    GroupConfig,
    Heartbeat,
    Learned,
    PaxosNode,
    ServeCatchup,
    chain_checksum,
)
from tools.loopback import LoopbackCluster, of, persist_all, sent

G = 0
B = Ballot(1, 1)


def follower() -> PaxosNode:
    return PaxosNode(GroupConfig(group=G, node_id=3, members=(1, 2, 3)), None, 0.0)


def accept(n: PaxosNode, instance: int, value: bytes, ballot: Ballot = B) -> None:
    msg = Accept(group=G, sender=ballot.node, ballot=ballot, instance=instance, value=value)
    persist_all(n, n.on_message(msg, 0.1))


def chosen(first: int, last: int, ballot: Ballot = B) -> Chosen:
    return Chosen(group=G, sender=1, ballot=ballot, first=first, last=last)


def chain(values: list[bytes]) -> list[ChosenEntry]:
    out, c = [], 0
    for i, v in enumerate(values, 1):
        c = chain_checksum(c, i, v)
        out.append(ChosenEntry(i, v, c))
    return out


def test_learns_only_from_an_explicit_chosen_with_the_same_ballot() -> None:
    n = follower()
    accept(n, 1, b"a")
    assert not of(
        n.on_message(Chosen(group=G, sender=1, ballot=Ballot(2, 1), first=1, last=1), 0.2), Learned
    )
    (learned,) = of(n.on_message(chosen(1, 1), 0.2), Learned)
    assert (learned.instance, learned.value, learned.ballot) == (1, b"a", B)
    assert learned.checksum == chain_checksum(0, 1, b"a") == n.checksum
    assert learned.proposals == ()


def test_a_higher_ballot_accept_is_never_read_as_chosen() -> None:
    n = follower()
    accept(n, 1, b"a")
    accept(n, 2, b"b", Ballot(2, 1))  # a higher ballot elsewhere says nothing about instance 1
    assert n.chosen_up_to == 0


def test_learns_strictly_in_instance_order() -> None:
    n = follower()
    accept(n, 1, b"a")
    accept(n, 2, b"b")
    assert not of(n.on_message(chosen(2, 2), 0.2), Learned)
    learned = of(n.on_message(chosen(1, 1), 0.2), Learned)
    assert [e.instance for e in learned] == [1, 2]
    assert not of(n.on_message(chosen(1, 2), 0.3), Learned)  # never twice


def test_chosen_before_accept_is_remembered() -> None:
    n = follower()
    n.on_message(chosen(1, 1), 0.2)
    msg = Accept(group=G, sender=1, ballot=B, instance=1, value=b"late")
    (learned,) = of(n.on_message(msg, 0.2), Learned)
    assert learned.value == b"late"


def test_heartbeat_ahead_triggers_one_bounded_catchup_request() -> None:
    n = follower()
    hb = Heartbeat(group=G, sender=1, ballot=B, chosen_up_to=10, checksum=0)
    (req,) = sent(n.on_message(hb, 0.2), CatchupRequest, to=1)
    assert req.from_instance == 1 and 0 < req.max_count <= 256
    assert not sent(n.on_message(hb, 0.25), CatchupRequest)  # one outstanding at a time


def test_catchup_request_times_out_to_another_peer() -> None:
    n = follower()
    hb = Heartbeat(group=G, sender=1, ballot=B, chosen_up_to=10, checksum=0)
    (first,) = sent(n.on_message(hb, 0.2), CatchupRequest, to=1)
    # node 2 says it has learned up to 10 too (an empty reply to an older request)
    n.on_message(CatchupReply(group=G, sender=2, entries=(), chosen_up_to=10), 0.2)
    assert n.next_deadline() == n.learner.catchup_deadline
    (retry,) = sent(n.on_tick(n.learner.catchup_deadline), CatchupRequest, to=2)
    assert retry.from_instance == first.from_instance == 1


def test_catchup_entries_are_learned_in_order_with_verified_checksums() -> None:
    n = follower()
    entries = chain([b"a", b"b", b"c"])
    reply = CatchupReply(group=G, sender=1, entries=tuple(entries), chosen_up_to=3)
    learned = of(n.on_message(reply, 0.2), Learned)
    assert [(e.instance, e.ballot) for e in learned] == [(1, None), (2, None), (3, None)]
    assert n.checksum == entries[-1].checksum


def test_catchup_checksum_mismatch_reports_divergence_and_stops_learning() -> None:
    n = follower()
    good = chain([b"a", b"b"])
    bad = ChosenEntry(2, b"b", good[1].checksum ^ 1)
    effects = n.on_message(
        CatchupReply(group=G, sender=2, entries=(good[0], bad), chosen_up_to=2), 0.2
    )
    (div,) = of(effects, Divergence)
    assert (div.instance, div.peer) == (2, 2)
    assert n.diverged and n.chosen_up_to == 1
    accept(n, 2, b"b")
    assert not of(n.on_message(chosen(2, 2), 0.3), Learned)


def test_heartbeat_with_a_different_checksum_at_our_position_is_divergence() -> None:
    n = follower()
    accept(n, 1, b"a")
    n.on_message(chosen(1, 1), 0.2)
    hb = Heartbeat(group=G, sender=1, ballot=B, chosen_up_to=1, checksum=n.checksum ^ 7)
    (div,) = of(n.on_message(hb, 0.3), Divergence)
    assert div.local_checksum == n.checksum and n.diverged


def test_catchup_request_is_served_by_the_runtime_from_its_log() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    for pid in range(3):
        c.propose(1, pid, b"x")
        c.run()
    req = CatchupRequest(group=G, sender=2, from_instance=1, max_count=10_000)
    (serve,) = of(c.nodes[1].on_message(req, c.now), ServeCatchup)
    assert serve.to == 2 and serve.from_instance == 1 and serve.max_count <= 256
    beyond = CatchupRequest(group=G, sender=2, from_instance=99, max_count=5)
    (reply,) = sent(c.nodes[1].on_message(beyond, c.now), CatchupReply, to=2)
    assert reply.entries == () and reply.chosen_up_to == c.nodes[1].chosen_up_to


def test_a_replica_that_missed_everything_catches_up_through_heartbeats() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    c.down.add(3)
    for pid in range(20):
        c.propose(1, pid, b"v%d" % pid)
        c.run()
    c.down.discard(3)
    for _ in range(20):
        c.tick(0.05)
    assert c.nodes[3].chosen_up_to == c.nodes[1].chosen_up_to
    assert c.nodes[3].checksum == c.nodes[1].checksum


def test_an_installed_snapshot_jumps_the_learner_and_keeps_votes_above_it() -> None:
    n = follower()
    entries = chain([b"v%d" % i for i in range(1, 21)])
    accept(n, 3, b"v3")  # a vote below the snapshot: forgotten
    accept(n, 15, b"v15")  # a vote above it: kept (it may have counted in a majority)
    hb = Heartbeat(group=G, sender=1, ballot=B, chosen_up_to=20, checksum=entries[19].checksum)
    (req,) = sent(n.on_message(hb, 0.2), CatchupRequest, to=1)
    assert req.from_instance == 1
    out = n.install_snapshot(10, entries[9].checksum, 0.3)
    assert (n.chosen_up_to, n.checksum) == (10, entries[9].checksum)
    assert 3 not in n.acceptor.accepted and 15 in n.acceptor.accepted
    (req,) = sent(out, CatchupRequest)  # catch-up resumes above the snapshot
    assert req.from_instance == 11
    learned = of(n.on_message(CatchupReply(G, 1, tuple(entries[10:]), 20), 0.4), Learned)
    assert [e.instance for e in learned] == list(range(11, 21))
    assert n.checksum == entries[19].checksum  # the chain verified across the jump
    assert n.install_snapshot(5, entries[4].checksum, 0.5) == []  # behind: ignored
    assert n.chosen_up_to == 20


def test_a_master_ignores_a_snapshot() -> None:
    cluster = LoopbackCluster(3)
    cluster.elect(1)
    master = cluster.nodes[1]
    before = (master.chosen_up_to, master.checksum)
    assert master.install_snapshot(99, 1234, 5.0) == []
    assert (master.chosen_up_to, master.checksum) == before
