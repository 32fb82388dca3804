"""The store state machine: ordinals, dedup, fencing, replay, indexing, snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phxq.errors import BadArgument, ProtocolError, StaleToken, StorageError, VersionMismatch
from phxq.routing import make_offset
from phxq.store import apply_results
from phxq.store.entries import CommitEntry, EnqueueEntry, Message, ReplayEntry, encode_entry
from phxq.store.schedule_entries import encode_schedule
from phxq.store.state import Committed, Enqueued, Rejected, StoreState

WINDOW = 300.0


def enq(topic: str, queue: int, *dedup_ids: str | None, at: float = 1000.0) -> bytes:
    """An enqueue item with one message per dedup id (None: no dedup id)."""
    messages = tuple(Message(f"m{i}".encode(), None, {}, d) for i, d in enumerate(dedup_ids))
    return encode_entry(EnqueueEntry(topic, queue, messages, at))


def commit(offset: int, token: int, group: str = "g", topic: str = "t", queue: int = 0) -> bytes:
    return encode_entry(CommitEntry(group, topic, queue, offset, token))


def replay(
    offset: int, replay_id: str, group: str = "g", topic: str = "t", queue: int = 0
) -> bytes:
    return encode_entry(ReplayEntry(group, topic, queue, offset, replay_id))


class Log:
    """Applies instances 1, 2, ... to a state and remembers them, like a replica's log."""

    def __init__(self, state: StoreState | None = None) -> None:
        self.state = state or StoreState(0, dedup_window=WINDOW)
        self.instances: list[list[bytes]] = []

    def apply(self, *items: bytes) -> list[object]:
        self.instances.append(list(items))
        return list(self.state.apply(len(self.instances), list(items)))


def error_of(result: object) -> Exception:
    assert isinstance(result, Rejected), result
    return result.error


# ------------------------------------------------------------------------- ordinals, index


def test_messages_of_an_instance_get_consecutive_indexes_across_its_entries() -> None:
    log = Log()
    results = log.apply(enq("t", 0, None, None), enq("u", 1, None))
    assert results == [
        Enqueued((make_offset(1, 0), make_offset(1, 1)), (False, False)),
        Enqueued((make_offset(1, 2),), (False,)),
    ]
    assert log.state.index_entries(1, log.instances[0]) == [
        (("t", 0), 0, 1000.0),
        (("t", 0), 1, 1000.0),
        (("u", 1), 2, 1000.0),
    ]


def test_a_noop_instance_is_applied_and_has_no_results() -> None:
    log = Log()
    assert log.apply() == []
    assert log.state.applied_up_to == 1
    assert log.state.index_entries(1, []) == []


def test_an_undecodable_item_is_rejected_without_stopping_the_others() -> None:
    log = Log()
    results = log.apply(b"\xc1junk", enq("t", 0, None))
    assert isinstance(error_of(results[0]), ProtocolError)
    assert results[1] == Enqueued((make_offset(1, 0),), (False,))
    assert log.state.stats == {("t", 0): 1}


def test_an_entry_that_would_overflow_the_instance_is_rejected_but_keeps_its_ordinals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apply_results, "MAX_MESSAGES_PER_INSTANCE", 3)
    log = Log()
    results = log.apply(enq("t", 0, None, None), enq("t", 0, "a", "b"), enq("t", 0, None))
    assert results[0] == Enqueued((make_offset(1, 0), make_offset(1, 1)), (False, False))
    assert isinstance(error_of(results[1]), BadArgument)
    assert isinstance(error_of(results[2]), BadArgument)  # its index would be 4
    assert [i for _, i, _ in log.state.index_entries(1, log.instances[0])] == [0, 1]
    assert log.state.stats == {("t", 0): 2}
    # the rejected entry recorded no dedup id
    assert log.apply(enq("t", 0, "a")) == [Enqueued((make_offset(2, 0),), (False,))]


def test_scheduled_messages_overflow_their_own_ordinal_space_not_the_readable_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apply_results, "MAX_MESSAGES_PER_INSTANCE", 3)
    wire = [[b"s", None, {}, None]] * 2
    schedule = encode_schedule("t", 0, 1000.0, [5000.0, 5000.0], wire)
    log = Log()
    results = log.apply(schedule, schedule, enq("t", 0, None, None, None))
    assert not isinstance(results[0], Rejected)
    error = error_of(results[1])
    assert isinstance(error, BadArgument) and "scheduled messages" in str(error)
    assert results[2] == Enqueued(tuple(make_offset(1, i) for i in range(3)), (False,) * 3)
    assert len(log.state.schedule) == 2  # the rejected entry scheduled nothing


def test_instances_must_be_applied_in_order_without_gaps() -> None:
    state = StoreState(0, dedup_window=WINDOW)
    state.apply(1, [])
    with pytest.raises(StorageError):
        state.apply(3, [])


def test_reapplying_an_applied_instance_changes_nothing() -> None:
    log = Log()
    log.apply(enq("t", 0, "a"), commit(make_offset(1, 0), 5))
    before = log.state.snapshot()
    again = log.state.apply(1, log.instances[0])
    assert [type(error_of(r)) for r in again] == [StorageError, StorageError]
    assert log.state.snapshot() == before


