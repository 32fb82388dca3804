"""Acceptor rules: one promise per group, persist before reply, reject with the higher ballot."""

from __future__ import annotations

from phxq.paxos import (
    Accept,
    Accepted,
    AcceptRecord,
    Ballot,
    GroupConfig,
    PaxosNode,
    Persist,
    Prepare,
    Promise,
    PromiseRecord,
    RecoveredState,
    Reject,
    Send,
    recover_state,
)
from tools.loopback import campaign, of, persist_all, sent

G = 0  # group 0: the preferred master is node 1


def node(
    node_id: int, n: int = 3, recovered: RecoveredState | None = None, **kw: object
) -> PaxosNode:
    cfg = GroupConfig(group=G, node_id=node_id, members=tuple(range(1, n + 1)), **kw)  # type: ignore[arg-type]
    return PaxosNode(cfg, recovered, 0.0)


B1, B2, B3 = Ballot(1, 1), Ballot(2, 2), Ballot(3, 1)  # the acceptor under test is node 3


def prepare(ballot: Ballot, frm: int = 1, sender: int | None = None) -> Prepare:
    return Prepare(group=G, sender=sender or ballot.node, ballot=ballot, from_instance=frm)


def accept(ballot: Ballot, instance: int, value: bytes) -> Accept:
    return Accept(group=G, sender=ballot.node, ballot=ballot, instance=instance, value=value)


def test_promise_is_persisted_before_it_is_sent() -> None:
    a = node(3)
    effects = a.on_message(prepare(B2), 0.0)
    assert of(effects, Persist)[0].records == (PromiseRecord(B2),)
    assert not of(effects, Send)  # nothing leaves before the record is durable
    released = persist_all(a, effects)
    (promise,) = sent(released, Promise, to=2)
    assert promise.ballot == B2 and promise.accepted == () and promise.chosen_up_to == 0
    assert a.promised == B2


def test_prepare_not_above_promise_is_rejected_with_the_promise() -> None:
    a = node(3)
    persist_all(a, a.on_message(prepare(B2), 0.0))
    effects = a.on_message(prepare(B1), 0.0)
    assert not of(effects, Persist)
    (reject,) = sent(effects, Reject, to=1)
    assert reject.ballot == B1 and reject.promised == B2


def test_accept_is_persisted_then_acknowledged() -> None:
    a = node(3)
    effects = a.on_message(accept(B2, 1, b"v"), 0.0)
    assert of(effects, Persist)[0].records == (AcceptRecord(1, B2, b"v"),)
    assert not sent(effects, Accepted)
    (ack,) = sent(persist_all(a, effects), Accepted, to=2)
    assert (ack.ballot, ack.instance) == (B2, 1)


def test_accept_below_promise_is_rejected() -> None:
    a = node(3)
    persist_all(a, a.on_message(prepare(B3), 0.0))
    effects = a.on_message(accept(B2, 1, b"v"), 0.0)
    assert not of(effects, Persist)
    (reject,) = sent(effects, Reject, to=2)
    assert reject.promised == B3


def test_accept_at_a_higher_ballot_raises_the_promise() -> None:
    a = node(3)
    persist_all(a, a.on_message(prepare(B2), 0.0))
    persist_all(a, a.on_message(accept(B3, 1, b"v"), 0.0))
    assert a.promised == B3
    assert sent(a.on_message(prepare(B2, sender=1), 0.0), Reject)


def test_promise_reports_every_accepted_value_from_the_requested_instance() -> None:
    a = node(3)
    for i in (1, 2, 5):
        persist_all(a, a.on_message(accept(B1, i, b"v%d" % i), 0.0))
    later = a.config.lease + 1.0  # past the stickiness window of master 1
    (promise,) = sent(persist_all(a, a.on_message(prepare(B2, frm=2), later)), Promise)
    assert [(e.instance, e.ballot, e.value) for e in promise.accepted] == [
        (2, B1, b"v2"),
        (5, B1, b"v5"),
    ]


def test_duplicate_accept_waits_for_the_first_persist() -> None:
    a = node(3)
    first = a.on_message(accept(B2, 1, b"v"), 0.0)
    again = a.on_message(accept(B2, 1, b"v"), 0.0)
    assert not of(again, Persist) and not sent(again, Accepted)  # held behind the first persist
    released = persist_all(a, first)
    assert len(sent(released, Accepted)) == 2


def test_replies_leave_in_persist_order() -> None:
    a = node(3)
    e1 = a.on_message(accept(B2, 1, b"a"), 0.0)
    e2 = a.on_message(accept(B2, 2, b"b"), 0.0)
    (p1,), (p2,) = of(e1, Persist), of(e2, Persist)
    assert not sent(a.on_persisted(p1.token, 0.0), Accepted, to=1)
    out = a.on_persisted(p1.token, 0.0) + a.on_persisted(p2.token, 0.0)
    assert [m.instance for m in sent(out, Accepted)] == [2]


def test_restart_restores_promise_and_accepted_values() -> None:
    records = [
        PromiseRecord(B1),
        AcceptRecord(4, B1, b"x"),
        PromiseRecord(B3),
        AcceptRecord(2, B1, b"old"),
    ]
    state = recover_state(records, chosen_up_to=2, checksum=0)
    assert state.promised == B3 and state.max_round == 3
    assert dict(state.accepted) == {4: (B1, b"x")}  # instance 2 is already chosen
    a = node(2, recovered=state)
    assert sent(a.on_message(prepare(B2, sender=1), 0.0), Reject)
    (promise,) = sent(persist_all(a, a.on_message(prepare(Ballot(4, 1)), 0.0)), Promise)
    assert [(e.instance, e.value) for e in promise.accepted] == [(4, b"x")]


def test_restarted_proposer_uses_a_round_above_everything_it_persisted() -> None:
    state = RecoveredState(
        promised=Ballot(2, 3), max_round=7, accepted={}, chosen_up_to=0, checksum=0
    )
    n1 = node(1, recovered=state)
    effects = campaign(n1, 5.0)
    (p,) = of(effects, Persist)
    assert p.records == (PromiseRecord(Ballot(8, 1)),)
