"""The lock state machine, example by example (the properties are in test_lock_state_machine)."""

from __future__ import annotations

from typing import Any

import pytest

from phxq.errors import (
    BadArgument,
    LockHeld,
    ProtocolError,
    StaleToken,
    StorageError,
    Unavailable,
    VersionMismatch,
)
from phxq.lock import state as lock_state
from phxq.lock.entries import (
    Acquire,
    Entry,
    EpochStart,
    KvDelete,
    KvPut,
    Release,
    Renew,
    Sweep,
    encode_entry,
)
from phxq.lock.state import LockState, drift_margin, make_token

A = (1, 1)  # first master's epoch; its clock reads around 1000
B = (2, 2)  # second master; its clock reads around 5 (clocks of two machines never agree)


class Log:
    """A LockState fed one entry (or batch) per instance."""

    def __init__(self) -> None:
        self.state = LockState()
        self.instance = 0

    def apply(self, *entries: Entry | bytes) -> list[Any]:
        self.instance += 1
        items = [e if isinstance(e, bytes) else encode_entry(e) for e in entries]
        return self.state.apply(self.instance, items)

    def one(self, entry: Entry | bytes) -> Any:
        return self.apply(entry)[0]


@pytest.fixture
def log() -> Log:
    log = Log()
    assert log.one(EpochStart(A, 1000.0)) is None
    return log


def test_grant_then_held_then_free_after_ttl(log: Log) -> None:
    token = log.one(Acquire(A, 1000.0, "q", "a", 5.0))
    assert token == make_token(2, 0)
    held = log.one(Acquire(A, 1004.9, "q", "b", 5.0))
    assert isinstance(held, LockHeld)
    assert held.data["holder"] == "a"
    assert held.data["expires_in"] == pytest.approx(0.1)
    later = log.one(Acquire(A, 1005.0, "q", "b", 5.0))
    assert later == make_token(4, 0) > token


def test_reacquire_by_owner_extends_and_keeps_the_token(log: Log) -> None:
    token = log.one(Acquire(A, 1000.0, "q", "a", 2.0))
    assert log.one(Acquire(A, 1001.0, "q", "a", 2.0)) == token
    assert isinstance(log.one(Acquire(A, 1002.5, "q", "b", 2.0)), LockHeld)
    info = log.state.lock_info("q", 1002.5)
    assert info is not None and (info.owner, info.token) == ("a", token)
    assert info.expires_in == pytest.approx(0.5)


def test_renew_release_and_their_errors(log: Log) -> None:
    token = log.one(Acquire(A, 1000.0, "q", "a", 2.0))
    assert log.one(Renew(A, 1001.5, "q", "a", token)) == token
    assert isinstance(log.one(Renew(A, 1001.6, "q", "b", token)), LockHeld)
    assert isinstance(log.one(Renew(A, 1001.6, "q", "a", token + 1)), StaleToken)
    assert isinstance(log.one(Release(A, 1001.7, "q", "b", token)), LockHeld)
    assert log.one(Release(A, 1001.8, "q", "a", token)) is True
    assert log.one(Release(A, 1001.9, "q", "a", token)) is False
    assert isinstance(log.one(Renew(A, 1002.0, "q", "a", token)), StaleToken)
    assert isinstance(log.one(Renew(A, 1002.0, "unknown", "a", 1)), StaleToken)
    assert log.state.lock_info("q", 1002.0) is None


def test_renew_after_expiry_is_stale_even_if_nobody_took_it(log: Log) -> None:
    token = log.one(Acquire(A, 1000.0, "q", "a", 1.0))
    assert isinstance(log.one(Renew(A, 1001.0, "q", "a", token)), StaleToken)


def test_tokens_of_one_batch_are_distinct_and_increasing(log: Log) -> None:
    results = log.apply(*(Acquire(A, 1000.0, f"q{i}", "a", 1.0) for i in range(3)))
    assert results == [make_token(2, i) for i in range(3)]


def test_new_master_honours_an_inherited_lease_for_ttl_plus_margin(log: Log) -> None:
    token = log.one(Acquire(A, 1000.0, "q", "a", 4.0))
    # The new master's clock reads 5.0 when it starts: far "before" the grant on A's clock.
    assert log.one(EpochStart(B, 5.0)) is None
    honoured_until = 5.0 + 4.0 + drift_margin(4.0)
    assert isinstance(log.one(Acquire(B, honoured_until - 0.01, "q", "b", 1.0)), LockHeld)
    granted = log.one(Acquire(B, honoured_until, "q", "b", 1.0))
    assert isinstance(granted, int) and granted > token


def test_new_master_with_a_clock_far_ahead_still_waits_the_full_ttl(log: Log) -> None:
    log.one(Acquire(A, 1000.0, "q", "a", 4.0))
    assert log.one(EpochStart(B, 10**6)) is None  # would expire everything if compared raw
    assert isinstance(log.one(Acquire(B, 10**6 + 4.0, "q", "b", 1.0)), LockHeld)


def test_holder_renews_an_inherited_lease(log: Log) -> None:
    token = log.one(Acquire(A, 1000.0, "q", "a", 4.0))
    log.one(EpochStart(B, 5.0))
    assert log.one(Renew(B, 6.0, "q", "a", token)) == token
    info = log.state.lock_info("q", 6.0)
    assert info is not None and info.token == token


def test_a_lease_that_expired_under_the_old_master_is_not_inherited(log: Log) -> None:
    log.one(Acquire(A, 1000.0, "q", "a", 1.0))
    log.one(Sweep(A, 1002.0))  # A's clock passed the lease's expiry (any entry would do)
    log.one(EpochStart(B, 5.0))
    assert isinstance(log.one(Acquire(B, 5.0, "q", "b", 1.0)), int)


