"""The lock service client: ``phxq.LockClient`` (async).

::

    async with LockClient(["127.0.0.1:7201", "127.0.0.1:7202", "127.0.0.1:7203"]) as locks:
        token = await locks.acquire(name, owner, ttl)       # LockHeld if someone else holds it
        await locks.renew(name, owner, token)                # LockHeld / StaleToken when lost
        await locks.release(name, owner, token)
        info = await locks.get(name)                         # None or LockInfo(owner, token, expires_in)
        value, version = await locks.kv_get(key)             # (None, 0) when absent
        version = await locks.kv_put(key, value, expect_version=None, ttl=None)
        await locks.kv_delete(key, expect_version=None)
        entries = await locks.kv_list(prefix)                # {key: (value, version)}
        value, version = await locks.kv_wait(key, after_version, timeout)
        async with locks.hold(name, owner, ttl) as lease:    # renewed in the background
            lease.token; lease.lost                          # lost: an asyncio.Event

Against a secured cluster (``[security]``): ``LockClient(addrs, token=..., ca="ca.pem")`` for
the admin tools (settings keys, reads), or ``ca=`` a member's ``ssl.SSLContext`` (consumers:
locks and membership keys are members-only; see docs/security.md).

What it promises:

- **Routing.** Requests go to the lock master. ``NotMaster(hint)`` is followed at once;
  ``Unavailable`` (no master yet, a dead node, an outcome unknown) is retried on the next node
  with backoff until ``retry_timeout``. Retries are safe: acquire and renew are idempotent for
  the holder, and release / kv_put / kv_delete carry a request id the service deduplicates.
- **Leases are counted on the client's own clock**, from when the request that granted or
  renewed them was *sent*, and a little short of the ttl (``ttl * (1 - DRIFT_RATE)``) so a
  master whose clock runs somewhat fast never expires a lease the client still believes in.
- ``hold(name, owner, ttl)`` acquires (``LockHeld`` if taken), renews every ``ttl / 3`` and
  sets ``lease.lost`` **at once** when a renewal is refused (LockHeld / StaleToken) or when no
  renewal could be confirmed before the local deadline. Leaving the block releases the lock
  (best effort) and sets ``lost`` too: from then on the owner must not act on the token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, final

from phxq import validate
from phxq.budget import Budget, bounded, describe
from phxq.errors import (
    BadArgument,
    LockHeld,
    NotMaster,
    PhxqError,
    StaleToken,
    StorageError,
    Unavailable,
)
from phxq.lock.state import DRIFT_RATE, LockInfo
from phxq.net.rpc import RpcPool
from phxq.net.transport import client_transport
from phxq.tasks import TaskScope

__all__ = ["Lease", "LockClient", "LockInfo"]

log = logging.getLogger("phxq.lock.client")

RENEW_RETRY = 0.1  # seconds between renewal attempts after a failed one
RELEASE_BUDGET = 2.0  # seconds leaving hold() may spend releasing


def local_ttl(ttl: float) -> float:
    """How long the client trusts a lease granted or renewed with ``ttl``, from the send time."""
    return ttl * (1 - DRIFT_RATE)


@dataclass(eq=False)
class Lease:
    """A lock held by :meth:`LockClient.hold`. ``valid_until`` is on the local monotonic clock."""

    name: str
    owner: str
    ttl: float
    token: int
    valid_until: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None

    @property
    def expires_in(self) -> float:
        return self.valid_until - time.monotonic()


@final
class LockClient:
    """Async client of the lock service (see the module docstring).

    ``addresses``: some lock node addresses; ``request_timeout`` / ``retry_timeout``: seconds
    per request and for retrying ``Unavailable`` / ``NotMaster`` (then ``Unavailable``);
    ``token`` / ``ca``: credentials for a secured cluster, as for :class:`phxq.Client`.
    ``BadArgument`` without an address. Every call takes ``timeout=`` (seconds, default
    ``retry_timeout``): it raises ``Unavailable`` no later than that, saying which lock nodes
    answered ("no majority" when fewer than a majority did). Every call may also raise
    ``Unauthenticated`` / ``Forbidden`` on a secured cluster."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        request_timeout: float = 2.0,
        retry_timeout: float = 15.0,
        token: str | None = None,
        ca: str | os.PathLike[str] | ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        if not addresses:
            raise BadArgument("LockClient needs at least one lock node address")
        self._seeds = list(addresses)
        self._next = 0
        self._master: str | None = None
        self._pool = RpcPool(transport_factory=client_transport(token, ca))  # see phxq.Client
        self._request_timeout = request_timeout
        self._retry_timeout = retry_timeout

    async def __aenter__(self) -> LockClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections. Idempotent."""
        await self._pool.close()

    # ----------------------------------------------------------------------- transport

    async def call(
        self,
        method: str,
        params: Any | Callable[[], Any],
        *,
        extra_time: float = 0.0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method`` on the lock master, following ``NotMaster`` and retrying
        ``Unavailable`` for ``timeout`` seconds (default ``retry_timeout``) plus ``extra_time``,
        or until ``deadline`` (local monotonic) if sooner; then ``Unavailable`` saying which
        lock nodes answered what ("no majority" when fewer than a majority answered at all).
        ``params`` may be a callable, evaluated per attempt."""
        budget = Budget.start(timeout, self._retry_timeout, extra_time)
        if deadline is not None:
            budget.deadline = min(budget.deadline, deadline)
        async with bounded(budget, lambda: self._give_up(budget)):
            return await self._attempts(method, params, budget, extra_time)

    async def _attempts(
        self, method: str, params: Any | Callable[[], Any], budget: Budget, extra_time: float
    ) -> Any:
        backoff = 0.02
        redirects = 0
        while True:
            addr = self._master or self._seeds[self._next % len(self._seeds)]
            timeout = min(self._request_timeout + extra_time, budget.remaining())
            if timeout <= 0:
                raise self._give_up(budget)
            try:
                return await self._pool.call(
                    addr, method, params() if callable(params) else params, timeout=timeout
                )
            except NotMaster as exc:
                known = f"not master (master: {exc.hint})" if exc.hint else "knows no master"
                budget.answered(addr, known)
                if exc.hint is not None and exc.hint != addr and redirects < 3:
                    self._master = exc.hint
                    redirects += 1
                    continue
                self._forget(addr)
            except StorageError as exc:
                budget.answered(addr, describe(exc))
                self._forget(addr)
            except Unavailable as exc:
                budget.no_answer(addr, describe(exc))
                self._forget(addr)
            redirects = 0
            pause = min(backoff * (0.5 + random.random()), budget.remaining())
            if pause > 0:
                await asyncio.sleep(pause)
            backoff = min(backoff * 2, 0.5)

    def _give_up(self, budget: Budget) -> Unavailable:
        members = list(dict.fromkeys([*self._seeds, *budget.answers, *budget.silent]))
        return budget.error("lock service", members, {})

    def _forget(self, addr: str) -> None:
        if self._master == addr or self._master is None:
            self._next += 1
        self._master = None

    # -------------------------------------------------------------------------- locks

    async def acquire(
        self, name: str, owner: str, ttl: float, *, timeout: float | None = None
    ) -> int:
        """Acquire (or, as its owner, extend) the lock; its fencing token. ``LockHeld``.
        ``timeout``: seconds before ``Unavailable`` (default ``retry_timeout``), as every call."""
        params = {"name": name, "owner": owner, "ttl": ttl}
        token: int = await self.call("acquire", params, timeout=timeout)
        return token

    async def renew(
        self, name: str, owner: str, token: int, *, timeout: float | None = None
    ) -> int:
        """Extend the lease by its ttl. ``LockHeld`` / ``StaleToken`` when it was lost."""
        params = {"name": name, "owner": owner, "token": token}
        result: int = await self.call("renew", params, timeout=timeout)
        return result

    async def release(
        self, name: str, owner: str, token: int, *, timeout: float | None = None
    ) -> bool:
        """Release the lease; ``False`` if it was not held any more."""
        params = {"name": name, "owner": owner, "token": token, "rid": os.urandom(16)}
        return bool(await self.call("release", params, timeout=timeout))

    async def get(self, name: str, *, timeout: float | None = None) -> LockInfo | None:
        """The lock's holder, token and remaining lease, or None when nobody holds it."""
        row = await self.call("get", {"name": name}, timeout=timeout)
        return None if row is None else LockInfo(row[0], row[1], row[2])

    def hold(self, name: str, owner: str, ttl: float) -> _Hold:
        """``async with locks.hold(name, owner, ttl) as lease:`` (see the module docstring)."""
        return _Hold(self, name, owner, ttl)

    # ----------------------------------------------------------------------------- KV

    async def kv_get(self, key: str, *, timeout: float | None = None) -> tuple[Any, int]:
        """``(value, version)``; ``(None, 0)`` when the key is absent."""
        value, version = await self.call("kv_get", {"key": key}, timeout=timeout)
        return value, version

    async def kv_put(
        self,
        key: str,
        value: Any,
        expect_version: int | None = None,
        ttl: float | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Store ``value``; the new version. ``expect_version`` makes it a compare-and-set
        (``0``: the key must be absent); ``VersionMismatch`` otherwise. With ``ttl`` the entry
        expires unless put again in time."""
        params = {
            "key": key,
            "value": value,
            "expect_version": expect_version,
            "ttl": ttl,
            "rid": os.urandom(16),
        }
        version: int = await self.call("kv_put", params, timeout=timeout)
        return version

    async def kv_delete(
        self, key: str, expect_version: int | None = None, *, timeout: float | None = None
    ) -> bool:
        """Delete the key; ``False`` if it was absent. ``expect_version``: compare-and-delete
        (``VersionMismatch`` otherwise)."""
        params = {"key": key, "expect_version": expect_version, "rid": os.urandom(16)}
        return bool(await self.call("kv_delete", params, timeout=timeout))

    async def kv_list(
        self, prefix: str = "", *, timeout: float | None = None
    ) -> dict[str, tuple[Any, int]]:
        """Every live key starting with ``prefix``: ``{key: (value, version)}``."""
        rows = await self.call("kv_list", {"prefix": prefix}, timeout=timeout)
        return {k: (v[0], v[1]) for k, v in rows.items()}

    async def kv_wait(self, key: str, after_version: int, timeout: float) -> tuple[Any, int]:
        """The key's ``(value, version)`` once its version is above ``after_version`` (or it is
        deleted, when ``after_version > 0``), or after ``timeout`` seconds (here the long
        poll's wait: reaching the lock master may take ``retry_timeout`` on top)."""
        timeout = validate.number(timeout, "timeout", minimum=0, unit="seconds")
        end = time.monotonic() + timeout

        def params() -> dict[str, Any]:
            remaining = min(max(0.0, end - time.monotonic()), 60.0)
            return {"key": key, "after_version": after_version, "timeout": remaining}

        value, version = await self.call("kv_wait", params, extra_time=timeout)
        return value, version


class _Hold:
    """The async context manager behind :meth:`LockClient.hold`."""

    def __init__(self, client: LockClient, name: str, owner: str, ttl: float) -> None:
        self._client = client
        self._name = name
        self._owner = owner
        self._ttl = ttl
        self._renewer = TaskScope(f"lock {name}", log)
        self._task: asyncio.Task[None] | None = None  # the renewal task, while held
        self.lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        sent = time.monotonic()
        token = await self._client.acquire(self._name, self._owner, self._ttl)
        lease = Lease(self._name, self._owner, self._ttl, token, sent + local_ttl(self._ttl))
        self.lease = lease
        self._task = self._renewer.spawn(
            self._keep_or_lose(lease, sent), name=f"renew {self._name}"
        )
        return lease

    async def __aexit__(self, *exc: object) -> None:
        lease = self.lease
        assert lease is not None
        await self._renewer.aclose()
        if not lease.lost.is_set():
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for returns the result instead of
                # raising when it is cancelled just as the awaited call completes.
                async with asyncio.timeout(RELEASE_BUDGET):
                    await self._client.release(lease.name, lease.owner, lease.token)
            except (PhxqError, TimeoutError) as exc:
                # Not fatal: the lease expires by itself after its ttl; releasing only hands
                # the lock over sooner. The caller's own exception (if any) matters more.
                why = str(exc) or f"no answer within {RELEASE_BUDGET:g}s"  # TimeoutError: empty
                log.warning("lock %r: release failed (expires by itself): %s", lease.name, why)
            self._lose(lease, "released")

    def _lose(self, lease: Lease, reason: str) -> None:
        if not lease.lost.is_set():
            lease.reason = reason
            lease.lost.set()

    async def _keep_or_lose(self, lease: Lease, sent: float) -> None:
        """:meth:`_keep`; if it fails unexpectedly the lease counts as lost at once (the owner
        must stop acting on the token), and the scope logs the failure."""
        try:
            await self._keep(lease, sent)
        except Exception as exc:
            self._lose(lease, f"renewer failed: {exc!r}")
            raise

    async def _keep(self, lease: Lease, sent: float) -> None:
        interval = self._ttl / 3
        next_at = sent + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            sent = time.monotonic()
            if sent >= lease.valid_until:
                self._lose(lease, "no renewal confirmed before the lease expired")
                return
            params = {"name": lease.name, "owner": lease.owner, "token": lease.token}
            try:
                # Not wait_for: it swallows the cancellation by __aexit__ when that comes just
                # as the renewal answer does, and this task would then renew forever.
                async with asyncio.timeout(lease.valid_until - sent):
                    await self._client.call("renew", params, deadline=lease.valid_until)
            except (LockHeld, StaleToken) as exc:
                self._lose(lease, f"{type(exc).__name__}: {exc.message}")
                return
            except (TimeoutError, Unavailable, NotMaster, StorageError) as exc:
                log.info("lock %r: renewal not confirmed yet: %r", lease.name, exc)
                next_at = min(time.monotonic() + RENEW_RETRY, lease.valid_until)
                continue
            except PhxqError as exc:
                self._lose(lease, f"renewal failed: {type(exc).__name__}: {exc.message}")
                return
            lease.valid_until = max(lease.valid_until, sent + local_ttl(self._ttl))
            next_at = sent + interval
