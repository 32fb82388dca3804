"""Master rules: phase 1 once, re-propose + no-op holes, own vote after persist, batching,
pipelining window, failing proposals on step-down."""

from __future__ import annotations

from phxq.paxos import (
    Accept,
    Accepted,
    AcceptedEntry,
    AcceptRecord,
    Ballot,
    CatchupRequest,
    Chosen,
    GroupConfig,
    Heartbeat,
    Learned,
    PaxosNode,
    Persist,
    Prepare,
    Promise,
    ProposalFailed,
    Reject,
    decode_batch,
)
from tools.loopback import LoopbackCluster, campaign, of, persist_all, sent

G = 0  # group 0: the preferred master is node 1


def node(node_id: int, n: int = 3, **kw: object) -> PaxosNode:
    cfg = GroupConfig(group=G, node_id=node_id, members=tuple(range(1, n + 1)), **kw)  # type: ignore[arg-type]
    return PaxosNode(cfg, None, 0.0)


def elect(n1: PaxosNode, promises: dict[int, tuple[AcceptedEntry, ...]], cup: int = 0) -> list:
    """Drive node 1 through phase 1 with the given peer promises; returns the last effects."""
    effects = persist_all(n1, campaign(n1, n1.config.lease + 0.01))
    (prep,) = sent(effects, Prepare, to=2)
    out: list = []
    for peer, entries in promises.items():
        msg = Promise(
            group=G,
            sender=peer,
            ballot=prep.ballot,
            from_instance=prep.from_instance,
            accepted=entries,
            chosen_up_to=cup,
        )
        out += n1.on_message(msg, 1.2)
    return out


def test_proposer_persists_its_promise_before_sending_prepare() -> None:
    n1 = node(1)
    effects = campaign(n1, 1.01)
    assert of(effects, Persist) and not sent(effects, Prepare)
    assert len(sent(persist_all(n1, effects), Prepare)) == 2


def test_new_master_reproposes_highest_ballot_values_and_fills_holes_with_noops() -> None:
    n1 = node(1, n=5)  # majority of three: its own promise plus both below
    low, high = Ballot(1, 2), Ballot(2, 3)
    effects = elect(
        n1,
        {
            2: (AcceptedEntry(1, low, b"old"), AcceptedEntry(3, low, b"x")),
            3: (AcceptedEntry(1, high, b"new"),),
        },
    )
    assert n1.is_master and not n1.ready
    accepts = sent(effects, Accept, to=2)
    assert [(a.instance, a.value) for a in accepts] == [(1, b"new"), (2, b""), (3, b"x")]


def test_new_proposals_queue_behind_reproposals() -> None:
    n1 = node(1, window=8)
    elect(n1, {2: (AcceptedEntry(1, Ballot(1, 2), b"old"),)})
    accepts = sent(n1.propose(7, b"item", 1.2), Accept, to=2)
    assert [(a.instance, decode_batch(a.value)) for a in accepts] == [(2, [b"item"])]


def test_phase1_is_abandoned_when_a_promiser_already_learned_from_instance() -> None:
    n1 = node(1)
    effects = elect(n1, {2: ()}, cup=5)
    assert not n1.is_master
    assert not sent(effects, Accept)
    assert sent(effects, CatchupRequest, to=2)


def test_master_sends_accepts_and_persists_its_copy_in_the_same_step() -> None:
    n1 = node(1)
    elect(n1, {2: ()})
    effects = n1.propose(1, b"a", 1.3)
    (p,) = of(effects, Persist)
    assert p.records == (AcceptRecord(1, n1.ballot, encode := p.records[0].value),)  # type: ignore[union-attr]
    assert decode_batch(encode) == [b"a"]
    assert len(sent(effects, Accept)) == 2


def test_own_vote_counts_only_after_own_persist() -> None:
    n1 = node(1)
    elect(n1, {2: ()})
    effects = n1.propose(1, b"a", 1.3)
    ack = Accepted(group=G, sender=2, ballot=n1.ballot, instance=1)
    assert not of(n1.on_message(ack, 1.3), Learned)  # one peer vote + unpersisted own copy
    done = persist_all(n1, effects)
    (learned,) = of(done, Learned)
    assert learned.instance == 1 and learned.proposals == (1,)
    assert sent(done, Chosen, to=3)[0].first == 1


def test_chosen_needs_a_majority_with_the_same_ballot() -> None:
    n1 = node(1, n=5)
    effects = elect(n1, {2: (), 3: ()})
    effects = n1.propose(1, b"a", 1.3)
    persist_all(n1, effects)
    stale = Accepted(group=G, sender=2, ballot=Ballot(0, 2), instance=1)
    assert not of(n1.on_message(stale, 1.3), Learned)
    assert not of(
        n1.on_message(Accepted(group=G, sender=2, ballot=n1.ballot, instance=1), 1.3), Learned
    )
    assert of(
        n1.on_message(Accepted(group=G, sender=3, ballot=n1.ballot, instance=1), 1.3), Learned
    )


