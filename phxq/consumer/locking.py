"""The lock-service interface the consumer tier relies on, and an in-process implementation.

The consumer daemon talks to the lock service (``phxq.lock.LockClient``) only through the
calls listed in :class:`LockApi`. :class:`MemoryLocks` implements the same calls in memory, with
the same rules, for unit tests and single-process use (a benchmark of the delivery path, an
embedded consumer); it is not replicated and not shared between processes.

Rules (the lock service's, DESIGN.md §6) that the consumer depends on:

- ``acquire(name, owner, ttl) -> token``: ``LockHeld`` while another owner holds an unexpired
  lease; tokens strictly increase per name (across owners and re-grants).
- ``renew(name, owner, token)``: ``LockHeld``/``StaleToken`` when the lease is gone or has
  another token. ``release`` likewise; releasing frees the lock at once.
- ``hold(name, owner, ttl)``: acquires (``LockHeld`` as above), renews in the background, and
  sets ``lease.lost`` as soon as the lease cannot be renewed; releases on exit.
- KV: versions per key increase on every put; ``kv_put(expect_version=)`` raises
  ``VersionMismatch`` on any other version (0 = absent); entries put with ``ttl`` vanish when
  not re-put within it; ``kv_list(prefix)`` -> ``{key: (value, version)}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from phxq.errors import BadArgument, LockHeld, StaleToken, VersionMismatch
from phxq.tasks import TaskScope


@dataclass(frozen=True, slots=True)
class LockInfo:
    owner: str
    token: int
    expires_in: float


class Lease(Protocol):
    token: int
    lost: asyncio.Event


class LockApi(Protocol):
    """What the consumer tier uses of ``phxq.lock.LockClient``."""

    async def acquire(self, name: str, owner: str, ttl: float) -> int: ...
    async def renew(self, name: str, owner: str, token: int) -> object: ...
    async def release(self, name: str, owner: str, token: int) -> object: ...
    async def get(self, name: str) -> Any: ...
    async def kv_get(self, key: str) -> tuple[Any, int]: ...
    async def kv_put(
        self, key: str, value: Any, expect_version: int | None = None, ttl: float | None = None
    ) -> int: ...
    async def kv_delete(self, key: str, expect_version: int | None = None) -> object: ...
    async def kv_list(self, prefix: str) -> dict[str, tuple[Any, int]]: ...
    async def kv_wait(self, key: str, after_version: int, timeout: float) -> tuple[Any, int]: ...
    def hold(
        self, name: str, owner: str, ttl: float
    ) -> contextlib.AbstractAsyncContextManager[Lease]: ...


@dataclass
class MemoryLease:
    token: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Held:
    owner: str
    token: int
    expires_at: float
    ttl: float


class MemoryLocks:
    """In-memory :class:`LockApi` (see the module docstring). ``clock`` is monotonic seconds."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._locks: dict[str, _Held] = {}
        self._tokens = itertools.count(1)
        self._kv: dict[str, tuple[Any, int, float | None]] = {}  # key -> value, version, expiry
        self._versions = itertools.count(1)
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> MemoryLocks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    # ---------------------------------------------------------------------------- locks

    def _live(self, name: str) -> _Held | None:
        held = self._locks.get(name)
        if held is not None and held.expires_at <= self._clock():
            del self._locks[name]
            return None
        return held

    async def acquire(self, name: str, owner: str, ttl: float) -> int:
        if ttl <= 0:
            raise BadArgument(f"ttl must be > 0, got {ttl}")
        held = self._live(name)
        if held is not None and held.owner != owner:
            raise LockHeld(f"{name} is held by {held.owner}", {"holder": held.owner})
        token = next(self._tokens)
        self._locks[name] = _Held(owner, token, self._clock() + ttl, ttl)
        return token

    def _check(self, name: str, owner: str, token: int) -> _Held:
        held = self._live(name)
        if held is None or held.owner != owner:
            holder = None if held is None else held.owner
            raise LockHeld(f"{name} is not held by {owner}", {"holder": holder})
        if held.token != token:
            raise StaleToken(f"{name}: token {token} is not the current {held.token}")
        return held

    async def renew(self, name: str, owner: str, token: int) -> None:
        held = self._check(name, owner, token)
        held.expires_at = self._clock() + held.ttl

    async def release(self, name: str, owner: str, token: int) -> None:
        self._check(name, owner, token)
        del self._locks[name]

    async def get(self, name: str) -> LockInfo | None:
        held = self._live(name)
        if held is None:
            return None
        return LockInfo(held.owner, held.token, held.expires_at - self._clock())

    def expire(self, name: str) -> None:
        """Test hook: the lease of ``name`` ends now (as if its holder stopped renewing)."""
        self._locks.pop(name, None)

    @contextlib.asynccontextmanager
    async def hold(self, name: str, owner: str, ttl: float) -> AsyncIterator[MemoryLease]:
        lease = MemoryLease(await self.acquire(name, owner, ttl))

        async def keep() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                try:
                    await self.renew(name, owner, lease.token)
                except (LockHeld, StaleToken):
                    lease.lost.set()
                    return

        try:
            async with TaskScope(f"hold {name}") as scope:  # the renewer ends with the block
                scope.spawn(keep(), name=f"renew {name}")
                yield lease
        finally:
            if not lease.lost.is_set():
                # Gone already (expired or taken over): nothing to release, which is fine.
                with contextlib.suppress(LockHeld, StaleToken):
                    await self.release(name, owner, lease.token)

    # ------------------------------------------------------------------------------- KV

    def _entry(self, key: str) -> tuple[Any, int] | None:
        entry = self._kv.get(key)
        if entry is None:
            return None
        value, version, expires_at = entry
        if expires_at is not None and expires_at <= self._clock():
            del self._kv[key]
            return None
        return value, version

    async def kv_get(self, key: str) -> tuple[Any, int]:
        return self._entry(key) or (None, 0)

    async def kv_put(
        self, key: str, value: Any, expect_version: int | None = None, ttl: float | None = None
    ) -> int:
        current = self._entry(key)
        version = 0 if current is None else current[1]
        if expect_version is not None and expect_version != version:
            raise VersionMismatch(f"{key} is at version {version}", {"version": version})
        new = next(self._versions)
        self._kv[key] = (value, new, None if ttl is None else self._clock() + ttl)
        async with self._changed:
            self._changed.notify_all()
        return new

    async def kv_delete(self, key: str, expect_version: int | None = None) -> None:
        current = self._entry(key)
        version = 0 if current is None else current[1]
        if expect_version is not None and expect_version != version:
            raise VersionMismatch(f"{key} is at version {version}", {"version": version})
        self._kv.pop(key, None)

    async def kv_list(self, prefix: str) -> dict[str, tuple[Any, int]]:
        out = {}
        for key in sorted(self._kv):
            if key.startswith(prefix) and (entry := self._entry(key)) is not None:
                out[key] = entry
        return out

    async def kv_wait(self, key: str, after_version: int, timeout: float) -> tuple[Any, int]:
        async def changed() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: (self._entry(key) or (None, 0))[1] != after_version
                )

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed(), timeout)
        return await self.kv_get(key)