def test_entries_of_a_superseded_master_change_nothing(log: Log) -> None:
    log.one(EpochStart(B, 5.0))
    stale = log.one(Acquire(A, 1000.0, "q", "a", 1.0))
    assert isinstance(stale, Unavailable)
    assert log.state.lock_info("q", 5.0) is None
    assert isinstance(log.one(EpochStart(A, 1000.0)), Unavailable)
    assert isinstance(log.one(EpochStart((1, 3), 1000.0)), Unavailable)  # lower ballot
    assert log.state.epoch == B


def test_garbage_items_are_rejected_without_stopping_the_log(log: Log) -> None:
    results = log.apply(b"\xc1garbage", Acquire(A, 1000.0, "q", "a", 1.0))
    assert isinstance(results[0], ProtocolError)
    assert isinstance(results[1], int)


def test_instances_apply_once_and_in_order(log: Log) -> None:
    assert isinstance(log.state.apply(1, [b""])[0], StorageError)
    with pytest.raises(StorageError):
        log.state.apply(log.instance + 2, [])


def test_kv_compare_and_set(log: Log) -> None:
    v1 = log.one(KvPut(A, 1000.0, "k", {"n": 1}, 0))
    assert isinstance(log.one(KvPut(A, 1000.0, "k", {"n": 9}, 0)), VersionMismatch)
    stale = log.one(KvPut(A, 1000.0, "k", {"n": 9}, v1 + 1))
    assert isinstance(stale, VersionMismatch) and stale.data["version"] == v1
    v2 = log.one(KvPut(A, 1000.0, "k", {"n": 2}, v1))
    assert v2 > v1
    assert log.state.kv_get("k", 1000.0) == ({"n": 2}, v2)
    assert isinstance(log.one(KvDelete(A, 1000.0, "k", v1)), VersionMismatch)
    assert log.one(KvDelete(A, 1000.0, "k", v2)) is True
    assert log.one(KvDelete(A, 1000.0, "k")) is False
    assert log.state.kv_get("k", 1000.0) == (None, 0)
    v3 = log.one(KvPut(A, 1000.0, "k", 3))
    assert v3 > v2  # versions keep increasing across a delete


def test_kv_ttl_entries_expire_and_sweeps_report_changes(log: Log) -> None:
    log.one(KvPut(A, 1000.0, "members/a", "up", None, 2.0))
    log.one(KvPut(A, 1000.0, "members/b", "up"))
    log.state.drain_changed()
    assert set(log.state.kv_list("members/", 1001.0)) == {"members/a", "members/b"}
    assert set(log.state.kv_list("members/", 1002.0)) == {"members/b"}
    assert log.state.next_expiry() == 1002.0
    assert log.one(Sweep(A, 1002.0)) == 1
    assert log.state.drain_changed() == ["members/a"]
    assert log.state.next_expiry() is None


def test_request_ids_answer_a_retry_with_the_first_result(log: Log) -> None:
    first = log.one(KvPut(A, 1000.0, "k", 1, 0, None, b"r1"))
    again = log.one(KvPut(A, 1001.0, "k", 1, 0, None, b"r1"))
    assert again == first
    assert log.state.kv_get("k", 1001.0) == (1, first)
    token = log.one(Acquire(A, 1000.0, "q", "a", 5.0))
    assert log.one(Release(A, 1001.0, "q", "a", token, b"r2")) is True
    log.one(EpochStart(B, 5.0))  # the retry may reach another master
    assert log.one(Release(B, 6.0, "q", "a", token, b"r2")) is True


def test_limits_are_enforced_at_apply(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_state, "MAX_LOCKS", 1)
    monkeypatch.setattr(lock_state, "MAX_KV_BYTES", 20)
    assert isinstance(log.one(Acquire(A, 1000.0, "q1", "a", 1.0)), int)
    assert isinstance(log.one(Acquire(A, 1000.0, "q2", "a", 1.0)), BadArgument)
    assert isinstance(log.one(KvPut(A, 1000.0, "k", "x" * 30)), BadArgument)
    assert log.state.kv_get("k", 1000.0) == (None, 0)


def test_snapshot_restores_everything_apply_depends_on(log: Log) -> None:
    token = log.one(Acquire(A, 1000.0, "q", "a", 5.0))
    log.one(KvPut(A, 1000.0, "members/a", {"load": [1, 2]}, None, 3.0, b"r1"))
    log.one(KvPut(A, 1000.0, "k", b"\x00", 0, None, b"r2"))
    failed = log.one(KvPut(A, 1000.0, "k", 1, 0, None, b"r3"))
    assert isinstance(failed, VersionMismatch)
    copy = Log()
    copy.state = LockState.restore(log.state.snapshot())
    copy.instance = log.instance
    assert copy.state.snapshot() == log.state.snapshot()
    for replica in (log, copy):
        assert isinstance(replica.one(Acquire(A, 1001.0, "q", "b", 1.0)), LockHeld)
        assert replica.one(Renew(A, 1001.0, "q", "a", token)) == token
        again = replica.one(KvPut(A, 1001.0, "k", 1, 0, None, b"r3"))  # a retried request
        assert isinstance(again, VersionMismatch) and again.data == failed.data
        assert replica.state.next_expiry() == 1003.0
    assert copy.state.snapshot() == log.state.snapshot()


@pytest.mark.parametrize("data", [b"", b"\x93\x01\x02\x03", b"garbage", b"\x98" + b"\xc0" * 8])
def test_a_malformed_snapshot_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        LockState.restore(data)