def test_window_bounds_instances_in_flight_and_batches_the_backlog() -> None:
    c = LoopbackCluster(3, window=2)
    c.elect(1)
    c.hold_persists = True
    for pid in range(10):
        c.propose(1, pid, b"i%d" % pid)
    instances = {m.instance for m in sent(c.effects[1], Accept)}
    assert len(instances) == 2  # window of two, nothing else sent
    c.hold_persists = False
    for m in c.nodes:
        c.complete_persists(m)
    c.run()
    sizes = [len(decode_batch(e.value)) for e in c.learned[1]]
    assert sizes == [1, 1, 8]  # one instance for everything queued meanwhile
    assert sorted(c.acked) == list(range(10))


def test_batch_respects_item_and_byte_bounds() -> None:
    c = LoopbackCluster(3, window=1, max_batch_items=3, max_batch_bytes=100)
    c.elect(1)
    c.hold_persists = True
    c.propose(1, 0, b"first")
    for pid in range(1, 8):
        c.propose(1, pid, b"x" * 40)
    c.hold_persists = False
    for m in c.nodes:
        c.complete_persists(m)
    c.run()
    sizes = [len(decode_batch(e.value)) for e in c.learned[1]]
    assert sizes == [1, 2, 2, 2, 1]  # at most 100 bytes (two 40-byte items) per instance


def test_low_load_proposal_goes_out_at_once() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    c.propose(1, 42, b"now")
    c.run()
    assert c.acked == {42: c.nodes[1].chosen_up_to}


def test_learned_in_order_even_when_chosen_out_of_order() -> None:
    c = LoopbackCluster(3, window=4)
    c.elect(1)
    start = c.nodes[1].chosen_up_to
    c.hold_persists = True
    for pid in range(3):
        c.propose(1, pid, b"p%d" % pid)
    c.run()
    held = c.held[1]
    c.hold_persists = False
    # complete the followers first: instances get peer votes but the master's own is pending
    for m in (2, 3):
        c.complete_persists(m)
    c.run()
    c.held[1] = held
    c.complete_persists(1)
    c.run()
    assert [e.instance for e in c.learned[1]][-3:] == [start + 1, start + 2, start + 3]


def test_non_master_fails_proposals_with_a_hint() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    (failed,) = of(c.nodes[2].propose(5, b"x", c.now), ProposalFailed)
    assert failed == ProposalFailed((5,), "not_master", 1)


def test_master_refused_by_a_majority_steps_down_and_fails_its_proposals() -> None:
    n1 = node(1, window=1)
    elect(n1, {2: ()})
    n1.propose(1, b"sent", 1.3)
    n1.propose(2, b"queued", 1.3)
    reject = Reject(group=G, sender=2, ballot=n1.ballot, promised=Ballot(9, 3))
    assert not of(n1.on_message(reject, 1.3), ProposalFailed)
    assert n1.is_master  # one acceptor of three refusing us leaves a majority that can vote
    reject = Reject(group=G, sender=3, ballot=n1.ballot, promised=Ballot(9, 3))
    effects = n1.on_message(reject, 1.3)
    assert not n1.is_master  # now a majority promised higher: this ballot is finished
    assert ProposalFailed((2,), "not_master", None) in effects
    assert ProposalFailed((1,), "unknown", None) in effects


def test_master_heartbeats_carry_its_learned_position() -> None:
    c = LoopbackCluster(3)
    c.elect(1)
    c.propose(1, 1, b"a")
    c.run()
    effects = c.nodes[1].on_tick(c.now + 0.2)
    hb = sent(effects, Heartbeat, to=2)[0]
    assert (hb.chosen_up_to, hb.checksum) == (c.nodes[1].chosen_up_to, c.nodes[1].checksum)


def test_window_never_assigns_an_instance_already_learned() -> None:
    from phxq.paxos.proposer import Window

    w = Window(GroupConfig(group=0, node_id=1, members=(1, 2, 3)), 5, [b"r5", b"r6", b"r7"])
    w.pending.append((1, b"client"))
    w.skip_learned(6)
    first, second = w.take_next(0.0), w.take_next(0.0)
    assert first is not None and (first[0], first[1].value) == (7, b"r7")
    assert second is not None and (second[0], second[1].pids) == (8, (1,))


def test_in_flight_proposal_learned_through_catchup_is_still_acked() -> None:
    from phxq.paxos import CatchupReply, ChosenEntry, chain_checksum

    n1 = node(1)
    elect(n1, {2: ()})
    effects = n1.propose(9, b"mine", 1.3)
    value = of(effects, Persist)[0].records[0].value  # type: ignore[union-attr]
    entry = ChosenEntry(1, value, chain_checksum(0, 1, value))
    reply = CatchupReply(group=G, sender=2, entries=(entry,), chosen_up_to=1)
    (learned,) = of(n1.on_message(reply, 1.4), Learned)
    assert learned.proposals == (9,)
