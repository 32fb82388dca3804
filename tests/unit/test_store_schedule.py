"""The pending schedule (phxq.store.schedule) and the store state's schedule/release/cancel
entries: release once, never early, cancel, order by (due, id), ties, snapshots."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from phxq.errors import ProtocolError
from phxq.routing import make_offset
from phxq.store.entries import encode_enqueue, instance_messages
from phxq.store.schedule import (
    BUCKET_SECONDS,
    Cancelled,
    Released,
    Schedule,
    is_scheduled_ref,
    scheduled_id_of,
)
from phxq.store.schedule_entries import (
    encode_cancel,
    encode_release,
    encode_roll,
    encode_schedule,
    instance_scheduled,
)
from phxq.store.state import Enqueued, Rejected, Rolled, Scheduled, StoreState

# ----------------------------------------------------------------------------- Schedule


def test_due_is_ordered_by_due_then_id_and_never_early() -> None:
    s = Schedule()
    s.add(5, 100.0)
    s.add(6, 50.0)
    s.add(7, 100.0)  # tie with 5: id order
    s.add(8, 100.5)
    s.add(9, 1000.0)
    assert s.due(49.9, 10) == []
    assert s.due(100.0, 10) == [(50.0, 6), (100.0, 5), (100.0, 7)]
    assert s.due(100.0, 2) == [(50.0, 6), (100.0, 5)]
    assert s.next_due() == 50.0
    assert len(s) == 5


def test_remove_is_once_and_needs_the_exact_due_time() -> None:
    s = Schedule()
    s.add(1, 10.0)
    assert not s.remove(1, 11.0)  # wrong due: not this message
    assert s.remove(1, 10.0)
    assert not s.remove(1, 10.0)
    assert len(s) == 0 and s.next_due() is None and s.oldest_id() is None


def test_next_due_follows_removals_and_earlier_adds() -> None:
    s = Schedule()
    s.add(1, 500.0)
    s.add(2, 20.0)
    assert s.next_due() == 20.0
    s.remove(2, 20.0)
    assert s.next_due() == 500.0
    s.add(3, 5.0)
    assert s.next_due() == 5.0
    assert s.oldest_id() == 1


def test_ids_added_out_of_order_stay_findable() -> None:
    s = Schedule()
    for sid in (30, 10, 20):
        s.add(sid, 1.0)
    assert s.due(1.0, 10) == [(1.0, 10), (1.0, 20), (1.0, 30)]
    with pytest.raises(ValueError):
        s.add(20, 1.0)


def test_snapshot_round_trips_and_is_canonical() -> None:
    a, b = Schedule(), Schedule()
    for sid, due in [(1, 3.0), (2, 3.0 + 10 * BUCKET_SECONDS), (3, -7.5), (4, 1e9)]:
        a.add(sid, due)
    for sid, due in [(1, 3.0), (2, 3.0 + 10 * BUCKET_SECONDS), (3, -7.5), (4, 1e9), (9, 4.0)]:
        b.add(sid, due)
    b.remove(9, 4.0)
    assert a.snapshot() == b.snapshot()
    c = Schedule.restore(a.snapshot())
    assert c.snapshot() == a.snapshot()
    assert c.due(math.inf, 10) == a.due(math.inf, 10)
    assert len(c) == 4 and c.next_due() == -7.5


@pytest.mark.parametrize(
    "rows",
    [
        "x",
        [[0, b"", b""]],
        [[0, b"\0" * 8, b"\0" * 16]],
        [[1, b"\0" * 8, b"\0" * 8]],  # due 0.0 is not in bucket 1
        [[0, b"\0" * 8, b"\1" + b"\0" * 7], [0, b"\0" * 8, b"\2" + b"\0" * 7]],
    ],
)
def test_restore_rejects_malformed_rows(rows: object) -> None:
    with pytest.raises(ProtocolError):
        Schedule.restore(rows)


class ScheduleModel(RuleBasedStateMachine):
    """Schedule against a dict model: every pending message leaves once, never before due."""

    def __init__(self) -> None:
        super().__init__()
        self.schedule = Schedule()
        self.model: dict[int, float] = {}
        self.next_id = 1
        self.gone: set[int] = set()

    @rule(due=st.floats(-1e4, 1e4, allow_nan=False) | st.sampled_from([0.0, 60.0, 59.999]))
    def add(self, due: float) -> None:
        self.schedule.add(self.next_id, due)
        self.model[self.next_id] = due
        self.next_id += 1

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        sid = data.draw(st.integers(1, self.next_id))
        due = self.model.get(sid, 0.0)
        assert self.schedule.remove(sid, due) == (sid in self.model)
        if self.model.pop(sid, None) is not None:
            self.gone.add(sid)

    @rule(now=st.floats(-1e4, 1e4, allow_nan=False), limit=st.integers(1, 5))
    def release_due(self, now: float, limit: int) -> None:
        got = self.schedule.due(now, limit)
        want = sorted((d, i) for i, d in self.model.items() if d <= now)[:limit]
        assert got == want
        for due, sid in got:
            assert due <= now
            assert self.schedule.remove(sid, due)
            assert not self.schedule.remove(sid, due)  # released once
            del self.model[sid]

    @rule()
    def snapshot_restore(self) -> None:
        self.schedule = Schedule.restore(self.schedule.snapshot())

    @invariant()
    def agrees(self) -> None:
        assert len(self.schedule) == len(self.model)
        assert self.schedule.next_due() == min(self.model.values(), default=None)
        assert self.schedule.oldest_id() == min(self.model, default=None)
        for sid in self.gone:
            assert not self.schedule.contains(sid, 0.0)


ScheduleModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
test_schedule_model = ScheduleModel.TestCase

# -------------------------------------------------------------------------- StoreState


def _msg(payload: bytes, dedup: str | None = None) -> list[object]:
    return [payload, None, {}, dedup]


def _schedule(state: StoreState, instance: int, *items: bytes) -> list[object]:
    return state.apply(instance, list(items))


def test_scheduled_messages_are_invisible_until_released_in_release_order() -> None:
    s = StoreState(0, dedup_window=60.0)
    [r] = _schedule(s, 1, encode_schedule("t", 0, 100.0, [200.0, 150.0], [_msg(b"a"), _msg(b"b")]))
    assert isinstance(r, Scheduled) and r.duplicates == (False, False)
    ids = [scheduled_id_of(ref) for ref in r.refs]
    assert ids == [make_offset(1, 0), make_offset(1, 1)] and all(map(is_scheduled_ref, r.refs))
    assert s.index_entries(1, []) == [] and s.end_offset("t", 0) is None
    s.apply(2, [encode_enqueue("t", 0, 101.0, [_msg(b"now")])])
    # b (due 150) is released first, so it gets the lower offset
    release_b = encode_release("t", 0, 150.0, [ids[1]], [150.0], [[b"b", None, {}]])
    early_a = encode_release("t", 0, 150.0, [ids[0]], [200.0], [[b"a", None, {}]])
    results = s.apply(3, [release_b, early_a])
    assert results == [Released((make_offset(3, 0),)), Released((None,))]
    assert s.index_entries(3, [release_b, early_a]) == [(("t", 0), 0, 150.0)]
    assert s.end_offset("t", 0) == make_offset(3, 0)
    assert len(s.schedule) == 1
    # the readable messages of instance 3: both release items count (ordinals), one indexed
    flat = instance_messages([release_b, early_a])
    assert [m.payload for _, m in flat] == [b"b", b"a"]
    release_a = encode_release("t", 0, 200.5, [ids[0]], [200.0], [[b"a", None, {}]])
    again_b = encode_release("t", 0, 300.0, [ids[1]], [150.0], [[b"b", None, {}]])
    assert s.apply(4, [again_b, release_a]) == [Released((None,)), Released((make_offset(4, 1),))]
    assert len(s.schedule) == 0


def test_cancel_once_and_a_cancelled_message_is_never_released() -> None:
    s = StoreState(0, dedup_window=0.0)
    [r] = _schedule(s, 1, encode_schedule("t", 1, 1.0, [5.0], [_msg(b"x")]))
    sid = scheduled_id_of(r.refs[0])  # type: ignore[union-attr]
    assert s.apply(2, [encode_cancel(sid, 5.0), encode_cancel(sid, 5.0)]) == [
        Cancelled(True),
        Cancelled(False),
    ]
    item = encode_release("t", 1, 9.0, [sid], [5.0], [[b"x", None, {}]])
    assert s.apply(3, [item]) == [Released((None,))]
    assert s.index_entries(3, [item]) == []


def test_a_retried_scheduled_enqueue_is_a_duplicate_with_the_original_id() -> None:
    s = StoreState(0, dedup_window=60.0)
    entry = encode_schedule("t", 0, 10.0, [99.0], [_msg(b"x", "d1")])
    [first] = s.apply(1, [entry])
    [again] = s.apply(2, [entry])
    assert isinstance(again, Scheduled) and again.duplicates == (True,)
    assert again.refs == first.refs  # type: ignore[union-attr]
    assert len(s.schedule) == 1
    # an ordinary enqueue reusing the id is answered with the scheduled original
    [plain] = s.apply(3, [encode_enqueue("t", 0, 11.0, [_msg(b"y", "d1")])])
    assert isinstance(plain, Enqueued) and plain.duplicates == (True,)
    assert is_scheduled_ref(plain.offsets[0])


def test_scheduled_ids_count_schedule_entries_only() -> None:
    items = [
        encode_enqueue("t", 0, 1.0, [_msg(b"e")]),
        encode_schedule("t", 0, 1.0, [5.0], [_msg(b"s0")]),
        b"garbage",
        encode_schedule("t", 1, 1.0, [6.0, 7.0], [_msg(b"s1"), _msg(b"s2")]),
    ]
    s = StoreState(0, dedup_window=0.0)
    results = s.apply(1, items)
    assert isinstance(results[0], Enqueued) and isinstance(results[2], Rejected)
    refs = [scheduled_id_of(r) for res in results if isinstance(res, Scheduled) for r in res.refs]
    assert refs == [make_offset(1, 0), make_offset(1, 1), make_offset(1, 2)]
    flat = instance_scheduled(items)
    assert [(m.payload, due) for _, m, due in flat] == [(b"s0", 5.0), (b"s1", 6.0), (b"s2", 7.0)]


def test_snapshot_carries_the_schedule_and_version_1_still_restores() -> None:
    s = StoreState(0, dedup_window=0.0)
    s.apply(1, [encode_schedule("t", 0, 1.0, [5.0, 6.0], [_msg(b"a"), _msg(b"b")])])
    restored = StoreState.restore(s.snapshot())
    assert restored.snapshot() == s.snapshot()
    assert restored.schedule.due(10.0, 10) == [(5.0, make_offset(1, 0)), (6.0, make_offset(1, 1))]
    import msgpack

    body = msgpack.unpackb(StoreState(0, dedup_window=0.0).snapshot())
    old = msgpack.packb([1, *body[1:12]])
    assert len(StoreState.restore(old).schedule) == 0


class DelayedStateMachine(RuleBasedStateMachine):
    """Two replicas (one restored from snapshots along the way) apply the same log of schedule,
    release (also duplicate, stale and early ones), roll, cancel and enqueue entries: they
    agree, each message is released at most once, never before its due time, never after a
    cancel, and a roll keeps it pending under a new id that its original id still names;
    offsets are unique. Messages are known by their original (client-visible) ids."""

    def __init__(self) -> None:
        super().__init__()
        self.a = StoreState(0, dedup_window=30.0)
        self.b = StoreState(0, dedup_window=30.0)
        self.instance = 0
        self.due: dict[int, float] = {}  # every original id -> due
        self.current: dict[int, int] = {}  # original id -> id now (after rolls)
        self.old_ids: dict[int, list[int]] = {}  # original id -> ids it had before
        self.pending: set[int] = set()
        self.released: dict[int, float] = {}  # original id -> released_at
        self.cancelled: set[int] = set()
        self.offsets: set[int] = set()
        self.clock = 0.0

    def _apply(self, items: list[bytes]) -> list[object]:
        self.instance += 1
        ra = self.a.apply(self.instance, items)
        rb = self.b.apply(self.instance, items)
        assert ra == rb
        assert self.a.index_entries(self.instance, items) == self.b.index_entries(
            self.instance, items
        )
        return ra

    @rule(
        dues=st.lists(st.floats(0, 200), min_size=1, max_size=3),
        dedup=st.none() | st.sampled_from(["x", "y"]),
        step=st.floats(0, 20),
    )
    def schedule(self, dues: list[float], dedup: str | None, step: float) -> None:
        # Entry times do not go back (the dedup window's FIFO expiry assumes it, as elsewhere)
        self.clock += step
        msgs = [_msg(b"p", dedup if i == 0 else None) for i in range(len(dues))]
        [res] = self._apply([encode_schedule("t", 0, self.clock, dues, msgs)])
        assert isinstance(res, Scheduled)
        for ref, dup, due in zip(res.refs, res.duplicates, dues, strict=True):
            if not dup:
                sid = scheduled_id_of(ref)
                assert sid not in self.due
                self.due[sid] = due
                self.current[sid] = sid
                self.pending.add(sid)

    @rule(data=st.data(), at=st.floats(0, 250))
    def release_some(self, data: st.DataObject, at: float) -> None:
        if not self.due:
            return
        picks = data.draw(st.lists(st.sampled_from(sorted(self.due)), min_size=1, max_size=4))
        stale = data.draw(st.lists(st.booleans(), min_size=len(picks), max_size=len(picks)))
        items = []
        used = []
        for orig, old in zip(picks, stale, strict=True):
            sid = self.old_ids[orig][0] if old and self.old_ids.get(orig) else self.current[orig]
            used.append(sid)
            items.append(encode_release("t", 0, at, [sid], [self.due[orig]], [[b"p", None, {}]]))
        results = self._apply(items)
        for orig, sid, res in zip(picks, used, results, strict=True):
            assert isinstance(res, Released)
            offset = res.offsets[0]
            should = orig in self.pending and sid == self.current[orig] and self.due[orig] <= at
            assert (offset is not None) == should
            if offset is not None:
                assert offset not in self.offsets
                self.offsets.add(offset)
                self.pending.discard(orig)
                self.released[orig] = at

    @rule(data=st.data())
    def roll(self, data: st.DataObject) -> None:
        if not self.due:
            return
        picks = data.draw(st.lists(st.sampled_from(sorted(self.due)), min_size=1, max_size=3))
        picks = list(dict.fromkeys(picks))
        ids = [self.current[o] for o in picks]
        dues = [self.due[o] for o in picks]
        [res] = self._apply([encode_roll("t", 0, ids, dues, [[b"p", None, {}]] * len(ids))])
        assert res == Rolled(tuple(o in self.pending for o in picks))
        for k, orig in enumerate(picks):
            if orig in self.pending:
                self.old_ids.setdefault(orig, []).append(self.current[orig])
                self.current[orig] = make_offset(self.instance, k)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.due:
            return
        orig = data.draw(st.sampled_from(sorted(self.due)))
        [res] = self._apply([encode_cancel(orig, self.due[orig])])  # by the original id
        assert res == Cancelled(orig in self.pending)
        if orig in self.pending:
            self.pending.discard(orig)
            self.cancelled.add(orig)

    @rule()
    def enqueue(self) -> None:
        [res] = self._apply([encode_enqueue("t", 0, self.clock, [_msg(b"e")])])
        assert isinstance(res, Enqueued)
        self.offsets.update(res.offsets)

    @rule()
    def restart_b_from_snapshot(self) -> None:
        self.b = StoreState.restore(self.b.snapshot())

    @invariant()
    def agree(self) -> None:
        assert self.a.snapshot() == self.b.snapshot()
        now_pending = {i for _, i in self.a.schedule.due(math.inf, 1 << 30)}
        assert now_pending == {self.current[o] for o in self.pending}
        for orig in self.pending:
            assert self.a.schedule.current_id(orig) == self.current[orig]
        for orig, at in self.released.items():
            assert at >= self.due[orig]  # never early
            assert orig not in self.cancelled


DelayedStateMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30)
test_delayed_state_machine = DelayedStateMachine.TestCase


def test_roll_moves_a_pending_message_and_its_original_id_still_cancels_it() -> None:
    s = StoreState(0, dedup_window=0.0)
    [r] = s.apply(1, [encode_schedule("t", 0, 1.0, [50.0], [_msg(b"x")])])
    original = scheduled_id_of(r.refs[0])  # type: ignore[union-attr]
    roll = encode_roll("t", 0, [original], [50.0], [[b"x", None, {}]])
    assert s.apply(2, [encode_enqueue("t", 0, 2.0, [_msg(b"e")]), roll]) == [
        Enqueued((make_offset(2, 0),), (False,)),
        Rolled((True,)),
    ]
    assert s.schedule.oldest_id() == make_offset(2, 0)  # the record at instance 1 may go
    assert instance_scheduled([roll])[0][1].payload == b"x"
    assert s.apply(3, [roll]) == [Rolled((False,))]  # a stale roll: no-op
    restored = StoreState.restore(s.snapshot())
    assert restored.schedule.current_id(original) == make_offset(2, 0)
    assert s.apply(4, [encode_cancel(original, 50.0)]) == [Cancelled(True)]
    assert s.schedule.current_id(original) == original  # forgotten once not pending
    assert len(s.schedule) == 0
