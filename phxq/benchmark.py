"""Enqueue benchmarks users run against a live cluster (``phxq bench``) and ``bench/`` uses.

- :func:`latency`: sequential enqueues, one outstanding, HDR histogram, warm-up excluded.
- :func:`throughput`: ``outstanding`` concurrent enqueuers for ``seconds``; msgs/s and latency.

Both time on the client side (``time.perf_counter``) from the call to the ack, so the figure
includes the client library, the network round trips and the majority's fdatasync.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from phxq.client import Client

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    msgs_per_s: float
    latency_ms: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        lat = " ".join(f"{k}={v:.3f}" for k, v in self.latency_ms.items())
        return f"{self.name}: {self.messages} msgs in {self.seconds:.2f}s = {self.msgs_per_s:,.0f} msg/s; latency ms {lat}"


def _histogram() -> HdrHistogram:
    # microseconds, 1 us .. 60 s, 3 significant digits
    return HdrHistogram(1, 60_000_000, 3)


def _summary(hist: HdrHistogram) -> dict[str, float]:
    out = {f"p{p:g}": hist.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max"] = hist.get_max_value() / 1000
    out["mean"] = hist.get_mean_value() / 1000
    return out


async def latency(
    addresses: list[str],
    *,
    topic: str = "orders",
    count: int = 5000,
    warmup: int = 500,
    size: int = 100,
) -> Result:
    """Sequential enqueues of ``size``-byte messages, one outstanding at a time."""
    payload = os.urandom(size)
    hist = _histogram()
    async with Client(addresses) as client:
        for i in range(warmup):
            await client.enqueue(topic, payload, key=f"k{i % 64}")
        t_start = time.perf_counter()
        for i in range(count):
            t0 = time.perf_counter()
            await client.enqueue(topic, payload, key=f"k{i % 64}")
            hist.record_value(max(1, int((time.perf_counter() - t0) * 1e6)))
        elapsed = time.perf_counter() - t_start
    return Result(
        "latency",
        count,
        elapsed,
        count / elapsed,
        _summary(hist),
        {"size": size, "warmup": warmup, "outstanding": 1},
    )


async def throughput(
    addresses: list[str],
    *,
    topic: str = "orders",
    outstanding: int = 64,
    seconds: float = 5.0,
    size: int = 100,
    batching: bool = True,
    warmup: float = 1.0,
) -> Result:
    """``outstanding`` concurrent producers for ``seconds`` (after ``warmup`` seconds)."""
    payload = os.urandom(size)
    hist = _histogram()
    done = 0
    measuring = False
    async with Client(addresses, batching=batching) as client:
        stop_at = time.perf_counter() + warmup + seconds

        async def producer(n: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await client.enqueue(topic, payload, key=f"k{n}-{i % 16}")
                if measuring:
                    hist.record_value(max(1, int((time.perf_counter() - t0) * 1e6)))
                    done += 1
                i += 1

        async def start_measuring() -> float:
            nonlocal measuring
            await asyncio.sleep(warmup)
            measuring = True
            return time.perf_counter()

        results = await asyncio.gather(
            start_measuring(), *(producer(n) for n in range(outstanding))
        )
        elapsed = time.perf_counter() - results[0]
    return Result(
        "throughput",
        done,
        elapsed,
        done / elapsed,
        _summary(hist),
        {"size": size, "outstanding": outstanding, "batching": batching},
    )


def environment() -> dict[str, Any]:
    """What the figures were measured on: commit, machine, Python."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit or "unknown",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
