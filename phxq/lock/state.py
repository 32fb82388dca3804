"""The lock service's replicated state machine: lease locks with fencing tokens and a versioned
KV. Pure and deterministic: no I/O, no clock reads; time comes in with each log entry.

Public API::

    LockState()
    .apply(instance, items) -> list[result]      # one per item: a value or a PhxqError instance
    .index_entries(instance, items) -> []        # the lock log has no queue index
    .epoch -> Epoch | None;  .epoch_started_at;  .now;  .applied_up_to
    .lock_info(name, now) -> LockInfo | None     # reads, on the current epoch's clock
    .kv_get(key, now) -> (value, version)        # (None, 0) when absent or expired
    .kv_list(prefix, now) -> dict[key, (value, version)]
    .next_expiry() -> float | None               # soonest lease/KV expiry (current epoch clock)
    .drain_changed() -> list[str]                # KV keys changed since the last drain
    .locks_held / .kv_keys                       # sizes, for status
    .snapshot() -> bytes;  LockState.restore(data) -> LockState   # ProtocolError if malformed
    .forget_below(instance) -> None              # the log below was truncated (nothing to do)

    drift_margin(ttl) -> float                   # what a new master adds to an inherited lease
    make_token(instance, index) -> int           # instance << 20 | index

Results per entry (``token``/``version`` = ``make_token(instance, item index)``):

=============  ==================================================================================
EpochStart     ``None``; a stale epoch (ballot not above the current one) is ``Unavailable``
Acquire        the token. Free or expired: a new grant with a new token. Held by the same owner:
               extended (expiry only moves later; ttl becomes the larger one), same token. Held
               by another owner: ``LockHeld`` (``data``: holder, expires_in)
Renew          the token, extending the lease by its ttl from the entry's time. ``LockHeld`` if
               another owner holds it; ``StaleToken`` if the token is not the live lease's or the
               lease expired / was released
Release        ``True`` if the caller's live lease was released, ``False`` if nothing was held;
               ``LockHeld`` / ``StaleToken`` as for ``Renew``
KvPut          the new version. ``expect_version``: ``None`` unconditional, ``0`` must be absent,
               ``v`` must be at version ``v``, else ``VersionMismatch`` (``data['version']`` =
               current). ``ttl``: the entry expires unless put again within ttl
KvDelete       ``True`` if deleted, ``False`` if absent; ``VersionMismatch`` as for ``KvPut``
Sweep          the number of expired leases and KV entries dropped
=============  ==================================================================================

An undecodable item is ``ProtocolError``. Entries whose epoch is not the current one are
``Unavailable`` and change nothing (not applied: retrying is safe). A ``rid`` seen among the
last ``RIDS_REMEMBERED`` applied ones gets the first answer again. Tokens and versions strictly
increase: they are made of the (increasing) instance. Only ``apply`` changes state (apart from
``next_expiry`` discarding stale index entries and ``drain_changed``).

**Time and epochs (why this is safe without synchronised clocks).** Entry times are the
proposing master's monotonic clock, so they are comparable only inside one *epoch*: the run of
entries proposed by one master under one ballot. A master serves nothing before its
``EpochStart`` is applied, and ``EpochStart`` is taken *after* it became master, so every lease
it inherits was (re)granted on a request sent before that instant. On ``EpochStart(at)``:

- a lease (or KV ttl entry) that had already expired on the old epoch's clock (by the last
  entry time applied there) is dropped: the old master saw its full ttl pass;
- every other one expires at ``at + ttl + drift_margin(ttl)`` on the new clock: its full ttl
  measured from when the new master became master (renewals by the holder still succeed).

Inside an epoch a grant or renewal at entry time ``t`` lasts until ``t + ttl`` on the master's
clock, and ``t`` is later than the request's send time, from which the client counts its own
(slightly shorter: see :mod:`phxq.lock.client`) lease. Epochs are ordered by ballot, so an
epoch entry of an older master that reaches the log late is refused, and operations it
proposed are refused too. No decision ever compares times of two machines.

**Snapshots** hold everything ``apply`` depends on (epoch, times, leases, KV, remembered request
ids), so a replica restored from one and fed the rest of the log reaches the same state; the
lock daemon uses them to truncate its log.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from phxq.errors import (
    BadArgument,
    LockHeld,
    PhxqError,
    ProtocolError,
    StaleToken,
    StorageError,
    Unavailable,
    VersionMismatch,
    from_wire,
)
from phxq.lock.entries import (
    Acquire,
    Entry,
    Epoch,
    EpochStart,
    KvDelete,
    KvPut,
    Release,
    Renew,
    Sweep,
    decode_entry,
)

__all__ = [
    "DRIFT_FIXED",
    "DRIFT_RATE",
    "MAX_KV_BYTES",
    "MAX_LOCKS",
    "RIDS_REMEMBERED",
    "LockInfo",
    "LockState",
    "drift_margin",
    "make_token",
]

DRIFT_RATE: Final = 1 / 16  # clock rate difference tolerated between any two machines
DRIFT_FIXED: Final = 0.25  # seconds, on top
RIDS_REMEMBERED: Final = 65536
MAX_LOCKS: Final = 100_000
MAX_KV_BYTES: Final = 8 << 20  # keys + values: kv_list of everything still fits one RPC frame

_LEASE: Final = 0
_KV: Final = 1
_SNAPSHOT_VERSION: Final = 1


def drift_margin(ttl: float) -> float:
    """Extra time a new master waits, beyond a full ttl, before granting an inherited lease."""
    return ttl * DRIFT_RATE + DRIFT_FIXED


def make_token(instance: int, index: int) -> int:
    return (instance << 20) | index


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A held lock: its owner, fencing token and seconds left (on the master's clock)."""

    owner: str
    token: int
    expires_in: float


