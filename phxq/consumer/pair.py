"""One (consumer group, topic, queue) pair inside a consumer daemon: the lock-guarded ordered
pull loop.

Public API::

    PairWorker(pair, runtime, *, client, locks, owner, timings, paxos_group, rng)
    await worker.run()        # acquire -> own -> (drain) -> release; returns when done
    worker.drain()            # hand the pair over: finish in-flight work, commit, release
    worker.state              # Ownership
    worker.committed, worker.token, worker.blocked

**Ownership** is the state machine of :mod:`phxq.consumer.ownership`. A worker processes its pair only in OWNED/DRAINING, i.e. only while it holds the pair's lock
(``cg/<group>/<topic>/<queue>``), and every cursor commit carries that lock's fencing token.
When the lease is lost (``lease.lost``) or a commit answers ``StaleToken``, the loop is
cancelled at once: nothing is committed after a loss, and the in-flight handler call is
abandoned (its message is redelivered by the next owner: at-least-once).

**The loop** reads the queue after the committed cursor (``dequeue`` with a long poll), keeps
up to ``read_ahead`` messages in a :class:`~phxq.consumer.window.DeliveryWindow`, hands them to
the handler in order (``strict``), or per key with up to ``concurrency`` in flight
(``per_key``), pacing each start through the group's rate limiter, and commits the contiguous
prefix of finished messages. Read-ahead is bounded by ``read_ahead`` messages and
``read_ahead_bytes``; the next read starts when half of that is used up. Commits are batched:
one at a time, sent once ``commit_every`` messages are waiting or the oldest waited
``commit_interval``, and always before a handoff. With one message at a time (``strict``, or
``concurrency = 1``) the loop calls the handler itself, without a task and a wait per message,
and takes in reads and commits between messages; a timer starts a due commit while a slow
handler runs, so a slow message never holds back the commit of those before it.

Every commit is a compare-and-set on the cursor (``expect`` = the cursor this owner committed
last). ``VersionMismatch`` means someone else moved the cursor, i.e. an admin replay: the owner
lets in-flight deliveries finish, drops what it read ahead and continues from the store's
cursor. An idle owner checks the cursor after every empty long poll, so a replay is picked up
within ``long_poll`` seconds even when nothing is being committed. (If the commit's outcome was
unknown and it did land, the re-read cursor equals the target: that counts as success.)

**Failures** are :mod:`phxq.consumer.delivery`'s: retries with backoff, then the dead-letter
topic, or (``on_failure = "block"``) the pair stops: it commits what precedes the message, keeps
its lock and waits until ``phxq admin resume`` (retry the message) or ``phxq admin replay``
(continue from the new cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from phxq import metrics
from phxq.client import Client, Message
from phxq.consumer.assign import Pair, pair_lock_name
from phxq.consumer.delivery import Deliverer, Result, wait_event
from phxq.consumer.group import GroupRuntime, Timings
from phxq.consumer.locking import Lease, LockApi
from phxq.consumer.ownership import CommitWaiters, IllegalTransition, Ownership, check_transition
from phxq.consumer.pair_commits import UNSET, PairCommits
from phxq.consumer.window import DeliveryWindow
from phxq.errors import LockHeld, PhxqError, StaleToken, Unavailable
from phxq.tasks import TaskScope

log = logging.getLogger("phxq.consumer")

__all__ = ["IllegalTransition", "Ownership", "PairWorker"]

FETCH_LIMIT = 512
MAX_ERROR_HEADER = 512


@dataclass(slots=True)
class _Fetched:
    messages: list[Message]
    probe: Any  # the store cursor (int or None) after an empty read; UNSET: not probed
    commit_seq: int  # commits finished when the read started (a probe is stale if it moved)


class PairWorker(PairCommits):
    """See the module docstring."""

    def __init__(
        self,
        pair: Pair,
        runtime: GroupRuntime,
        *,
        client: Client,
        locks: LockApi,
        owner: str,
        timings: Timings,
        paxos_group: int,
        rng: random.Random | None = None,
    ) -> None:
        self.pair = pair
        self.group, self.topic, self.queue = pair
        self.runtime = runtime
        self.lock_name = pair_lock_name(pair)
        self._client = client
        self._locks = locks
        self._owner = owner
        self._t = timings
        self._paxos_group = paxos_group
        self._rng = rng or random.Random()
        self._drain = asyncio.Event()
        cfg = runtime.config
        capacity = max(timings.read_ahead, cfg.concurrency * 8)
        self._window = DeliveryWindow(cfg.ordering, cfg.concurrency, capacity)
        self._messages: dict[int, Message] = {}  # read ahead, not finished yet
        self._buffered_bytes = 0  # payload bytes in _messages
        self.state = Ownership.UNOWNED
        self.token: int | None = None
        self.committed: int | None = None  # the cursor as this owner last committed / read it
        self._done_upto: int | None = None  # highest offset the cursor may move to
        self._committed_count = 0  # window.advanced as of the last commit
        self._oldest_uncommitted: float | None = None
        self._commit_seq = 0
        self._commit_retry_at = 0.0
        self._resync_to: Any = UNSET
        self._fetch_task: asyncio.Task[_Fetched] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._commit_waiters = CommitWaiters()
        self._tasks = TaskScope(f"pull {self.lock_name}", log)  # replaced by each pull loop's
        self.blocked: int | None = None
        self._unblock_seen = 0
        self._labels = (self.group, self.topic, str(self.queue))
        self._delivery = Deliverer(
            pair,
            runtime,
            client=client,
            owner=owner,
            timings=timings,
            paxos_group=paxos_group,
            rng=self._rng,
            drain=self._drain,
        )

    def __repr__(self) -> str:
        return f"PairWorker({self.lock_name}, {self.state.value})"

    def _to(self, state: Ownership) -> None:
        check_transition(self.lock_name, self.state, state)
        self.state = state

    @property
    def draining(self) -> bool:
        return self._drain.is_set()

    def drain(self) -> None:
        """Hand the pair over: finish in-flight messages, commit, release. Idempotent."""
        self._drain.set()
        if self.state is Ownership.OWNED:
            self._to(Ownership.DRAINING)

    # -------------------------------------------------------------------------- ownership

    async def run(self) -> None:
        """Own the pair until drained, the lease is lost, or an error stops it."""
        self._to(Ownership.ACQUIRING)
        try:
            while not self._drain.is_set():
                acquired = False
                try:
                    async with self._locks.hold(
                        self.lock_name, self._owner, self._t.lock_ttl
                    ) as lease:
                        acquired = True
                        self._to(Ownership.DRAINING if self._drain.is_set() else Ownership.OWNED)
                        metrics.CONSUMER_PAIRS_OWNED.labels(self.group).inc()
                        try:
                            await self._own(lease)
                        finally:
                            metrics.CONSUMER_PAIRS_OWNED.labels(self.group).dec()
                    return
                except (LockHeld, StaleToken) as exc:
                    if acquired:  # the release on the way out failed: the lease was gone already
                        log.info("%s: release after loss: %s", self.lock_name, exc.message)
                        return
                except Unavailable as exc:
                    if acquired:
                        raise
                    log.warning("%s: lock service unavailable: %s", self.lock_name, exc.message)
                await wait_event(self._drain, self._t.acquire_retry)
        finally:
            metrics.CONSUMER_LAG.labels(*self._labels).set(0)
            metrics.CONSUMER_BLOCKED.labels(*self._labels).set(0)
            self._to(Ownership.RELEASED)
            self._commit_waiters.fail(
                StaleToken(f"{self.lock_name}: released before the cursor got there")
            )

    async def _own(self, lease: Lease) -> None:
        self.token = lease.token
        log.info("%s: owned with token %d", self.lock_name, lease.token)
        # Whichever ends first stops the other (the scope cancels and awaits it on exit); the
        # loop's outcome is read below.
        async with TaskScope(self.lock_name, log) as scope:
            loop_task = scope.spawn(self._pull_loop(), name=f"pull {self.lock_name}", watched=True)
            lost = scope.spawn(lease.lost.wait(), name=f"lease {self.lock_name}", watched=True)
            done, _ = await asyncio.wait({loop_task, lost}, return_when=asyncio.FIRST_COMPLETED)
        if loop_task in done and not loop_task.cancelled():
            try:
                loop_task.result()  # re-raise what stopped the loop, if anything
            except StaleToken as exc:
                metrics.CONSUMER_LEASES_LOST.labels(self.group).inc()
                log.warning(
                    "%s: fenced by a newer owner (%s); stopped", self.lock_name, exc.message
                )
                return
            log.info("%s: handed over at cursor %s", self.lock_name, self.committed)
        else:
            metrics.CONSUMER_LEASES_LOST.labels(self.group).inc()
            log.warning(
                "%s: lease lost; stopped at once (cursor %s)", self.lock_name, self.committed
            )

    # ------------------------------------------------------------------------------ loop

    @property
    def _stopping(self) -> bool:
        """No new deliveries: handing over, resyncing after a replay, or blocked."""
        return self._drain.is_set() or self._resync_to is not UNSET or self.blocked is not None

    async def _pull_loop(self) -> None:
        self._resync(await self._client.cursor(self.group, self.topic, queue=self.queue))
        async with TaskScope(f"pull {self.lock_name}", log) as scope:
            self._tasks = scope
            await self._pull(scope)

    async def _pull(self, scope: TaskScope) -> None:
        """The loop itself; every task it starts belongs to ``scope``, which cancels and awaits
        what is left on the way out (handoff finished, loss, or error: outcomes are moot)."""
        inflight: dict[asyncio.Task[Result], int] = {}
        drain_wait = scope.spawn(self._drain.wait(), name="drain", watched=True)
        try:
            while True:
                if self._stopping and self._fetch_task is not None:
                    self._fetch_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, PhxqError):
                        await self._fetch_task  # the read is moot; a failure of it too
                    self._fetch_task = None
                if not self._stopping and not self.runtime.settings.paused:
                    if self._window.concurrency == 1:
                        await self._deliver_inline()
                    else:
                        await self._dispatch(inflight)
                self._start_background()
                if self._stopping and not inflight and self._commit_task is None:
                    if self._drain.is_set():
                        if self._done_upto == self.committed:
                            return
                        await asyncio.sleep(self._t.commit_interval)  # commit failed: retry
                        continue
                    if self._resync_to is not UNSET:
                        self._resync(self._resync_to)
                        continue
                    await self._wait_blocked()
                    continue
                waiters: set[asyncio.Future[Any]] = set(inflight)
                waiters.update(t for t in (self._fetch_task, self._commit_task) if t is not None)
                if not self._drain.is_set():
                    waiters.add(drain_wait)
                done, _ = await asyncio.wait(
                    waiters, timeout=self._timeout(), return_when=asyncio.FIRST_COMPLETED
                )
                self._reap_background()
                for task in [t for t in inflight if t in done]:
                    self._on_delivered(inflight.pop(task), task.result())
        finally:
            self._fetch_task = self._commit_task = None

    def _start_background(self) -> None:
        """Start the read-ahead and the next commit when they are due."""
        # Read ahead once the window is half empty (in messages and in bytes): one read per
        # half window, not one per finished message.
        if (
            self._fetch_task is None
            and not self._stopping
            and self._window.room * 2 >= self._window.capacity
            and self._buffered_bytes * 2 < self._t.read_ahead_bytes
        ):
            self._fetch_task = self._tasks.spawn(
                self._fetch(self._commit_task is None), name="fetch", watched=True
            )
        if (
            self._commit_task is None
            and self._resync_to is UNSET
            and self._commit_due(self._stopping)
        ):
            assert self._done_upto is not None
            self._commit_task = self._tasks.spawn(
                self._commit(self._done_upto, self._window.advanced), name="commit", watched=True
            )

    def _reap_background(self) -> None:
        """Take in a finished read-ahead or commit."""
        if self._fetch_task is not None and self._fetch_task.done():
            fetched = self._fetch_task.result()
            self._fetch_task = None
            self._on_fetched(fetched, self._commit_task is None)
        if self._commit_task is not None and self._commit_task.done():
            commit, self._commit_task = self._commit_task, None
            commit.result()  # StaleToken propagates: fenced, stop now

    async def _deliver_inline(self) -> None:
        """One message at a time (strict order, or concurrency 1): deliver right here, without a
        task and a wait per message, taking in reads and commits between messages."""
        while not self._stopping and not self.runtime.settings.paused:
            offset = self._window.next_ready()
            if offset is None:
                return
            message = self._messages[offset]
            delay = self.runtime.limiter.reserve(len(message.payload))
            if delay > 0 and await wait_event(self._drain, delay):
                return  # handing over: the slot stays unfinished, so the cursor stops before it
            # A slow handler must not hold back the commit of what finished before it.
            timer = None
            if self._done_upto != self.committed:
                loop = asyncio.get_running_loop()
                timer = loop.call_later(self._timeout() or 0.0, self._start_background)
            try:
                result = await self._delivery.deliver(message, self.token or 0)
            finally:
                if timer is not None:
                    timer.cancel()
            self._on_delivered(offset, result)
            self._reap_background()
            self._start_background()
            await asyncio.sleep(0)  # a handler that never suspends must not starve the rest

    def _timeout(self) -> float | None:
        timeouts = []
        if self._done_upto != self.committed:
            start = self._oldest_uncommitted or time.monotonic()
            due = max(start + self._t.commit_interval, self._commit_retry_at)
            timeouts.append(max(0.0, due - time.monotonic()))
        if self.runtime.settings.paused:
            timeouts.append(self._t.settings_poll)
        return min(timeouts) if timeouts else None

    async def _dispatch(self, inflight: dict[asyncio.Task[Result], int]) -> None:
        while (offset := self._window.next_ready()) is not None:
            message = self._messages[offset]
            delay = self.runtime.limiter.reserve(len(message.payload))
            if delay > 0 and await wait_event(self._drain, delay):
                return  # handing over: the slot stays unfinished, so the cursor stops before it
            task = self._tasks.spawn(
                self._delivery.deliver(message, self.token or 0), name="deliver", watched=True
            )
            inflight[task] = offset

    async def _fetch(self, commit_idle: bool) -> _Fetched:
        seq = self._commit_seq
        after = self._window.last_added if self._window.last_added is not None else self.committed
        limit = min(self._window.room, FETCH_LIMIT)
        probe = UNSET
        try:
            messages = await self._client.dequeue(
                None, self.topic, queue=self.queue, after=after, limit=limit, wait=self._t.long_poll
            )
            if not messages and commit_idle:
                probe = await self._client.cursor(self.group, self.topic, queue=self.queue)
        except Unavailable as exc:
            # The client already retried for its retry_timeout; keep the lock and try again.
            log.warning("%s: read failed: %s", self.lock_name, exc.message)
            await asyncio.sleep(self._t.long_poll)
            messages = []
        return _Fetched(messages, probe, seq)

    def _on_fetched(self, fetched: _Fetched, commit_idle: bool) -> None:
        if fetched.messages:
            self._window.add((m.offset, m.key) for m in fetched.messages)
            self._messages.update((m.offset, m) for m in fetched.messages)
            self._buffered_bytes += sum(len(m.payload) for m in fetched.messages)
            return
        if (
            fetched.probe is not UNSET
            and commit_idle
            and fetched.commit_seq == self._commit_seq
            and self._done_upto == self.committed
            and fetched.probe != self.committed
        ):
            log.info(
                "%s: cursor moved to %s (replay); continuing from there",
                self.lock_name,
                fetched.probe,
            )
            self._resync_to = fetched.probe

    def _on_delivered(self, offset: int, result: Result) -> None:
        if result is Result.BLOCKED:
            self.blocked = offset
            self._unblock_seen = self.runtime.settings.unblock
            metrics.CONSUMER_BLOCKED.labels(*self._labels).set(1)
            log.error(
                "%s: offset %d failed %d attempts; the queue is BLOCKED (on_failure=block) until "
                "`phxq admin resume` or `phxq admin replay`",
                self.lock_name,
                offset,
                self.runtime.config.max_attempts,
            )
            return
        if result is Result.ABANDONED:
            return
        self._window.finish(offset)
        finished = self._messages.pop(offset, None)
        if finished is not None:
            self._buffered_bytes -= len(finished.payload)
        advanced = self._window.advance()
        if advanced is not None:
            if self._oldest_uncommitted is None:
                self._oldest_uncommitted = time.monotonic()
            self._done_upto = advanced

    async def _wait_blocked(self) -> None:
        """Blocked: wait for `admin resume` (retry the message) or a replay (new cursor)."""
        while not self._drain.is_set():
            if self.runtime.settings.unblock != self._unblock_seen:
                log.info("%s: resumed; retrying offset %s", self.lock_name, self.blocked)
                self._resync(self.committed)
                return
            current = await self._client.cursor(self.group, self.topic, queue=self.queue)
            if current != self.committed:
                log.info("%s: cursor moved to %s; unblocked", self.lock_name, current)
                self._resync(current)
                return
            await wait_event(self._drain, self._t.blocked_probe)
