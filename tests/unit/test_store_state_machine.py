"""Stateful property test of the store state machine (Hypothesis RuleBasedStateMachine).

Two replicas apply the same random log (enqueues with dedup ids, commits with random tokens,
replays, garbage, no-ops); one of them is now and then replaced by a restore of its own
snapshot. After every instance:

- both replicas gave equal results and have equal snapshots;
- a commit is rejected as stale exactly when its token is below the highest accepted token;
- a cursor never moves backwards except by a (new) replay, and tokens never go down;
- dedup answers match a simple model (monotonic entry times), and the queue index lists
  exactly the stored (non-duplicate) messages.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from phxq.errors import StaleToken
from phxq.routing import make_offset
from phxq.store.entries import CommitEntry, EnqueueEntry, Message, ReplayEntry, encode_entry
from phxq.store.state import Committed, Enqueued, Rejected, StoreState

WINDOW = 10.0
GROUPS = ("g1", "g2")
QUEUES = (0, 1)
DEDUP_IDS = ("a", "b", "c", None, None)

Key = tuple[str, str, int]


class StoreStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.a = StoreState(3, dedup_window=WINDOW)
        self.b = StoreState(3, dedup_window=WINDOW)
        self.instance = 0
        self.now = 1000.0
        self.pending: list[tuple[bytes, Any]] = []  # (item, entry or None)
        self.stored: dict[int, list[int]] = {q: [] for q in QUEUES}  # offsets in the queue
        self.originals: dict[str, tuple[int, float]] = {}  # dedup id -> (offset, enqueued_at)
        self.cursors: dict[Key, tuple[int, int]] = {}  # model: (offset, highest token)
        self.replay_ids: set[str] = set()

    # -------------------------------------------------------------------- building items

    @rule(
        queue=st.sampled_from(QUEUES),
        dedup_ids=st.lists(st.sampled_from(DEDUP_IDS), min_size=1, max_size=3),
        advance=st.sampled_from([0.0, 1.0, WINDOW, WINDOW + 0.5]),
    )
    def enqueue(self, queue: int, dedup_ids: list[str | None], advance: float) -> None:
        self.now += advance
        messages = tuple(Message(b"x", None, {}, d) for d in dedup_ids)
        entry = EnqueueEntry("t", queue, messages, self.now)
        self.pending.append((encode_entry(entry), entry))

    @rule(
        group=st.sampled_from(GROUPS),
        queue=st.sampled_from(QUEUES),
        pick=st.integers(0, 50),
        token=st.integers(0, 6),
    )
    def commit(self, group: str, queue: int, pick: int, token: int) -> None:
        known = self.stored[queue]
        offset = known[pick % len(known)] if known and pick < 45 else pick * 7
        entry = CommitEntry(group, "t", queue, offset, token)
        self.pending.append((encode_entry(entry), entry))

    @rule(
        group=st.sampled_from(GROUPS),
        queue=st.sampled_from(QUEUES),
        offset=st.integers(0, 1 << 24),
        replay_id=st.sampled_from(["r1", "r2", "r3", "r4"]),
    )
    def replay(self, group: str, queue: int, offset: int, replay_id: str) -> None:
        entry = ReplayEntry(group, "t", queue, offset, replay_id)
        self.pending.append((encode_entry(entry), entry))

    @rule(junk=st.binary(max_size=8))
    def garbage(self, junk: bytes) -> None:
        self.pending.append((b"\xc1" + junk, None))

    @precondition(lambda self: self.instance > 0)
    @rule()
    def replace_b_by_a_restore_of_its_snapshot(self) -> None:
        self.b = StoreState.restore(self.b.snapshot())

    # ---------------------------------------------------------------- applying + checking

    @rule()
    def apply_instance(self) -> None:
        self.instance += 1
        items = [item for item, _ in self.pending]
        results_a = self.a.apply(self.instance, items)
        results_b = self.b.apply(self.instance, items)
        assert results_a == results_b
        assert len(results_a) == len(items)
        expected_index: list[tuple[tuple[str, int], int, float]] = []
        next_index = 0
        for (_, entry), result in zip(self.pending, results_a, strict=True):
            if isinstance(entry, EnqueueEntry):
                next_index = self._check_enqueue(entry, result, next_index, expected_index)
            elif isinstance(entry, CommitEntry):
                self._check_commit(entry, result)
            elif isinstance(entry, ReplayEntry):
                self._check_replay(entry, result)
            else:
                assert isinstance(result, Rejected)
        assert self.a.index_entries(self.instance, items) == expected_index
        assert self.b.index_entries(self.instance, items) == expected_index
        self.pending = []

    def _check_enqueue(
        self,
        entry: EnqueueEntry,
        result: object,
        next_index: int,
        expected_index: list[tuple[tuple[str, int], int, float]],
    ) -> int:
        assert isinstance(result, Enqueued)
        for message, offset, duplicate in zip(
            entry.messages, result.offsets, result.duplicates, strict=True
        ):
            did = message.dedup_id
            original = self.originals.get(did) if did is not None else None
            if original is not None and entry.enqueued_at - original[1] <= WINDOW:
                assert duplicate and offset == original[0]
            else:
                assert not duplicate and offset == make_offset(self.instance, next_index)
                expected_index.append((("t", entry.queue), next_index, entry.enqueued_at))
                self.stored[entry.queue].append(offset)
                if did is not None:
                    self.originals[did] = (offset, entry.enqueued_at)
            next_index += 1
        return next_index

    def _check_commit(self, entry: CommitEntry, result: object) -> None:
        key = (entry.consumer_group, entry.topic, entry.queue)
        before = self.cursors.get(key)
        if before is not None and entry.token < before[1]:
            assert isinstance(result, Rejected) and isinstance(result.error, StaleToken)
            return
        if isinstance(result, Committed):
            assert before is None or entry.offset >= before[0], "a commit moved a cursor back"
            stored = self.stored[entry.queue]
            assert (stored and entry.offset <= stored[-1]) or (
                before is not None and entry.offset == before[0]
            ), "a commit moved a cursor past the end of its queue"
            self.cursors[key] = (entry.offset, entry.token)
        else:
            assert isinstance(result, Rejected) and not isinstance(result.error, StaleToken)

    def _check_replay(self, entry: ReplayEntry, result: object) -> None:
        key = (entry.consumer_group, entry.topic, entry.queue)
        if entry.replay_id in self.replay_ids:
            assert isinstance(result, Committed)
            return
        self.replay_ids.add(entry.replay_id)
        assert result == Committed(entry.offset)
        before = self.cursors.get(key)
        self.cursors[key] = (entry.offset, 0 if before is None else before[1])

    @invariant()
    def replicas_are_identical_and_match_the_model(self) -> None:
        assert self.a.snapshot() == self.b.snapshot()
        assert self.a.cursors() == self.cursors
        assert self.a.applied_up_to == self.instance
        assert dict(self.a.stats) == {("t", q): len(o) for q, o in self.stored.items() if o}


StoreStateMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
test_store_state_machine = StoreStateMachine.TestCase