@dataclass(slots=True)
class _Lease:
    owner: str
    token: int
    ttl: float
    expires_at: float


@dataclass(slots=True)
class _KvEntry:
    value: Any
    version: int
    size: int
    ttl: float | None
    expires_at: float | None


def _again(result: Any) -> Any:
    """A remembered result, answered again (a fresh exception object for an error)."""
    if isinstance(result, PhxqError):
        return type(result)(result.message, result.data)
    return result


class LockState:
    """Leases and KV of the lock service (see the module docstring)."""

    def __init__(self) -> None:
        self.epoch: Epoch | None = None
        self.epoch_started_at: float | None = None
        self.now = 0.0  # latest entry time applied in the current epoch
        self.applied_up_to = 0
        self._leases: dict[str, _Lease] = {}
        self._kv: dict[str, _KvEntry] = {}
        self._kv_bytes = 0
        self._rids: OrderedDict[bytes, Any] = OrderedDict()
        self._expiries: list[tuple[float, int, str]] = []  # heap; stale rows skipped lazily
        self._changed: list[str] = []

    # ---------------------------------------------------------------------------- apply

    def apply(self, instance: int, items: Sequence[bytes]) -> list[Any]:
        if instance <= self.applied_up_to:
            return [StorageError(f"instance {instance} already applied")] * len(items)
        if instance != self.applied_up_to + 1:
            # A missing instance could have held a grant: going on would break exclusivity.
            raise StorageError(
                f"lock state: instance {instance} applied after {self.applied_up_to}"
            )
        self.applied_up_to = instance
        return [self._apply_item(instance, index, item) for index, item in enumerate(items)]

    def index_entries(self, instance: int, items: Sequence[bytes]) -> list[tuple[Any, int, float]]:
        return []

    def _apply_item(self, instance: int, index: int, item: bytes) -> Any:
        try:
            entry = decode_entry(item)
        except ProtocolError as exc:
            return exc
        if isinstance(entry, EpochStart):
            return self._start_epoch(entry)
        if entry.epoch != self.epoch:
            return Unavailable(
                f"proposed by the master of epoch {entry.epoch}, superseded by {self.epoch}; "
                "not applied (retry)"
            )
        self.now = max(self.now, entry.at)
        rid = getattr(entry, "rid", None)
        if rid is not None and rid in self._rids:
            return _again(self._rids[rid])
        result = self._dispatch(entry, make_token(instance, index))
        if rid is not None:
            self._rids[rid] = result
            if len(self._rids) > RIDS_REMEMBERED:
                self._rids.popitem(last=False)
        return result

    def _dispatch(self, entry: Entry, token: int) -> Any:
        if isinstance(entry, Acquire):
            return self._acquire(entry, token)
        if isinstance(entry, Renew):
            return self._renew(entry)
        if isinstance(entry, Release):
            return self._release(entry)
        if isinstance(entry, KvPut):
            return self._kv_put(entry, token)
        if isinstance(entry, KvDelete):
            return self._kv_delete(entry)
        if isinstance(entry, Sweep):
            return self._sweep()
        raise AssertionError(f"unhandled lock entry {entry!r}")

    # --------------------------------------------------------------------------- epochs

    def _start_epoch(self, entry: EpochStart) -> Any:
        if self.epoch is not None and entry.epoch <= self.epoch:
            return Unavailable(f"stale epoch {entry.epoch} (current {self.epoch}); not applied")
        old_now = self.now
        for name, lease in list(self._leases.items()):
            if not self._live_at(lease.expires_at, old_now):
                del self._leases[name]
            else:
                lease.expires_at = self._inherit(lease.expires_at, lease.ttl, entry.at)
        for key, kv in list(self._kv.items()):
            if kv.ttl is None or kv.expires_at is None:
                continue
            if not self._live_at(kv.expires_at, old_now):
                self._drop_kv(key)
            else:
                kv.expires_at = self._inherit(kv.expires_at, kv.ttl, entry.at)
        self.epoch = entry.epoch
        self.epoch_started_at = entry.at
        self.now = entry.at
        self._expiries = [(lease.expires_at, _LEASE, n) for n, lease in self._leases.items()]
        self._expiries += [
            (kv.expires_at, _KV, k) for k, kv in self._kv.items() if kv.expires_at is not None
        ]
        heapq.heapify(self._expiries)
        return None

    def _inherit(self, expires_at: float, ttl: float, started_at: float) -> float:
        """Expiry, on the new epoch's clock, of a lease that is live when the epoch starts."""
        return started_at + ttl + drift_margin(ttl)

    def _live_at(self, expires_at: float, now: float) -> bool:
        return now < expires_at

    def _live(self, lease: _Lease, now: float) -> bool:
        return self._live_at(lease.expires_at, now)

    # ---------------------------------------------------------------------------- locks

    def _extend(self, name: str, lease: _Lease, expires_at: float) -> None:
        if expires_at > lease.expires_at:
            lease.expires_at = expires_at
            heapq.heappush(self._expiries, (expires_at, _LEASE, name))

    def _acquire(self, e: Acquire, token: int) -> Any:
        now = self.now
        lease = self._leases.get(e.name)
        if lease is not None and self._live(lease, now):
            if lease.owner == e.owner:
                lease.ttl = max(lease.ttl, e.ttl)
                self._extend(e.name, lease, now + e.ttl)
                return lease.token
            return self._held(e.name, lease)
        if lease is None and len(self._leases) >= MAX_LOCKS:
            return BadArgument(f"lock table full ({MAX_LOCKS} locks)")
        self._leases[e.name] = _Lease(e.owner, token, e.ttl, now + e.ttl)
        heapq.heappush(self._expiries, (now + e.ttl, _LEASE, e.name))
        return token

    def _held(self, name: str, lease: _Lease) -> LockHeld:
        return LockHeld(
            f"lock {name!r} is held by {lease.owner!r}",
            {"holder": lease.owner, "expires_in": lease.expires_at - self.now},
        )

    def _check_holder(self, name: str, owner: str, token: int) -> _Lease | PhxqError:
        lease = self._leases.get(name)
        if lease is None or not self._live(lease, self.now):
            return StaleToken(f"lock {name!r}: no live lease (expired or released)", {"name": name})
        if lease.owner != owner:
            return self._held(name, lease)
        if lease.token != token:
            return StaleToken(
                f"lock {name!r}: token {token} is not the live lease's {lease.token}",
                {"name": name, "token": lease.token},
            )
        return lease

    def _renew(self, e: Renew) -> Any:
        lease = self._check_holder(e.name, e.owner, e.token)
        if isinstance(lease, PhxqError):
            return lease
        self._extend(e.name, lease, self.now + lease.ttl)
        return lease.token

    def _release(self, e: Release) -> Any:
        lease = self._leases.get(e.name)
        if lease is None or not self._live(lease, self.now):
            self._leases.pop(e.name, None)
            return False
        checked = self._check_holder(e.name, e.owner, e.token)
        if isinstance(checked, PhxqError):
            return checked
        del self._leases[e.name]
        return True

    # ------------------------------------------------------------------------------- KV

    def _live_kv(self, key: str, now: float) -> _KvEntry | None:
        kv = self._kv.get(key)
        if kv is None or (kv.expires_at is not None and not self._live_at(kv.expires_at, now)):
            return None
        return kv

    def _drop_kv(self, key: str) -> None:
        kv = self._kv.pop(key)
        self._kv_bytes -= kv.size
        self._changed.append(key)

    def _kv_put(self, e: KvPut, version: int) -> Any:
        now = self.now
        current = self._live_kv(e.key, now)
        have = 0 if current is None else current.version
        if e.expect_version is not None and e.expect_version != have:
            return VersionMismatch(
                f"key {e.key!r} is at version {have}, not {e.expect_version}", {"version": have}
            )
        size = len(e.key.encode()) + len(msgpack.packb(e.value, use_bin_type=True))
        old_size = self._kv[e.key].size if e.key in self._kv else 0
        if self._kv_bytes - old_size + size > MAX_KV_BYTES:
            return BadArgument(f"KV store full ({MAX_KV_BYTES} bytes)")
        expires_at = None if e.ttl is None else now + e.ttl
        self._kv_bytes += size - old_size
        self._kv[e.key] = _KvEntry(e.value, version, size, e.ttl, expires_at)
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, _KV, e.key))
        self._changed.append(e.key)
        return version

    def _kv_delete(self, e: KvDelete) -> Any:
        current = self._live_kv(e.key, self.now)
        have = 0 if current is None else current.version
        if e.expect_version is not None and e.expect_version != have:
            return VersionMismatch(
                f"key {e.key!r} is at version {have}, not {e.expect_version}", {"version": have}
            )
        if e.key in self._kv:
            self._drop_kv(e.key)
        return current is not None

    def _sweep(self) -> int:
        dropped = 0
        while self._expiries and self._expiries[0][0] <= self.now:
            expires_at, kind, name = heapq.heappop(self._expiries)
            if kind == _LEASE:
                lease = self._leases.get(name)
                if lease is not None and lease.expires_at == expires_at:
                    del self._leases[name]
                    dropped += 1
            else:
                kv = self._kv.get(name)
                if kv is not None and kv.expires_at == expires_at:
                    self._drop_kv(name)
                    dropped += 1
        return dropped

    # ---------------------------------------------------------------------------- reads

    def lock_info(self, name: str, now: float) -> LockInfo | None:
        now = max(now, self.now)
        lease = self._leases.get(name)
        if lease is None or not self._live(lease, now):
            return None
        return LockInfo(lease.owner, lease.token, lease.expires_at - now)

    def kv_get(self, key: str, now: float) -> tuple[Any, int]:
        kv = self._live_kv(key, max(now, self.now))
        return (None, 0) if kv is None else (kv.value, kv.version)

    def kv_list(self, prefix: str, now: float) -> dict[str, tuple[Any, int]]:
        now = max(now, self.now)
        out = {}
        for key in sorted(k for k in self._kv if k.startswith(prefix)):
            kv = self._live_kv(key, now)
            if kv is not None:
                out[key] = (kv.value, kv.version)
        return out

    def next_expiry(self) -> float | None:
        heap = self._expiries
        while heap:
            expires_at, kind, name = heap[0]
            record = self._leases.get(name) if kind == _LEASE else self._kv.get(name)
            if record is not None and record.expires_at == expires_at:
                return expires_at
            heapq.heappop(heap)
        return None

    def drain_changed(self) -> list[str]:
        changed, self._changed = self._changed, []
        return changed

    # ------------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        rids = [
            [rid, ["err", *r.to_wire()] if isinstance(r, PhxqError) else ["ok", r]]
            for rid, r in self._rids.items()
        ]
        body = [
            _SNAPSHOT_VERSION,
            None if self.epoch is None else list(self.epoch),
            self.epoch_started_at,
            self.now,
            self.applied_up_to,
            [[n, x.owner, x.token, x.ttl, x.expires_at] for n, x in self._leases.items()],
            [[k, x.value, x.version, x.size, x.ttl, x.expires_at] for k, x in self._kv.items()],
            rids,
        ]
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed

    @classmethod
    def restore(cls, data: bytes) -> LockState:
        """The state saved by :meth:`snapshot`; ``ProtocolError`` if ``data`` is not one."""
        try:
            body = msgpack.unpackb(data, raw=False, strict_map_key=False)
            version, epoch, started, now, applied, leases, kvs, rids = body
            if version != _SNAPSHOT_VERSION:
                raise ValueError(f"unknown snapshot version {version!r}")
            state = cls()
            state.epoch = None if epoch is None else (int(epoch[0]), int(epoch[1]))
            state.epoch_started_at = None if started is None else float(started)
            state.now = float(now)
            state.applied_up_to = int(applied)
            for name, owner, token, ttl, expires_at in leases:
                state._leases[str(name)] = _Lease(
                    str(owner), int(token), float(ttl), float(expires_at)
                )
            for key, value, ver, size, ttl, expires_at in kvs:
                state._kv[str(key)] = _KvEntry(
                    value,
                    int(ver),
                    int(size),
                    None if ttl is None else float(ttl),
                    None if expires_at is None else float(expires_at),
                )
                state._kv_bytes += int(size)
            for rid, (kind, *result) in rids:
                state._rids[bytes(rid)] = from_wire(*result) if kind == "err" else result[0]
        except Exception as exc:  # malformed input raises many types; all mean "not a snapshot"
            raise ProtocolError(f"malformed lock state snapshot: {exc!r:.200}") from None
        state._expiries = [(x.expires_at, _LEASE, n) for n, x in state._leases.items()]
        state._expiries += [
            (x.expires_at, _KV, k) for k, x in state._kv.items() if x.expires_at is not None
        ]
        heapq.heapify(state._expiries)
        return state

    def forget_below(self, instance: int) -> None:
        """Nothing in the lock state refers to old instances (tokens are just numbers)."""

    @property
    def locks_held(self) -> int:
        return len(self._leases)

    @property
    def kv_keys(self) -> int:
        return len(self._kv)
