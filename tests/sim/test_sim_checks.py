"""The simulator's own parts: the disk model, the recovery references and the send-time checks.

Each check of ``oracle.Oracle`` is shown to fire on a message that breaks it (and to stay quiet on
the same message once the disk holds what it implies), so that a green simulator run means the
checks ran, not that they cannot fail.
"""

from __future__ import annotations

import random

import pytest

from phxq.paxos import (
    ZERO,
    Accept,
    Accepted,
    AcceptedEntry,
    AcceptRecord,
    Ballot,
    Chosen,
    GroupConfig,
    Heartbeat,
    PaxosNode,
    Prepare,
    Promise,
    PromiseRecord,
    RecoveredState,
    chain_checksum,
    recover_state,
)
from tests.sim.disk import ChosenMark, Record, SimDisk, fold
from tests.sim.oracle import Oracle
from tests.sim.plogcheck import plog_recover


class Failed(AssertionError):
    pass


def _fail(what: str) -> None:
    raise Failed(what)


def random_log(rng: random.Random, length: int) -> list[Record]:
    """A plausible durable log: promises and accepts with rising ballots from several nodes,
    chosen marks in order (some learned through catch-up, without a ballot)."""
    out: list[Record] = []
    promised = ZERO
    chosen, checksum = 0, 0
    accepted: dict[int, tuple[Ballot, bytes]] = {}
    for _ in range(length):
        roll = rng.random()
        if roll < 0.2:
            b = Ballot(promised.round + rng.randint(0, 2), rng.randint(1, 5))
            if b > promised:
                promised = b
                out.append(PromiseRecord(b))
        elif roll < 0.75:
            i = chosen + rng.randint(1, 6)
            v = rng.randbytes(rng.randint(0, 40))
            b = max(promised, Ballot(promised.round, rng.randint(1, 5)))
            promised = b
            accepted[i] = (b, v)
            out.append(AcceptRecord(i, b, v))
        else:
            i = chosen + 1
            held = accepted.get(i)
            use_accept = held is not None and rng.random() < 0.8
            v = held[1] if use_accept else rng.randbytes(8)
            checksum = chain_checksum(checksum, i, v)
            out.append(ChosenMark(i, held[0] if use_accept else None, checksum, v))
            chosen = i
    return out


@pytest.mark.parametrize("seed", range(12))
def test_the_fold_the_core_reference_and_the_plog_recover_the_same_state(seed: int) -> None:
    records = random_log(random.Random(seed), 30 + 40 * seed)
    want = fold(records)
    marks = [r for r in records if isinstance(r, ChosenMark)]
    rec = recover_state([r for r in records if not isinstance(r, ChosenMark)],
                        want.chosen_up_to, want.checksum)  # fmt: skip
    got = plog_recover(records)
    for state in (rec, got):
        assert state.promised == want.promised
        assert state.max_round == want.max_round
        assert dict(state.accepted) == want.accepted
        assert (state.chosen_up_to, state.checksum) == (len(marks), want.checksum)


def test_fold_keeps_the_highest_ballot_per_instance_above_the_chosen_prefix() -> None:
    b1, b2 = Ballot(1, 2), Ballot(2, 1)
    records: list[Record] = [
        AcceptRecord(1, b1, b"a"),
        PromiseRecord(b2),
        AcceptRecord(2, b2, b"x"),
        AcceptRecord(2, b1, b"old"),  # written later, lower ballot: not the answer
        ChosenMark(1, b1, 7, b"a"),
        PromiseRecord(Ballot(5, 3)),
    ]
    got = fold(records)
    assert got.accepted == {2: (b2, b"x")}
    assert (got.promised, got.max_round, got.chosen_up_to, got.checksum) == (
        Ballot(5, 3),
        5,
        1,
        7,
    )


def test_a_crash_keeps_the_durable_records_and_a_prefix_of_those_in_flight() -> None:
    disk = SimDisk()
    b = Ballot(1, 1)
    end = disk.append([PromiseRecord(b)])
    assert disk.sync(end) == [PromiseRecord(b)]
    disk.append([AcceptRecord(1, b, b"v1"), AcceptRecord(2, b, b"v2"), AcceptRecord(3, b, b"v3")])
    assert (1, b) not in disk.accepts  # in flight: not durable yet
    assert disk.crash(keep=2) == [AcceptRecord(1, b, b"v1"), AcceptRecord(2, b, b"v2")]
    assert not disk.pending and len(disk.durable) == 3
    assert disk.accepts == {(1, b): b"v1", (2, b): b"v2"} and disk.promises == {b}


def durable(*records: Record) -> SimDisk:
    disk = SimDisk()
    disk.sync(disk.append(records))
    return disk


B1, B2 = Ballot(1, 1), Ballot(1, 2)


def test_a_promise_needs_its_durable_promise_and_reports_every_durable_vote() -> None:
    oracle = Oracle(2, _fail)
    promise = Promise(group=0, sender=3, ballot=B2, from_instance=1, accepted=(), chosen_up_to=0)
    with pytest.raises(Failed, match="DURABILITY: node 3 sent Promise"):
        oracle.check_send(3, 1, promise, SimDisk())
    voted = durable(AcceptRecord(4, B1, b"v"), PromiseRecord(B2))
    with pytest.raises(Failed, match=r"SAFETY: node 3 promised 1.2 .* without its durable accept"):
        oracle.check_send(3, 1, promise, voted)
    wrong = AcceptedEntry(4, B1, b"not what the disk holds")
    with pytest.raises(Failed, match="DURABILITY: node 3 reported accepting"):
        oracle.check_send(3, 1, Promise(0, 3, B2, 1, (wrong,), 0), voted)
    oracle.check_send(3, 1, Promise(0, 3, B2, 1, (AcceptedEntry(4, B1, b"v"),), 0), voted)
    oracle.check_send(3, 1, Promise(0, 3, B2, 1, (), 4), voted)  # learned 4: nothing to report


