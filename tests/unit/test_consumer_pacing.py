"""Token buckets (rate limits) and retry backoff, driven by an explicit clock."""

from __future__ import annotations

import random

import pytest

from phxq.consumer.group import GroupLimiter
from phxq.consumer.pacing import TokenBucket, backoff_delay
from phxq.errors import BadArgument


def simulate(bucket: TokenBucket, count: int, size: float = 1, start: float = 0.0) -> float:
    """Take ``count`` reservations back to back, sleeping as told; the time the last starts."""
    now = start
    for _ in range(count):
        now += bucket.reserve(size, now)
    return now


def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    bucket = TokenBucket(50.0, burst=5, now=0.0)
    assert [bucket.reserve(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.reserve(1, 0.0) == pytest.approx(0.02)


@pytest.mark.parametrize("rate", [1.0, 50.0, 1234.5])
def test_long_run_rate_is_the_configured_rate(rate: float) -> None:
    bucket = TokenBucket(rate, burst=max(1.0, rate / 10), now=0.0)
    n = 5000
    elapsed = simulate(bucket, n)
    assert (n - bucket.burst) / elapsed == pytest.approx(rate, rel=1e-6)


def test_a_request_larger_than_the_burst_passes_after_paying_its_debt() -> None:
    bucket = TokenBucket(100.0, burst=10, now=0.0)
    assert bucket.reserve(50, 0.0) == pytest.approx(0.4)  # takes the 10 tokens, owes 40
    assert bucket.tokens(0.0) == pytest.approx(-40)
    assert bucket.reserve(1, 0.0) == pytest.approx(0.41)


def test_idle_time_earns_at_most_one_burst() -> None:
    bucket = TokenBucket(10.0, burst=2, now=0.0)
    assert bucket.tokens(1000.0) == 2
    assert bucket.reserve(3, 1000.0) == pytest.approx(0.1)


def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(None, burst=1, now=0.0)
    assert all(bucket.reserve(1e9, 0.0) == 0.0 for _ in range(100))


def test_raising_the_rate_takes_effect_at_once() -> None:
    bucket = TokenBucket(10.0, burst=1, now=0.0)
    now = simulate(bucket, 11)
    assert now == pytest.approx(1.0)
    bucket.set_rate(1000.0, burst=1, now=now)
    later = simulate(bucket, 1001, start=now)
    assert later - now == pytest.approx(1.0, abs=0.01)


def test_clock_stepping_back_neither_earns_nor_loses() -> None:
    bucket = TokenBucket(10.0, burst=1, now=5.0)
    bucket.reserve(1, 5.0)
    assert bucket.tokens(4.0) == 0
    assert bucket.reserve(1, 4.0) == pytest.approx(0.1)


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan"), "10", True])
def test_bad_rates_are_refused(rate: object) -> None:
    with pytest.raises(BadArgument):
        TokenBucket(rate, burst=1, now=0.0)  # type: ignore[arg-type]


def test_group_limiter_runs_at_this_consumers_share() -> None:
    now = [0.0]
    limiter = GroupLimiter(100.0, None, clock=lambda: now[0])
    limiter.configure(100.0, None, share=0.25)
    assert limiter.effective_rate == pytest.approx(25.0)
    for _ in range(1000):
        now[0] += limiter.reserve(100)
    assert 1000 / now[0] == pytest.approx(25.0, rel=0.01)


def test_group_limiter_bytes_bucket_limits_large_messages() -> None:
    now = [0.0]
    limiter = GroupLimiter(None, 10_000, clock=lambda: now[0])
    for _ in range(100):
        now[0] += limiter.reserve(1000)
    assert 100 * 1000 / now[0] == pytest.approx(10_000, rel=0.02)


def test_backoff_grows_exponentially_up_to_the_cap_with_half_jitter() -> None:
    lows = [backoff_delay(a, base=0.1, cap=5.0, jitter=0.0) for a in range(1, 10)]
    highs = [backoff_delay(a, base=0.1, cap=5.0, jitter=0.999999) for a in range(1, 10)]
    assert lows[:6] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    assert lows[-1] == pytest.approx(2.5) and highs[-1] == pytest.approx(5.0)
    assert all(lo < hi for lo, hi in zip(lows, highs, strict=True))
    assert backoff_delay(5000, base=0.1, cap=5.0, jitter=0.5) == pytest.approx(3.75)


def test_backoff_jitter_spreads_retries() -> None:
    rng = random.Random(3)
    delays = {round(backoff_delay(4, base=0.1, cap=5.0, jitter=rng.random()), 4) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 0.4 and max(delays) < 0.8


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_backoff_rejects_bad_input(attempt: int, jitter: float) -> None:
    with pytest.raises(BadArgument):
        backoff_delay(attempt, base=0.1, cap=1.0, jitter=jitter)
