"""Per-consumer-group runtime state shared by the pairs this consumer owns, and the timings.

Public API::

    Timings(...)                      # every interval the consumer tier uses, in seconds
    GroupLimiter(rate, bytes_rate)    # the group's token buckets, scaled to this consumer's share
    .configure(rate, bytes_rate, share)
    .reserve(nbytes) -> float         # seconds to wait before delivering a message of nbytes
    GroupRuntime(config, handler, settings)   # config + handler + limiter + runtime settings
    .apply(settings, share)

**Splitting a group's rate limit.** A group's limit is for the whole group, across every
consumer. Every consumer computes the same assignment, so each knows which fraction of the
group's pairs it owns (``share``); its buckets run at ``rate * share``. The sum over consumers
is the group's rate whenever the assignment is settled; during a handoff it may briefly be
off by one pair's share. Bursts are small (0.1 s worth of tokens, at least one message) so the
measured rate follows the limit closely.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from phxq.config import ConsumerGroupConfig
from phxq.consumer.handlers import Handler
from phxq.consumer.pacing import TokenBucket
from phxq.consumer.settings import GroupSettings

BURST_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Timings:
    """Intervals of the consumer tier (seconds). Tests shorten some of them."""

    heartbeat: float = 1.0  # membership re-put
    member_ttl: float = 3.0  # a member vanishes this long after its last heartbeat
    lock_ttl: float = 3.0  # pair lease; a SIGKILLed owner's pairs free up after this
    rebalance: float = 0.5  # recompute the assignment
    settings_poll: float = 0.5  # re-read rate limits / pause from the KV
    acquire_retry: float = 0.25  # retry a held pair lock
    long_poll: float = 0.5  # dequeue wait; also how often an idle pair checks for a replay
    blocked_probe: float = 1.0  # how often a blocked pair checks for resume / replay
    commit_interval: float = 0.05  # commit acks at most this late...
    commit_every: int = 256  # ...or as soon as this many are uncommitted
    backoff_base: float = 0.2  # first retry after 0.1..0.2 s
    backoff_cap: float = 10.0  # retries at most 5..10 s apart
    lag_interval: float = 5.0  # refresh phxq_consumer_lag_messages from the stores
    read_ahead: int = 1024  # messages read ahead of the handler per pair...
    read_ahead_bytes: int = 4 << 20  # ...and payload bytes (a read may overshoot by one batch)


class GroupLimiter:
    """A consumer group's message and byte buckets at this consumer's share of the rate."""

    def __init__(
        self,
        rate: float | None,
        bytes_rate: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        self._messages = TokenBucket(None, 1, now)
        self._bytes = TokenBucket(None, 1, now)
        self._setting: tuple[float | None, int | None, float] | None = None
        self.rate, self.bytes_rate, self.share = rate, bytes_rate, 1.0
        self.configure(rate, bytes_rate, 1.0)

    def configure(self, rate: float | None, bytes_rate: int | None, share: float) -> None:
        """Set the group's limits and this consumer's share of them (0 < share <= 1)."""
        share = min(max(share, 1e-6), 1.0)
        if self._setting == (rate, bytes_rate, share):
            return
        self._setting = (rate, bytes_rate, share)
        now = self._clock()
        self.rate, self.bytes_rate, self.share = rate, bytes_rate, share
        for bucket, limit in ((self._messages, rate), (self._bytes, bytes_rate)):
            scaled = None if limit is None else limit * share
            burst = 1.0 if scaled is None else max(1.0, scaled * BURST_SECONDS)
            bucket.set_rate(scaled, burst, now)

    @property
    def effective_rate(self) -> float | None:
        return self._messages.rate

    def reserve(self, nbytes: int) -> float:
        now = self._clock()
        return max(self._messages.reserve(1, now), self._bytes.reserve(nbytes, now))


class GroupRuntime:
    """What every pair of one consumer group shares inside one consumer daemon."""

    def __init__(
        self, config: ConsumerGroupConfig, handler: Handler, settings: GroupSettings
    ) -> None:
        self.config = config
        self.handler = handler
        self.settings = settings
        self.limiter = GroupLimiter(settings.rate_limit, settings.rate_limit_bytes)

    @property
    def name(self) -> str:
        return self.config.name

    def apply(self, settings: GroupSettings, share: float) -> None:
        self.settings = settings
        self.limiter.configure(settings.rate_limit, settings.rate_limit_bytes, share)