def test_an_accepted_needs_its_durable_accept_and_votes_never_go_back() -> None:
    oracle = Oracle(2, _fail)
    with pytest.raises(Failed, match="DURABILITY: node 2 sent Accepted"):
        oracle.check_send(2, 1, Accepted(0, 2, B1, 5), durable(PromiseRecord(B1)))
    disk = durable(PromiseRecord(B2), AcceptRecord(5, B1, b"v"))
    oracle.check_send(2, 1, Promise(0, 2, B2, 6, (), 0), disk)
    with pytest.raises(Failed, match=r"SAFETY: node 2 sent Accepted\(1.1\) after Promise\(1.2\)"):
        oracle.check_send(2, 1, Accepted(0, 2, B1, 5), disk)


def test_a_prepare_needs_its_own_durable_promise_and_a_fresh_ballot() -> None:
    oracle = Oracle(2, _fail)
    prepare = Prepare(group=0, sender=1, ballot=B1, from_instance=1)
    with pytest.raises(Failed, match="DURABILITY: node 1 sent Prepare"):
        oracle.check_send(1, 1, prepare, SimDisk())
    disk = durable(PromiseRecord(B1))
    oracle.check_send(1, 1, prepare, disk)
    with pytest.raises(Failed, match=r"SAFETY: node 1 reused ballot 1.1 after a restart"):
        oracle.check_send(1, 3, prepare, disk)


def test_an_accept_needs_a_majority_of_promises_one_value_per_ballot_and_the_chosen_value() -> None:
    oracle = Oracle(2, _fail)
    disk = durable(PromiseRecord(B2))
    with pytest.raises(Failed, match=r"SAFETY: node 2 sent Accept.* without a majority"):
        oracle.check_send(2, 1, Accept(0, 2, B2, 1, b"x"), disk)
    oracle.check_send(3, 1, Promise(0, 3, B2, 1, (), 0), durable(PromiseRecord(B2)))
    oracle.check_send(2, 1, Accept(0, 2, B2, 1, b"x"), disk)
    with pytest.raises(Failed, match=r"SAFETY: two values proposed for instance 1 at ballot 1.2"):
        oracle.check_send(2, 1, Accept(0, 2, B2, 1, b"y"), disk)
    oracle.on_durable(1, [AcceptRecord(2, B1, b"chosen")])
    oracle.on_durable(3, [AcceptRecord(2, B1, b"chosen")])
    assert oracle.chosen[2] == b"chosen"
    with pytest.raises(Failed, match=r"SAFETY: instance 2 was chosen at 1.1"):
        oracle.check_send(2, 1, Accept(0, 2, B2, 2, b"other"), disk)
    with pytest.raises(Failed, match=r"SAFETY: instance 1 chosen at 1.1 .* ballot 1.2 proposed"):
        oracle.on_durable(1, [AcceptRecord(1, B1, b"z")])
        oracle.on_durable(3, [AcceptRecord(1, B1, b"z")])


def test_chosen_and_heartbeat_need_durable_votes_and_promise() -> None:
    oracle = Oracle(2, _fail)
    oracle.on_durable(1, [AcceptRecord(1, B1, b"v"), AcceptRecord(2, B1, b"w")])
    oracle.on_durable(2, [AcceptRecord(1, B1, b"v")])
    disk = durable(PromiseRecord(B1))
    oracle.check_send(1, 1, Chosen(0, 1, B1, 1, 1), disk)
    with pytest.raises(Failed, match="DURABILITY: node 1 announced instance 2 chosen"):
        oracle.check_send(1, 1, Chosen(0, 1, B1, 1, 2), disk)
    oracle.check_send(1, 1, Heartbeat(0, 1, B1, 1, 0), disk)
    with pytest.raises(Failed, match=r"DURABILITY: node 1 leads with ballot 1.2"):
        oracle.check_send(1, 1, Heartbeat(0, 1, B2, 1, 0), disk)
    with pytest.raises(Failed, match="SAFETY: two values accepted for instance 2"):
        oracle.on_durable(2, [AcceptRecord(2, B1, b"not w")])


def test_a_restart_must_recover_what_the_durable_records_say() -> None:
    oracle = Oracle(2, _fail)
    records: list[PromiseRecord | AcceptRecord] = [PromiseRecord(B2), AcceptRecord(3, B1, b"v")]
    expect = fold(records)
    rec = recover_state(records, 0, 0)
    node = PaxosNode(GroupConfig(group=0, node_id=1, members=(1, 2, 3)), rec, 0.0)
    oracle.check_recovered(1, rec, node, expect)
    oracle.check_recovered(1, plog_recover(records), None, expect, "the PLog")
    forgot = RecoveredState(B1, 1, {3: (B1, b"v")}, 0, 0)
    with pytest.raises(Failed, match=r"RECOVERY: recovery of node 1 gave promised=Ballot\(round"):
        oracle.check_recovered(1, forgot, None, expect)
    lost = RecoveredState(B2, 1, {}, 0, 0)
    with pytest.raises(Failed, match=r"RECOVERY: the PLog of node 1 gave accepted=\{\}"):
        oracle.check_recovered(1, lost, None, expect, "the PLog")
    with pytest.raises(Failed, match="RECOVERY: node 1's core took"):
        oracle.check_recovered(1, rec, PaxosNode(node.config, lost, 0.0), expect)
