"""The cursor commits of a :class:`~phxq.consumer.pair.PairWorker` (see its module docstring):
batched compare-and-set commits carrying the pair lock's fencing token, a replay noticed as a
``VersionMismatch``, and the waiters of :meth:`PairCommits.committed_past`."""

from __future__ import annotations

import logging
import time
from typing import Any

from phxq import metrics
from phxq.client import Client, Message
from phxq.consumer.group import Timings
from phxq.consumer.ownership import CommitWaiters, Ownership
from phxq.consumer.window import DeliveryWindow
from phxq.errors import BadArgument, StaleToken, Unavailable, VersionMismatch

log = logging.getLogger("phxq.consumer")

__all__ = ["UNSET", "PairCommits"]

# "Nothing here": no resync pending, or a read that did not probe the cursor.
UNSET: Any = object()


class PairCommits:
    """The commit part of :class:`~phxq.consumer.pair.PairWorker` (its fields live there)."""

    group: str
    topic: str
    queue: int
    lock_name: str
    state: Ownership
    token: int | None
    committed: int | None
    blocked: int | None
    _client: Client
    _t: Timings
    _window: DeliveryWindow
    _messages: dict[int, Message]
    _buffered_bytes: int
    _done_upto: int | None
    _committed_count: int
    _oldest_uncommitted: float | None
    _commit_seq: int
    _commit_retry_at: float
    _resync_to: Any
    _commit_waiters: CommitWaiters
    _labels: tuple[str, str, str]

    @property
    def _uncommitted(self) -> int:
        """Finished messages the cursor has not been committed past yet."""
        return self._window.advanced - self._committed_count

    # ---------------------------------------------------------------------------- commits

    def _commit_due(self, stopping: bool) -> bool:
        if self._done_upto is None or self._done_upto == self.committed:
            return False
        now = time.monotonic()
        if now < self._commit_retry_at:
            return False
        if stopping or self._uncommitted >= self._t.commit_every:
            return True
        start = self._oldest_uncommitted or now
        return now - start >= self._t.commit_interval

    async def _commit(self, target: int, count: int) -> None:
        assert self.token is not None
        try:
            await self._client.commit(
                self.group,
                self.topic,
                queue=self.queue,
                offset=target,
                token=self.token,
                expect=self.committed,
            )
        except VersionMismatch:
            try:
                current = await self._client.cursor(self.group, self.topic, queue=self.queue)
            except Unavailable as exc:
                log.warning("%s: reading the cursor failed: %s", self.lock_name, exc.message)
                self._commit_retry_at = time.monotonic() + max(self._t.commit_interval, 0.2)
                return
            if current != target:
                log.info(
                    "%s: cursor moved to %s (replay); continuing from there",
                    self.lock_name,
                    current,
                )
                self._resync_to = current
                return
        except (Unavailable, BadArgument) as exc:
            # Unavailable: no store master right now; BadArgument: the store refused the target
            # (e.g. its log was truncated under us). Either way: retry later from what we hold.
            log.warning("%s: commit of %d failed: %s", self.lock_name, target, exc.message)
            self._commit_retry_at = time.monotonic() + max(self._t.commit_interval, 0.2)
            return
        self._commit_seq += 1
        self.committed = target
        self._commit_waiters.wake(self.committed)
        self._committed_count = max(self._committed_count, count)
        self._oldest_uncommitted = time.monotonic() if self._uncommitted else None

    async def committed_past(self, offset: int) -> None:
        """Return once this owner's cursor is at ``offset`` or beyond (a commit carrying its
        fencing token); ``StaleToken`` if it releases the pair first (handoff or lost lease)."""
        if self.committed is not None and self.committed >= offset:
            return
        if self.state is Ownership.RELEASED:
            raise StaleToken(f"{self.lock_name}: released before the cursor got there")
        await self._commit_waiters.wait(offset)

    def _resync(self, cursor: int | None) -> None:
        """Continue from ``cursor`` (the store's): forget everything read ahead."""
        self.committed = self._done_upto = cursor
        self._window.clear()
        self._messages.clear()
        self._buffered_bytes = 0
        self._committed_count = self._window.advanced
        self._oldest_uncommitted = None
        self._resync_to = UNSET
        self._commit_waiters.wake(self.committed)
        if self.blocked is not None:
            self.blocked = None
            metrics.CONSUMER_BLOCKED.labels(*self._labels).set(0)