# ---------------------------------------------------------------------------------- dedup


def test_a_retry_within_the_window_answers_the_original_offset_and_is_not_stored() -> None:
    log = Log()
    log.apply(enq("t", 0, "order-1", at=1000.0))
    retried = log.apply(enq("t", 0, "order-2", "order-1", at=1000.0 + WINDOW))
    assert retried == [Enqueued((make_offset(2, 0), make_offset(1, 0)), (False, True))]
    assert log.state.index_entries(2, log.instances[1]) == [(("t", 0), 0, 1000.0 + WINDOW)]
    assert log.state.stats == {("t", 0): 2}
    assert log.state.end_offset("t", 0) == make_offset(2, 0)


def test_a_retry_after_the_window_is_stored_again_and_becomes_the_new_original() -> None:
    log = Log()
    log.apply(enq("t", 0, "x", at=1000.0))
    late = log.apply(enq("t", 0, "x", at=1000.0 + WINDOW + 0.001))
    assert late == [Enqueued((make_offset(2, 0),), (False,))]
    again = log.apply(enq("t", 0, "x", at=1000.0 + WINDOW + 1))
    assert again == [Enqueued((make_offset(2, 0),), (True,))]


def test_duplicates_inside_one_entry_point_at_the_first_copy() -> None:
    log = Log()
    assert log.apply(enq("t", 0, "x", "x")) == [
        Enqueued((make_offset(1, 0), make_offset(1, 0)), (False, True))
    ]


def test_a_zero_window_disables_dedup() -> None:
    log = Log(StoreState(0, dedup_window=0))
    assert log.apply(enq("t", 0, "x", "x")) == [
        Enqueued((make_offset(1, 0), make_offset(1, 1)), (False, False))
    ]


def test_dedup_ids_are_scoped_per_topic() -> None:
    log = Log()
    log.apply(enq("t", 0, "x"))
    assert log.apply(enq("other", 0, "x")) == [Enqueued((make_offset(2, 0),), (False,))]


def test_the_window_is_measured_with_entry_times_so_a_stepped_back_clock_still_dedups() -> None:
    log = Log()
    log.apply(enq("t", 0, "x", at=1000.0))
    assert log.apply(enq("t", 0, "x", at=400.0)) == [Enqueued((make_offset(1, 0),), (True,))]


def test_window_entries_expire_by_the_newest_entry_time_not_by_a_local_clock() -> None:
    log = Log()
    log.apply(enq("t", 0, "x", at=1000.0))
    log.apply(enq("t", 0, None, at=1000.0 + WINDOW + 1))  # pushes "x" out of the window
    # even a (skewed) retry stamped close to the original is now stored again
    assert log.apply(enq("t", 0, "x", at=1001.0)) == [Enqueued((make_offset(3, 0),), (False,))]


# -------------------------------------------------------------------------- cursors, fencing


def _queue_with_messages(log: Log, count: int) -> list[int]:
    result = log.apply(enq("t", 0, *([None] * count)))[0]
    assert isinstance(result, Enqueued)
    return list(result.offsets)


def test_a_commit_sets_the_cursor_and_records_its_token() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 3)
    assert log.state.cursor("g", "t", 0) is None
    assert log.apply(commit(offsets[1], 7)) == [Committed(offsets[1])]
    assert log.state.cursor("g", "t", 0) == offsets[1]
    assert log.state.cursors() == {("g", "t", 0): (offsets[1], 7)}


def test_a_commit_with_an_older_token_is_rejected_as_stale() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 3)
    log.apply(commit(offsets[0], 7))
    error = error_of(log.apply(commit(offsets[2], 6))[0])
    assert isinstance(error, StaleToken)
    assert error.data == {"token": 6, "current": 7}
    assert log.state.cursor("g", "t", 0) == offsets[0]


def test_commits_with_the_same_or_a_newer_token_are_accepted() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 3)
    assert log.apply(commit(offsets[0], 7), commit(offsets[1], 7), commit(offsets[2], 9)) == [
        Committed(offsets[0]),
        Committed(offsets[1]),
        Committed(offsets[2]),
    ]
    assert log.state.cursors()[("g", "t", 0)] == (offsets[2], 9)


def test_a_commit_may_not_move_the_cursor_backwards() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 3)
    log.apply(commit(offsets[2], 1))
    assert isinstance(error_of(log.apply(commit(offsets[1], 2))[0]), BadArgument)
    assert log.state.cursors()[("g", "t", 0)] == (offsets[2], 1)  # token not raised either
    assert log.apply(commit(offsets[2], 2)) == [Committed(offsets[2])]  # same spot: fine


def test_a_commit_may_not_move_the_cursor_past_the_last_message() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 1)
    assert isinstance(error_of(log.apply(commit(offsets[0] + 1, 1))[0]), BadArgument)
    assert isinstance(error_of(log.apply(commit(0, 1, queue=5))[0]), BadArgument)


