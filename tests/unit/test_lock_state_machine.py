"""Stateful property test of the lock state machine (Hypothesis RuleBasedStateMachine).

The test keeps a *real* timeline ``T`` and a succession of masters, each with its own
monotonic clock (``T + offset``, offsets arbitrary: clocks of different machines never agree).
Operations are proposed by the current master stamped with its clock, batched into instances,
and applied to two replicas. Checked after every instance:

- **safety, from the callers' side only**: a caller that was granted or renewed a lease at real
  time ``T`` with ``ttl`` believes it holds the lock until ``T + ttl``; no two owners ever
  believe they hold the same lock at the same real time ("two holders");
- tokens never go backwards, and a token is never given to two owners;
- the answers match a reference model written in real time (free when expired, inherited leases
  honoured for ttl + margin from the new master's start, CAS semantics, sweeps, request ids);
- a CAS counter incremented by racing clients never loses an increment;
- both replicas give the same answers and the same reads (determinism), also when one of
  them is now and then rebuilt from its own snapshot;
- entries of a superseded master, stale epoch starts and garbage change nothing.

Planted bugs (a state that forgets to check expiry, one that keeps an old master's times across
a master change) must be caught by the safety check alone: see the tests at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from phxq.errors import (
    LockHeld,
    PhxqError,
    ProtocolError,
    StaleToken,
    Unavailable,
    VersionMismatch,
)
from phxq.lock.entries import (
    Acquire,
    EpochStart,
    KvDelete,
    KvPut,
    Release,
    Renew,
    Sweep,
    decode_entry,
    encode_entry,
)
from phxq.lock.state import LockState, _Lease, drift_margin, make_token

NAMES = ("x", "y")
OWNERS = ("a", "b", "c")
TTLS = (1.0, 2.5, 4.0)
ADVANCES = (0.25, 0.5, 1.0, 2.0, 4.5)
KEYS = ("k1", "k2")
OFFSETS = st.integers(-400, 400).map(lambda i: i * 1.25)  # exact binary fractions


@dataclass
class ModelLease:
    owner: str
    token: int
    ttl: float
    expires: float  # real time at which the service must consider it free


@dataclass
class ModelKv:
    value: Any
    version: int
    ttl: float | None
    expires: float | None


def _kind(result: Any) -> Any:
    """A comparable form of an apply result."""
    if isinstance(result, PhxqError):
        return (type(result).__name__, result.message)
    return result


class LockMachine(RuleBasedStateMachine):
    state_cls: type[LockState] = LockState
    check_model = True

    def __init__(self) -> None:
        super().__init__()
        self.a = self.state_cls()
        self.b = self.state_cls()
        self.T = 0.0
        self.instance = 0
        self.round = 0
        self.epoch: tuple[int, int] = (0, 0)
        self.offset = 0.0
        self.old_epochs: list[tuple[tuple[int, int], float]] = []
        self.pending: list[tuple[bytes, Callable[[Any, int], None]]] = []
        self.pending_in_epoch = False
        self.last_real = 0.0  # real time of the latest entry applied in the current epoch
        # reference model (real time)
        self.leases: dict[str, ModelLease] = {}
        self.kv: dict[str, ModelKv] = {}
        # callers' beliefs: name -> owner -> (token, believed until)
        self.beliefs: dict[str, dict[str, tuple[int, float]]] = {n: {} for n in NAMES}
        self.ttl_used: dict[tuple[str, str], float] = {}
        self.my_token: dict[tuple[str, str], int] = {}
        self.max_token: dict[str, tuple[int, str]] = {}
        self.max_version: dict[str, int] = {}
        self.counter_seen: dict[str, tuple[int, int]] = {}
        self.counter_commits = 0
        self.last_rid_op: tuple[Callable[[], bytes], Any] | None = None
        self.rids = 0

    # ------------------------------------------------------------------------ plumbing

    def clock(self) -> float:
        return self.T + self.offset

    def next_rid(self) -> bytes:
        self.rids += 1
        return self.rids.to_bytes(4, "big")

    def propose(self, entry: Any, check: Callable[[Any, int], None]) -> None:
        self.pending.append((encode_entry(entry), check))
        self.pending_in_epoch = True

    @rule()
    def flush(self) -> None:
        if not self.pending:
            return
        self.instance += 1
        items = [item for item, _ in self.pending]
        checks = [check for _, check in self.pending]
        self.pending = []
        ra = self.a.apply(self.instance, items)
        rb = self.b.apply(self.instance, items)
        assert [_kind(r) for r in ra] == [_kind(r) for r in rb], "replicas disagree"
        if self.pending_in_epoch:
            self.last_real = self.T
        self.pending_in_epoch = False
        for index, (check, result) in enumerate(zip(checks, ra, strict=True)):
            check(result, make_token(self.instance, index))

    def expect(self, result: Any, expected: Any) -> None:
        if not self.check_model:
            return
        if isinstance(expected, type):
            assert isinstance(result, expected), f"expected {expected.__name__}, got {result!r}"
        else:
            assert _kind(result) == _kind(expected), f"expected {expected!r}, got {result!r}"

    # ----------------------------------------------------------------- time and masters

    @initialize(offset=OFFSETS)
    def first_master(self, offset: float) -> None:
        self._new_master(offset)

    @rule(dt=st.sampled_from(ADVANCES))
    def advance(self, dt: float) -> None:
        self.flush()
        self.T += dt

    @rule(offset=OFFSETS, node=st.integers(1, 3))
    def new_master(self, offset: float, node: int) -> None:
        self.flush()
        self.old_epochs.append((self.epoch, self.offset))
        self._new_master(offset, node)

    def _new_master(self, offset: float, node: int = 1) -> None:
        self.round += 1
        self.epoch, self.offset = (self.round, node), offset
        at = self.clock()

        def check(result: Any, token: int) -> None:
            assert result is None, f"epoch start refused: {result!r}"
            for name, lease in list(self.leases.items()):
                if lease.expires <= self.last_real:
                    del self.leases[name]
                else:
                    lease.expires = self.T + lease.ttl + drift_margin(lease.ttl)
            for key, kv in list(self.kv.items()):
                if kv.ttl is None or kv.expires is None:
                    continue
                if kv.expires <= self.last_real:
                    del self.kv[key]
                else:
                    kv.expires = self.T + kv.ttl + drift_margin(kv.ttl)

        self.pending.append((encode_entry(EpochStart(self.epoch, at)), check))
        self.flush()
        self.last_real = self.T

    @precondition(lambda self: bool(self.old_epochs))
    @rule(data=st.data(), name=st.sampled_from(NAMES), owner=st.sampled_from(OWNERS))
    def superseded_master_proposes(self, data: st.DataObject, name: str, owner: str) -> None:
        epoch, offset = data.draw(st.sampled_from(self.old_epochs))
        at = self.T + offset + 1000.0  # whatever its clock says, it must not matter

        def check(result: Any, token: int) -> None:
            assert isinstance(result, Unavailable), f"stale entry applied: {result!r}"

        self.pending.append((encode_entry(Acquire(epoch, at, name, owner, 1.0)), check))
        self.pending.append((encode_entry(EpochStart(epoch, at)), check))

    @rule(data=st.binary(max_size=40))
    def garbage(self, data: bytes) -> None:
        try:
            decode_entry(data)
        except ProtocolError:
            pass
        else:
            assume(False)

        def check(result: Any, token: int) -> None:
            assert isinstance(result, ProtocolError), f"garbage applied: {result!r}"

        self.pending.append((data, check))

    # ---------------------------------------------------------------------------- locks

    def _live(self, name: str) -> ModelLease | None:
        lease = self.leases.get(name)
        return lease if lease is not None and lease.expires > self.T else None

    def _believers(self, name: str, but: str) -> list[str]:
        return [o for o, (_, until) in self.beliefs[name].items() if o != but and until > self.T]

    def _granted(self, name: str, owner: str, token: int, ttl: float) -> None:
        others = self._believers(name, owner)
        assert not others, f"unsafe: two holders of {name!r} at T={self.T}: {owner} and {others}"
        mine = self.beliefs[name].get(owner)
        if mine is not None and mine[1] > self.T:
            assert mine[0] == token, f"unsafe: {owner}'s live lease of {name!r} got a new token"
        top = self.max_token.get(name)
        if top is not None:
            assert token >= top[0], f"token of {name!r} went backwards: {token} < {top[0]}"
            assert token > top[0] or top[1] == owner, f"token {token} given to two owners"
        self.max_token[name] = (token, owner)
        until = self.T + ttl
        if mine is not None and mine[0] == token:
            until = max(until, mine[1])
        self.beliefs[name][owner] = (token, until)
        self.my_token[(name, owner)] = token

    @rule(name=st.sampled_from(NAMES), owner=st.sampled_from(OWNERS), ttl=st.sampled_from(TTLS))
    def acquire(self, name: str, owner: str, ttl: float) -> None:
        def check(result: Any, new_token: int) -> None:
            lease = self._live(name)
            if lease is not None and lease.owner == owner:
                lease.ttl = max(lease.ttl, ttl)
                lease.expires = max(lease.expires, self.T + ttl)
                expected: Any = lease.token
            elif lease is not None:
                expected = LockHeld
            else:
                self.leases[name] = ModelLease(owner, new_token, ttl, self.T + ttl)
                expected = new_token
            self.expect(result, expected)
            if isinstance(result, int):
                self.ttl_used[(name, owner)] = ttl
                self._granted(name, owner, result, ttl)
            else:
                assert isinstance(result, LockHeld), result
                assert result.data["holder"] != owner

        self.propose(Acquire(self.epoch, self.clock(), name, owner, ttl), check)

    def _holder_check(self, name: str, owner: str, token: int) -> Any:
        lease = self._live(name)
        if lease is None:
            return StaleToken
        if lease.owner != owner:
            return LockHeld
        if lease.token != token:
            return StaleToken
        return lease

    @rule(name=st.sampled_from(NAMES), owner=st.sampled_from(OWNERS), stale=st.booleans())
    def renew(self, name: str, owner: str, stale: bool) -> None:
        token = self.my_token.get((name, owner), 1)
        if stale:
            token = max(0, token - 1)

        def check(result: Any, new_token: int) -> None:
            lease = self._holder_check(name, owner, token)
            if isinstance(lease, ModelLease):
                lease.expires = max(lease.expires, self.T + lease.ttl)
                self.expect(result, lease.token)
            else:
                self.expect(result, lease)
            if isinstance(result, int):
                self._granted(name, owner, result, self.ttl_used.get((name, owner), min(TTLS)))
            else:
                assert isinstance(result, (LockHeld, StaleToken)), result
                self.beliefs[name].pop(owner, None)

        self.propose(Renew(self.epoch, self.clock(), name, owner, token), check)

    @rule(name=st.sampled_from(NAMES), owner=st.sampled_from(OWNERS))
    def release(self, name: str, owner: str) -> None:
        token = self.my_token.get((name, owner), 1)
        rid = self.next_rid()

        def build() -> bytes:
            return encode_entry(Release(self.epoch, self.clock(), name, owner, token, rid))

        def check(result: Any, new_token: int) -> None:
            expected: Any
            if self._live(name) is None:
                self.leases.pop(name, None)
                expected = False
            else:
                lease = self._holder_check(name, owner, token)
                if isinstance(lease, ModelLease):
                    del self.leases[name]
                    expected = True
                else:
                    expected = lease
            self.expect(result, expected)
            if result is not False or name not in self.beliefs:
                self.beliefs[name].pop(owner, None)
            else:
                believed = self.beliefs[name].pop(owner, None)
                assert believed is None or believed[1] <= self.T, (
                    "unsafe: the service forgot a lease its holder still believes in"
                )
            self.last_rid_op = (build, result)

        self.pending.append((build(), check))
        self.pending_in_epoch = True

    @rule()
    def sweep(self) -> None:
        def check(result: Any, new_token: int) -> None:
            expired = [n for n, lease in self.leases.items() if lease.expires <= self.T]
            for n in expired:
                del self.leases[n]
            gone = [
                k for k, kv in self.kv.items() if kv.expires is not None and kv.expires <= self.T
            ]
            for k in gone:
                del self.kv[k]
            self.expect(result, len(expired) + len(gone))

        self.propose(Sweep(self.epoch, self.clock()), check)

    @rule(name=st.sampled_from(NAMES))
    def get(self, name: str) -> None:
        self.flush()
        info = self.a.lock_info(name, self.clock())
        assert info == self.b.lock_info(name, self.clock())
        lease = self._live(name)
        if self.check_model:
            assert (info is None) == (lease is None), f"get({name!r}) = {info}, model {lease}"
            if info is not None and lease is not None:
                assert (info.owner, info.token) == (lease.owner, lease.token)
                assert info.expires_in == lease.expires - self.T

    # ------------------------------------------------------------------------------- KV

    def _live_kv(self, key: str) -> ModelKv | None:
        kv = self.kv.get(key)
        if kv is None or (kv.expires is not None and kv.expires <= self.T):
            return None
        return kv

    def _cas(self, key: str, expect: int | None) -> VersionMismatch | int:
        kv = self._live_kv(key)
        have = 0 if kv is None else kv.version
        if expect is not None and expect != have:
            return VersionMismatch("", {"version": have})
        return have

    def _new_version(self, key: str, version: int) -> None:
        assert version > self.max_version.get(key, 0), f"version of {key!r} did not increase"
        self.max_version[key] = version

    def _expect_choice(self, data: st.DataObject, key: str) -> int | None:
        kv = self._live_kv(key)
        have = 0 if kv is None else kv.version
        return data.draw(st.sampled_from([None, 0, have, have + 1, max(0, have - 1)]))

    @rule(
        data=st.data(),
        key=st.sampled_from(KEYS),
        value=st.integers(0, 5),
        ttl=st.sampled_from([None, None, 1.0, 3.0]),
    )
    def kv_put(self, data: st.DataObject, key: str, value: int, ttl: float | None) -> None:
        expect = self._expect_choice(data, key)
        rid = self.next_rid()

        def build() -> bytes:
            return encode_entry(KvPut(self.epoch, self.clock(), key, value, expect, ttl, rid))

        def check(result: Any, version: int) -> None:
            cas = self._cas(key, expect)
            if isinstance(cas, VersionMismatch):
                self.expect(result, VersionMismatch)
            else:
                self.kv[key] = ModelKv(value, version, ttl, None if ttl is None else self.T + ttl)
                self.expect(result, version)
            if isinstance(result, int):
                self._new_version(key, result)
            self.last_rid_op = (build, result)

        self.pending.append((build(), check))
        self.pending_in_epoch = True

    @rule(data=st.data(), key=st.sampled_from(KEYS))
    def kv_delete(self, data: st.DataObject, key: str) -> None:
        expect = self._expect_choice(data, key)
        rid = self.next_rid()

        def build() -> bytes:
            return encode_entry(KvDelete(self.epoch, self.clock(), key, expect, rid))

        def check(result: Any, version: int) -> None:
            cas = self._cas(key, expect)
            if isinstance(cas, VersionMismatch):
                self.expect(result, VersionMismatch)
            else:
                self.kv.pop(key, None)
                self.expect(result, cas != 0)  # True iff a live entry was deleted
            self.last_rid_op = (build, result)

        self.pending.append((build(), check))
        self.pending_in_epoch = True

    @precondition(lambda self: self.last_rid_op is not None)
    @rule()
    def retry_last_request(self) -> None:
        """A caller retries a release/put/delete with the same request id, maybe at another
        master: it gets the first answer and nothing is applied twice."""
        assert self.last_rid_op is not None
        build, first = self.last_rid_op
        if isinstance(first, Unavailable):
            return

        def check(result: Any, version: int) -> None:
            assert _kind(result) == _kind(first), f"retry answered {result!r}, first {first!r}"

        self.pending.append((build(), check))
        self.pending_in_epoch = True

    @rule()
    def restart_from_snapshot(self) -> None:
        """Replica b is rebuilt from its own snapshot; it must go on exactly like a."""
        self.flush()
        self.b = self.state_cls.restore(self.b.snapshot())
        assert self.b.snapshot() == self.a.snapshot()

    @rule(key=st.sampled_from(KEYS))
    def kv_read(self, key: str) -> None:
        self.flush()
        got = self.a.kv_get(key, self.clock())
        assert got == self.b.kv_get(key, self.clock())
        assert self.a.kv_list("", self.clock()) == self.b.kv_list("", self.clock())
        if self.check_model:
            kv = self._live_kv(key)
            assert got == ((None, 0) if kv is None else (kv.value, kv.version))

    @rule(client=st.sampled_from(("p", "q", "r")))
    def counter_read(self, client: str) -> None:
        self.flush()
        value, version = self.a.kv_get("ctr", self.clock())
        assert (value or 0) == self.counter_commits, "a CAS increment was lost"
        self.counter_seen[client] = (value or 0, version)

    @precondition(lambda self: bool(self.counter_seen))
    @rule(data=st.data())
    def counter_increment(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(sorted(self.counter_seen)))
        value, version = self.counter_seen.pop(client)

        def check(result: Any, new_version: int) -> None:
            if isinstance(result, int):
                assert value == self.counter_commits, "CAS succeeded on a stale read"
                self.counter_commits += 1
            else:
                assert isinstance(result, VersionMismatch), result

        self.propose(KvPut(self.epoch, self.clock(), "ctr", value + 1, version, None, None), check)

    def teardown(self) -> None:
        self.flush()


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestLockStateMachine = LockMachine.TestCase
TestLockStateMachine.settings = SETTINGS


# ------------------------------------------------------------------------- planted bugs


class ForgetsExpiryCheck(LockState):
    """Grants a lock whether or not its lease is still live."""

    def _live(self, lease: _Lease, now: float) -> bool:
        return False


class KeepsOldClock(LockState):
    """Keeps inherited expiry times from the old master's clock on a master change."""

    def _inherit(self, expires_at: float, ttl: float, started_at: float) -> float:
        return expires_at


PLANTED = settings(
    max_examples=1000,
    stateful_step_count=30,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("buggy", [ForgetsExpiryCheck, KeepsOldClock])
def test_planted_bug_is_caught_by_the_safety_check(buggy: type[LockState]) -> None:
    machine = type(
        f"{buggy.__name__}Machine", (LockMachine,), {"state_cls": buggy, "check_model": False}
    )
    with pytest.raises(AssertionError, match="unsafe: "):
        run_state_machine_as_test(machine, settings=PLANTED)
