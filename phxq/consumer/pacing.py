"""Pacing: token buckets for rate limits and the retry backoff. Pure: time and randomness are
passed in (STYLE.md §4), so the tests drive them exactly.

Public API::

    TokenBucket(rate: float | None, burst: float, now: float)
    .reserve(amount, now) -> float       # seconds the caller must wait before going ahead
    .set_rate(rate, burst, now)          # runtime change (admin limit); keeps earned tokens
    .rate, .burst, .tokens(now)

    backoff_delay(attempt, *, base, cap, jitter) -> float   # attempt >= 1, jitter in [0, 1)

**Token bucket (reservation style).** ``reserve(n)`` takes ``n`` tokens at once, even when that
drives the balance below zero, and answers how long until the balance is back at zero: the
caller sleeps that long and proceeds. So callers are served in call order, the long-run rate is
exactly ``rate`` whatever the request sizes (a message larger than the burst still passes, it
just pays its debt first), and a burst of ``burst`` tokens may go at once after an idle spell.
``rate=None`` means unlimited (never waits). Rates must be > 0: pausing is a separate switch.

**Backoff.** Exponential with "equal jitter": ``d = min(cap, base * 2**(attempt-1))``, then a
uniform pick in ``[d/2, d)``. Half the delay is guaranteed (retries do spread out), half is
random (failing consumers do not retry in lock-step).
"""

from __future__ import annotations

from phxq import validate
from phxq.errors import BadArgument


def _check_rate(rate: float | None) -> float | None:
    if rate is None:
        return None
    return validate.number(rate, "rate", above=0, unit="per second (use pause to stop delivery)")


class TokenBucket:
    """A reservation-style token bucket (see the module docstring)."""

    def __init__(self, rate: float | None, burst: float, now: float) -> None:
        self.rate = _check_rate(rate)
        self.burst = max(float(burst), 1.0)
        self._tokens = self.burst
        self._at = now

    def _refill(self, now: float) -> None:
        if self.rate is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)  # a clock that steps back earns nothing, loses nothing

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens; the seconds to wait before using them (0: go now)."""
        if amount < 0:
            raise BadArgument(f"cannot reserve a negative amount ({amount})")
        if self.rate is None:
            return 0.0
        self._refill(now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def set_rate(self, rate: float | None, burst: float, now: float) -> None:
        """Change the rate from ``now`` on; tokens earned so far stay (capped by the new burst),
        a debt stays and is paid at the new rate."""
        self._refill(now)
        self.rate = _check_rate(rate)
        self.burst = max(float(burst), 1.0)
        self._tokens = min(self._tokens, self.burst)


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first failure)."""
    if attempt < 1:
        raise BadArgument(f"attempt numbers start at 1, got {attempt}")
    if not 0.0 <= jitter < 1.0:
        raise BadArgument(f"jitter must be in [0, 1), got {jitter}")
    # 2**attempt overflows a float near attempt 1024; the cap is reached long before.
    delay = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return delay / 2 + delay / 2 * jitter
