"""Election and lease rules: preferred master g % N, staggered takeover, stickiness, taking the
group back, stepping down without a majority. Safety never depends on these timings."""

from __future__ import annotations

from phxq.paxos import (
    Ballot,
    GroupConfig,
    PaxosNode,
    Persist,
    Prepare,
    PreVote,
    Promise,
    RecoveredState,
    Reject,
    RoleChanged,
)
from tools.loopback import LoopbackCluster, of, persist_all, sent


def test_preferred_master_is_group_modulo_members() -> None:
    members = (1, 2, 3)
    assert [
        GroupConfig(group=g, node_id=1, members=members).preferred_master for g in range(4)
    ] == [1, 2, 3, 1]
    assert GroupConfig(group=4, node_id=2, members=members).rank == 0
    assert GroupConfig(group=4, node_id=3, members=members).rank == 1


def test_cluster_elects_the_preferred_node() -> None:
    for group, expected in [(0, 1), (1, 2), (2, 3)]:
        c = LoopbackCluster(3, group=group)
        c.elect(expected)
        assert c.master() == expected
        assert all(n.master == expected for n in c.nodes.values())


def test_elections_are_staggered_by_rank() -> None:
    lease = 1.0
    n2 = PaxosNode(GroupConfig(group=0, node_id=2, members=(1, 2, 3), lease=lease), None, 0.0)
    n3 = PaxosNode(GroupConfig(group=0, node_id=3, members=(1, 2, 3), lease=lease), None, 0.0)
    assert n2.next_deadline() == lease + lease / 2
    assert n3.next_deadline() == lease + lease
    assert not sent(n3.on_tick(1.6), PreVote)
    assert sent(n2.on_tick(1.6), PreVote)


def test_next_live_node_takes_over_after_the_lease_and_preferred_takes_it_back() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    c.down.add(1)
    c.elect(2)
    c.propose(2, 1, b"while away")
    c.run()
    c.down.discard(1)
    for _ in range(40):
        c.tick(0.1)
    assert c.master() == 1
    assert c.nodes[1].chosen_up_to == c.nodes[2].chosen_up_to


def test_acceptor_that_hears_a_live_master_rejects_a_rival() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    rival = Prepare(group=0, sender=3, ballot=Ballot(99, 3), from_instance=1)
    effects = c.nodes[2].on_message(rival, c.now)
    assert sent(effects, Reject, to=3) and not of(effects, Persist)


def test_acceptor_promises_the_preferred_node_even_with_a_live_master() -> None:
    c = LoopbackCluster(3, group=1)  # preferred master is node 2
    c.nodes[3].on_tick(0.0)
    c.down.add(2)
    c.elect(3)
    c.down.discard(2)
    prep = Prepare(group=1, sender=2, ballot=Ballot(50, 2), from_instance=1)
    effects = c.nodes[1].on_message(prep, c.now)
    assert sent(persist_all(c.nodes[1], effects), Promise, to=2)


def test_master_without_a_majority_steps_down_after_the_lease() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    c.down.update({2, 3})
    changes = []
    for _ in range(30):
        c.tick(0.1)
        changes += of(c.effects[1], RoleChanged)
    assert not c.nodes[1].is_master
    assert any(not rc.is_master for rc in changes)


def test_a_rejoining_node_with_a_stale_high_ballot_does_not_strand_the_group() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    c.propose(1, 1, b"before")
    c.run()
    # node 3 restarts holding a promise far above the master's ballot (say, from an election
    # it lost): it refuses the master's accepts and heartbeats
    n3 = c.nodes[3]
    stale = RecoveredState(Ballot(50, 3), 50, {}, n3.chosen_up_to, n3.checksum)
    c.nodes[3] = PaxosNode(n3.config, stale, c.now)
    c.propose(1, 2, b"refused by 3")
    c.run()
    assert c.nodes[1].is_master and 2 in c.acked  # nodes 1 and 2 are still a majority
    for _ in range(60):
        c.tick(0.1)
    assert c.master() == 1
    assert c.nodes[1].ballot > Ballot(50, 3)  # re-ran phase 1 above it to win node 3 back
    c.down.add(2)  # node 3's vote is needed again
    c.propose(1, 7, b"after")
    c.run()
    assert 7 in c.acked


def test_an_isolated_follower_never_raises_its_round_and_rejoins_quietly() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    ballot = c.nodes[1].ballot
    c.isolated.add(3)
    for _ in range(40):
        c.tick(0.1)  # node 3's election timer fires again and again: pre-votes go nowhere
    assert c.nodes[3].promised == ballot
    c.isolated.discard(3)
    for _ in range(40):
        c.tick(0.1)
    assert c.master() == 1 and c.nodes[1].ballot == ballot
    assert not any(isinstance(e, RoleChanged) and e.master != 1 for e in c.effects[3][-20:])
    assert c.nodes[3].master == 1


def test_preferred_node_takes_its_group_back_under_continuous_load() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    c.down.add(1)
    c.elect(2)
    c.down.discard(1)
    pid = 0
    for _ in range(100):
        for node in (1, 2, 3):
            if c.nodes[node].is_master:
                pid += 1
                c.propose(node, pid, b"load")
        c.run()
        c.tick(0.05)
    assert c.master() == 1
    assert len(c.acked) > pid // 2
    assert set(c.acked) | set(c.failed) == set(range(1, pid + 1))  # every proposal answered