def test_cursors_are_kept_per_consumer_group_topic_and_queue() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 2)
    log.apply(commit(offsets[1], 9, group="a"), commit(offsets[0], 1, group="b"))
    assert log.state.cursor("a", "t", 0) == offsets[1]
    assert log.state.cursor("b", "t", 0) == offsets[0]


def test_a_compare_and_set_commit_applies_only_over_the_expected_cursor() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 3)

    def cas(offset: int, expect: int | None) -> bytes:
        return encode_entry(CommitEntry("g", "t", 0, offset, 1, check=True, expect=expect))

    assert log.apply(cas(offsets[0], None)) == [Committed(offsets[0])]
    error = error_of(log.apply(cas(offsets[1], None))[0])
    assert isinstance(error, VersionMismatch)
    assert error.data == {"cursor": offsets[0]}
    assert log.apply(cas(offsets[1], offsets[0])) == [Committed(offsets[1])]
    # an owner that has not seen a replay cannot overwrite it
    log.apply(replay(offsets[0], "r"))
    assert isinstance(error_of(log.apply(cas(offsets[2], offsets[1]))[0]), VersionMismatch)
    assert log.state.cursor("g", "t", 0) == offsets[0]
    assert log.apply(cas(offsets[2], offsets[0])) == [Committed(offsets[2])]


# ----------------------------------------------------------------------------------- replay


def test_a_replay_moves_the_cursor_back_once_and_keeps_the_token() -> None:
    log = Log()
    offsets = _queue_with_messages(log, 3)
    log.apply(commit(offsets[2], 5))
    assert log.apply(replay(offsets[0], "r1")) == [Committed(offsets[0])]
    assert log.state.cursors()[("g", "t", 0)] == (offsets[0], 5)
    assert isinstance(error_of(log.apply(commit(offsets[1], 4))[0]), StaleToken)
    log.apply(commit(offsets[2], 5))
    # the same replay applied again (a retried admin command) is a no-op with the same answer
    assert log.apply(replay(offsets[0], "r1")) == [Committed(offsets[0])]
    assert log.state.cursor("g", "t", 0) == offsets[2]


def test_a_replay_may_set_a_cursor_that_was_never_committed() -> None:
    log = Log()
    assert log.apply(replay(12345, "r")) == [Committed(12345)]
    assert log.state.cursors() == {("g", "t", 0): (12345, 0)}


# ----------------------------------------------------------------- index rebuild, snapshots


def _busy_log() -> Log:
    log = Log()
    log.apply(enq("t", 0, "a", None), enq("t", 1, "b"))
    log.apply(enq("t", 0, "a", "c"), b"junk", commit(make_offset(1, 1), 3))
    log.apply()
    log.apply(enq("t", 1, "b", "d", at=1100.0), replay(0, "r"))
    return log


def test_index_entries_of_an_old_instance_agree_with_what_apply_recorded() -> None:
    live = _busy_log()
    recorded = []
    shadow = Log()
    for items in live.instances:
        shadow.apply(*items)
        recorded.append(shadow.state.index_entries(len(shadow.instances), items))
    for instance, items in enumerate(live.instances, start=1):
        assert live.state.index_entries(instance, items) == recorded[instance - 1]
    assert [i for _, i, _ in recorded[1]] == [1]  # "a" was a duplicate, "c" is new


def test_recovery_from_a_snapshot_and_an_overlapping_log_rebuilds_the_same_index() -> None:
    live = _busy_log()
    snapshot_at_2 = Log()
    for items in live.instances[:2]:
        snapshot_at_2.apply(*items)
    saved = snapshot_at_2.state.snapshot()
    expected = [live.state.index_entries(i, it) for i, it in enumerate(live.instances, 1)]

    recovered = StoreState.restore(saved)
    rebuilt = []
    for instance, items in enumerate(live.instances, start=1):  # the runtime's indexer
        recovered.apply(instance, items)
        rebuilt.append(recovered.index_entries(instance, items))
    assert rebuilt == expected
    assert recovered.snapshot() == live.state.snapshot()


def test_forgotten_instances_can_no_longer_be_indexed() -> None:
    live = _busy_log()
    live.state.forget_below(3)
    with pytest.raises(StorageError):
        live.state.index_entries(2, live.instances[1])
    assert live.state.index_entries(3, []) == []
    with pytest.raises(StorageError):
        live.state.index_entries(99, [])


def test_a_restored_state_makes_the_same_decisions() -> None:
    live = _busy_log()
    copy = StoreState.restore(live.state.snapshot())
    more = [enq("t", 0, "a", "c", at=1200.0), commit(make_offset(1, 0), 2), replay(7, "r")]
    assert copy.apply(5, more) == live.state.apply(5, more)
    assert copy.snapshot() == live.state.snapshot()
    assert copy.stats == live.state.stats


@given(st.binary(max_size=300))
def test_a_malformed_snapshot_raises_protocol_error(data: bytes) -> None:
    try:
        StoreState.restore(data)
    except ProtocolError:
        return


@given(st.data())
def test_a_corrupted_snapshot_restores_or_raises_protocol_error(data: st.DataObject) -> None:
    raw = bytearray(_busy_log().state.snapshot())
    raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        StoreState.restore(bytes(raw))
    except ProtocolError:
        return
