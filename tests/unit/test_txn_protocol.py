"""The transaction protocol over real StoreStates: never a partial transaction, one decision.

A Hypothesis rule-based state machine drives the ``StoreState`` of several groups on two store
sets (group numbers repeat across sets: a participant of group g on one set must never act as
the home group g of another; a home on another set is read through what its master answers,
as ``txn_peek`` does) through the
protocol of ``phxq.store.txn``: producers that prepare (home group first) and crash at any
point, decide or not; proposals (prepare, decide, release, discard) that sit in flight and are
chosen in any order, duplicated, or never; a home master's timeout and check-back racing the
producer; failovers (a new master proposes from its own replica's applied state, the old
master's proposals still in flight); replicas rebuilt from a snapshot. Invariants after every
step: a transaction with a visible message was decided commit at its home; no message is
visible twice; the home's decision never changes. At the end every transaction settles to all
of its messages visible (commit) or none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from phxq.store.schedule import Released
from phxq.store.schedule_entries import encode_roll
from phxq.store.state import StoreState
from phxq.store.txn import all_prepared, remote_groups
from phxq.store.txn_entries import (
    HELD,
    encode_decide,
    encode_discard,
    encode_prepare,
    encode_txn_release,
)

GROUPS = 2  # per store set
SETS = (1, 2)
NODES = GROUPS * len(SETS)  # one state per (set, group): node i is group i % GROUPS of its set


def set_of(node: int) -> int:
    return SETS[node // GROUPS]


def group_of(node: int) -> int:
    return node % GROUPS


def node_of(number: int, group: int) -> int:
    return SETS.index(number) * GROUPS + group


@dataclass
class Producer:
    txn: str
    home: int  # a node: (set, group)
    parts: dict[int, list[tuple[int, int, list[bytes]]]]  # node -> [(part, queue, payloads)]
    acked: set[int] = field(default_factory=set)  # parts whose prepare was applied
    crashed: bool = False
    sent_home: bool = False
    sent_rest: bool = False
    local_commit: bool = True  # what the check-back handler answers

    def all_payloads(self) -> set[bytes]:
        return {p for parts in self.parts.values() for _, _, ps in parts for p in ps}


class TxnProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.states = [StoreState(group_of(n), dedup_window=60.0) for n in range(NODES)]
        self.logs: list[list[list[bytes]]] = [[] for _ in range(NODES)]
        self.inflight: list[list[bytes]] = [[] for _ in range(NODES)]
        self.producers: list[Producer] = []
        self.visible: dict[bytes, int] = {}  # payload -> times made visible
        self.payload_txn: dict[bytes, str] = {}
        self.first_decision: dict[str, bool] = {}
        self.clock = 1000.0
        self.part_seq = 0

    # ---------------------------------------------------------------------------- helpers

    def _choose(self, group: int, items: list[bytes]) -> None:
        state = self.states[group]
        instance = state.applied_up_to + 1
        results = state.apply(instance, items)
        self.logs[group].append(items)
        for result in results:
            if isinstance(result, Released):
                self._saw_release(group, instance, items, result)
        self._note_decisions()
        self._note_prepares(group)

    def _saw_release(self, group: int, instance: int, items: list[bytes], r: Released) -> None:
        from phxq.store.entries import instance_messages

        messages = instance_messages(items)
        by_offset = {}
        for index, (_, m) in enumerate(messages):
            by_offset[(instance << 20) | index] = m.payload
        for offset in r.offsets:
            if offset is not None:
                payload = by_offset[offset]
                self.visible[payload] = self.visible.get(payload, 0) + 1

    def _note_decisions(self) -> None:
        for p in self.producers:
            d = self.states[p.home].txns.decision(p.txn)
            if d is not None:
                assert self.first_decision.setdefault(p.txn, d) == d, "a decision changed"

    def _note_prepares(self, group: int) -> None:
        for p in self.producers:
            record = self.states[group].txns.open.get(p.txn)
            if record is not None:
                p.acked |= record.parts & {part for part, _, _ in p.parts.get(group, [])}

    def _prepare_items(self, p: Producer, group: int) -> list[bytes]:
        home_set = set_of(p.home)
        expect = [
            (group_of(n), part) if set_of(n) == home_set else (group_of(n), part, set_of(n))
            for n, parts in p.parts.items()
            for part, _, _ in parts
        ]
        out = []
        for part, queue, payloads in p.parts[group]:
            wire = [[pl, None, {}, None] for pl in payloads]
            out.append(
                encode_prepare(
                    p.txn,
                    group_of(p.home),
                    part,
                    5.0,
                    "pg",
                    "t",
                    queue,
                    self.clock,
                    wire,
                    expect if group == p.home else (),
                    None if set_of(group) == home_set else home_set,
                )
            )
        return out

    def _resolve_items(self, group: int) -> list[bytes]:
        """What a participant's master proposes for each open transaction whose decision it
        can read in the home group's applied state."""
        state = self.states[group]
        out = []
        for txn, record in list(state.txns.open.items()):
            home = node_of(record.home_set or set_of(group), record.home)
            decision = self.states[home].txns.decision(txn)
            if decision is None:
                continue
            if decision:
                ids = state.txns.pending_ids(txn, state.schedule)
                if ids:
                    wire = self._bodies(group, ids)  # copied from the records, as a master does
                    out.append(
                        encode_txn_release(txn, "t", 0, self.clock, ids, [HELD] * len(ids), wire)
                    )
            else:
                out.append(encode_discard(txn, self.clock))
        return out

    def _bodies(self, group: int, ids: list[int]) -> list[list[object]]:
        from phxq.store.schedule_entries import instance_scheduled

        out: list[list[object]] = []
        for sid in ids:
            instance, k = sid >> 20, sid & ((1 << 20) - 1)
            found = instance_scheduled(self.logs[group][instance - 1])
            _, msg, due = found[k]
            assert due == HELD
            out.append([msg.payload, msg.key, msg.headers])
        return out

    # ------------------------------------------------------------------------------ rules

    @rule(
        groups=st.lists(st.integers(0, NODES - 1), min_size=1, max_size=4),
        sizes=st.lists(st.integers(1, 3), min_size=4, max_size=4),
        local_commit=st.integers(0, 3),
    )
    def begin(self, groups: list[int], sizes: list[int], local_commit: int) -> None:
        if len(self.producers) >= 4:
            return
        n = len(self.producers)
        txn = f"t{n}"
        parts: dict[int, list[tuple[int, int, list[bytes]]]] = {}
        for i, g in enumerate(groups):
            self.part_seq += 1
            payloads = [f"{txn}-{i}-{j}".encode() for j in range(sizes[i])]
            for pl in payloads:
                self.payload_txn[pl] = txn
            parts.setdefault(g, []).append((self.part_seq, g, payloads))
        # Mostly producers whose local transaction commits: more commits to check.
        self.producers.append(Producer(txn, groups[0], parts, local_commit=local_commit > 0))

    @rule()
    def producers_step(self) -> None:
        """Every live producer takes its next step: prepare the home, then the others once
        the home's parts are held, then decide (commit only with every part held)."""
        for p in self.producers:
            if p.crashed:
                continue
            home_parts = {part for part, _, _ in p.parts[p.home]}
            if not p.sent_home:
                self.inflight[p.home].extend(self._prepare_items(p, p.home))
                p.sent_home = True
            elif home_parts <= p.acked and not p.sent_rest:
                for g in p.parts:
                    if g != p.home:
                        self.inflight[g].extend(self._prepare_items(p, g))
                p.sent_rest = True
            elif p.sent_rest:
                every = {part for parts in p.parts.values() for part, _, _ in parts}
                commit = p.local_commit and every <= p.acked
                self.inflight[p.home].append(encode_decide(p.txn, commit, self.clock, "producer"))

    @rule(data=st.data())
    def producer_crashes(self, data: st.DataObject) -> None:
        if self.producers and data.draw(st.booleans()):
            data.draw(st.sampled_from(self.producers)).crashed = True

    @rule(data=st.data(), duplicate=st.booleans())
    def choose(self, data: st.DataObject, duplicate: bool) -> None:
        """A proposal in flight is chosen: any one (reordering), kept in flight (duplicate,
        e.g. a retry or an old master's copy) or not."""
        busy = [g for g in range(NODES) if self.inflight[g]]
        if not busy:
            return
        for _ in range(data.draw(st.integers(1, 4))):
            group = data.draw(st.sampled_from(busy))
            if not self.inflight[group]:
                continue
            i = data.draw(st.integers(0, len(self.inflight[group]) - 1))
            item = self.inflight[group][i] if duplicate else self.inflight[group].pop(i)
            self._choose(group, [item])

    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        group = data.draw(st.integers(0, NODES - 1))
        if self.inflight[group] and data.draw(st.integers(0, 3)) == 0:
            self.inflight[group].pop(data.draw(st.integers(0, len(self.inflight[group]) - 1)))

    @rule(group=st.integers(0, NODES - 1))
    def participant_master_resolves(self, group: int) -> None:
        self.inflight[group].extend(self._resolve_items(group))

    @rule(data=st.data(), answer=st.sampled_from(["checkback", "timeout"]))
    def home_master_decides(self, data: st.DataObject, answer: str) -> None:
        """The home master, past the timeout: the check-back handler's answer (a commit only
        when every expected part is prepared), or a rollback (no handler / maximum age)."""
        homes = [(g, txn) for g in range(NODES) for txn in self.states[g].txns.open]
        if not homes:
            return
        g, txn = data.draw(st.sampled_from(homes))
        producer = next(p for p in self.producers if p.txn == txn)
        if not self.states[g].txns.open[txn].is_home(group_of(g)):
            assert g != producer.home
            return
        assert g == producer.home
        commit = answer == "checkback" and producer.local_commit
        book = self.states[g].txns
        remote = {}  # what each other set's group master answers (txn_peek: parts held)
        for number, other in remote_groups(txn, book):
            held = self.states[node_of(number, other)].txns.open.get(txn)
            remote[(number, other)] = None if held is None else sorted(held.parts)
        local = lambda x: self.states[node_of(set_of(g), x)].txns  # noqa: E731
        if commit and not all_prepared(txn, book, local, remote):
            return
        self.inflight[g].append(encode_decide(txn, commit, self.clock, answer))

    @rule(group=st.integers(0, NODES - 1))
    def master_rolls(self, group: int) -> None:
        """Retention wants the log: the master copies pending (half) messages further on; the
        roll may be chosen late, after a release or discard of the same messages."""
        state = self.states[group]
        pending = state.schedule.below(state.applied_up_to + 1, 100)
        if pending:
            ids = [sid for _, sid in pending]
            wire = self._bodies(group, ids)
            dues = [due for due, _ in pending]
            self.inflight[group].append(encode_roll("t", 0, ids, dues, wire))

    @rule(group=st.integers(0, NODES - 1))
    def failover(self, group: int) -> None:
        """A new master: its replica's state is the same log applied (checked through a
        snapshot round trip); the old master's proposals stay in flight."""
        restored = StoreState.restore(self.states[group].snapshot())
        assert restored.snapshot() == self.states[group].snapshot()
        self.states[group] = restored

    @rule()
    def time_passes(self) -> None:
        self.clock += 1.0

    # ------------------------------------------------------------------------- invariants

    @invariant()
    def retention_keeps_every_held_record(self) -> None:
        """The retention floor (the oldest pending id's instance) is at or below the record of
        every pending half message: no undecided half message's record may be truncated."""
        for state in self.states:
            floor = state.schedule.oldest_id()
            for txn in state.txns.open:
                for sid in state.txns.pending_ids(txn, state.schedule):
                    assert floor is not None and floor <= sid

    @invariant()
    def visible_only_if_committed_and_once(self) -> None:
        for payload, times in self.visible.items():
            assert times == 1, f"{payload!r} visible {times} times"
            txn = self.payload_txn[payload]
            p = next(p for p in self.producers if p.txn == txn)
            assert self.states[p.home].txns.decision(txn) is True, f"{txn} visible, not committed"

    def _deliver_all(self) -> None:
        for g in range(NODES):
            for item in self.inflight[g]:
                self._choose(g, [item])
            self.inflight[g] = []

    def teardown(self) -> None:
        # Settle: the live producers finish (every in-flight proposal is chosen, in order, each
        # round); then the home masters roll back what is undecided (crashed producers, the
        # maximum age); participants resolve until nothing changes.
        for _ in range(4):
            self._deliver_all()
            self.producers_step()
        self._deliver_all()
        for p in self.producers:
            self._choose(p.home, [encode_decide(p.txn, False, self.clock, "max age")])
        for _ in range(3):
            for g in range(NODES):
                items = self._resolve_items(g)
                if items:
                    self._choose(g, items)
        self.visible_only_if_committed_and_once()
        for p in self.producers:
            shown = {pl for pl in p.all_payloads() if pl in self.visible}
            if self.first_decision.get(p.txn):
                # Committed by the producer or the check-back: only after every part was held.
                assert shown == p.all_payloads(), f"{p.txn}: partial: {shown}"
            else:
                assert not shown, f"{p.txn} rolled back but visible: {shown}"
        for g in range(NODES):
            assert not self.states[g].txns.open, "a transaction stayed open"
            assert len(self.states[g].schedule) == 0, "a half message stayed held"
            replay = StoreState(group_of(g), dedup_window=60.0)
            for i, items in enumerate(self.logs[g], start=1):
                replay.apply(i, items)
            assert replay.snapshot() == self.states[g].snapshot(), "replicas diverge"


TxnProtocol.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
test_txn_protocol = TxnProtocol.TestCase


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_txn_protocol_long_run() -> None:
    run_state_machine_as_test(
        TxnProtocol, settings=settings(max_examples=1000, stateful_step_count=100, deadline=None)
    )
