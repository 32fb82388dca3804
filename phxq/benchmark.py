"""Enqueue benchmarks users run against a live cluster (``phxq bench``) and ``bench/`` uses.

Public API::

    latency(addresses, *, topic, count, warmup, size, cpu=None) -> Result      # phxq, sequential
    throughput(addresses, *, topic, outstanding, seconds, size, batching, warmup, cpu=None)
    run_latency(send, *, count, warmup, size, cpu=None) -> Result              # any system
    run_throughput(send, *, outstanding, seconds, size, warmup, cpu=None) -> Result
    Send = Callable[[bytes, str], Awaitable[object]]   # (payload, key) -> resolves on the ack
    CpuMeter(pids: dict[str, int])                      # CPU seconds per process (+ "client")
    environment(data_dir=None) -> dict                  # commit, machine, kernel, Python, loop
    filesystem_type(path) -> str                        # "ext4", "tmpfs", ... (/proc/mounts)
    markdown_table(runs) -> str                         # one row per run

The workload loops (``run_*``) take a ``send`` coroutine function so phxq and the peer (NATS
JetStream, ``bench/nats_peer.py``) are driven by exactly the same code and timed the same way:
on the client side with ``time.perf_counter`` from the call to the ack, so a figure includes the
client library, the network round trips and the majority's fdatasync.

- Latency: ``warmup`` enqueues that are not recorded, then ``count`` sequential enqueues (one
  outstanding; fewer if ``max_seconds`` runs out first) into an HDR histogram (1 us .. 60 s,
  3 significant digits).
- Throughput: ``outstanding`` producers, each with one enqueue in flight, run for ``warmup``
  seconds unrecorded, then for ``seconds``; an enqueue counts when its ack arrives inside the
  measured window, so msgs/s = acks in the window / ``seconds``. Producers stop issuing at the
  window's end and the tail drains unrecorded.
- A failed enqueue is counted in ``errors`` (and not in the histogram); the run goes on.
- ``cpu``: a :class:`CpuMeter` is read at the start and end of the measured window; the result
  holds the CPU seconds (user + system) each process used in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phxq.client import Client
from phxq.errors import BadArgument

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 99.0, 99.9)

Send = Callable[[bytes, str], Awaitable[object]]


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    msgs_per_s: float
    latency_ms: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    system: str = "phxq"
    errors: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        lat = " ".join(f"{k}={v:.3f}" for k, v in self.latency_ms.items())
        extra = f"; {self.errors} errors" if self.errors else ""
        if self.cpu_s:
            extra += f"; cpu s {' '.join(f'{k}={v:.2f}' for k, v in self.cpu_s.items())}"
        return (
            f"{self.system} {self.name}: {self.messages} msgs in {self.seconds:.2f}s = "
            f"{self.msgs_per_s:,.0f} msg/s; latency ms {lat}{extra}"
        )


# ------------------------------------------------------------------------------------ CPU


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc``; ``None``
    when it cannot be read (process gone, not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _clock_ticks()


class CpuMeter:
    """CPU seconds per named process; ``"client"`` is always this process (the load driver)."""

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.pids = dict(pids or {})

    def snapshot(self) -> dict[str, float]:
        t = os.times()
        out = {"client": t.user + t.system}
        for name, pid in self.pids.items():
            value = process_cpu_seconds(pid)
            if value is not None:
                out[name] = value
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before[k], 3) for k in after if k in before}


# -------------------------------------------------------------------------------- workloads


def _histogram() -> HdrHistogram:
    try:
        from hdrh.histogram import HdrHistogram
    except ImportError:
        raise BadArgument(
            "benchmarks need the bench extra: pip install 'phxq[bench]' (hdrhistogram)"
        ) from None
    # microseconds, 1 us .. 60 s, 3 significant digits
    return HdrHistogram(1, 60_000_000, 3)


def _summary(hist: HdrHistogram) -> dict[str, float]:
    if hist.get_total_count() == 0:
        return {**{f"p{p:g}": 0.0 for p in PERCENTILES}, "max": 0.0, "mean": 0.0}
    out = {f"p{p:g}": hist.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max"] = hist.get_max_value() / 1000
    out["mean"] = round(hist.get_mean_value() / 1000, 4)
    return out


def _keys(n: int) -> list[str]:
    return [f"k{i}" for i in range(n)]


async def run_latency(
    send: Send,
    *,
    count: int = 5000,
    warmup: int = 500,
    size: int = 100,
    cpu: CpuMeter | None = None,
    system: str = "phxq",
    max_seconds: float | None = None,
) -> Result:
    """Sequential sends of ``size``-byte payloads, one outstanding at a time; stops early (with
    fewer than ``count``) once the measured part has run ``max_seconds``."""
    payload = os.urandom(size)
    keys = _keys(64)
    hist = _histogram()
    errors = 0
    for i in range(warmup):
        await send(payload, keys[i % 64])
    perf = time.perf_counter
    before = cpu.snapshot() if cpu else {}
    t_start = perf()
    stop_at = t_start + max_seconds if max_seconds else float("inf")
    sent = 0
    for i in range(count):
        t0 = perf()
        if t0 >= stop_at:
            break
        sent += 1
        try:
            await send(payload, keys[i % 64])
        except Exception:  # counted and reported: a benchmark measures, it does not stop
            errors += 1
            continue
        hist.record_value(max(1, int((perf() - t0) * 1e6)))
    elapsed = perf() - t_start
    cpu_s = CpuMeter.delta(before, cpu.snapshot()) if cpu else {}
    done = sent - errors
    params: dict[str, Any] = {"size": size, "warmup": warmup, "outstanding": 1}
    if max_seconds:
        params["max_seconds"] = max_seconds
    return Result(
        "latency",
        done,
        elapsed,
        done / elapsed,
        _summary(hist),
        params,
        system=system,
        errors=errors,
        cpu_s=cpu_s,
    )


async def run_throughput(
    send: Send,
    *,
    outstanding: int = 64,
    seconds: float = 5.0,
    size: int = 100,
    warmup: float = 1.0,
    cpu: CpuMeter | None = None,
    system: str = "phxq",
    params: dict[str, Any] | None = None,
) -> Result:
    """``outstanding`` concurrent producers for ``seconds`` (after ``warmup`` seconds)."""
    payload = os.urandom(size)
    keys = _keys(1024)
    hist = _histogram()
    perf = time.perf_counter
    t_start = perf()
    window_start = t_start + warmup
    window_end = window_start + seconds
    done = errors = 0

    async def producer(n: int) -> None:
        nonlocal done, errors
        i = n * 7
        while True:
            t0 = perf()
            if t0 >= window_end:
                return
            i += 1
            try:
                await send(payload, keys[i % 1024])
            except Exception:  # counted and reported: a benchmark measures, it does not stop
                if window_start <= perf() <= window_end:
                    errors += 1
                continue
            t1 = perf()
            if window_start <= t1 <= window_end:
                hist.record_value(max(1, int((t1 - t0) * 1e6)))
                done += 1

    async def meter() -> dict[str, float]:
        if cpu is None:
            return {}
        await asyncio.sleep(max(0.0, window_start - perf()))
        before = cpu.snapshot()
        await asyncio.sleep(max(0.0, window_end - perf()))
        return CpuMeter.delta(before, cpu.snapshot())

    results = await asyncio.gather(meter(), *(producer(n) for n in range(outstanding)))
    cpu_s = results[0] or {}
    return Result(
        "throughput",
        done,
        seconds,
        done / seconds,
        _summary(hist),
        {"size": size, "outstanding": outstanding, **(params or {})},
        system=system,
        errors=errors,
        cpu_s=cpu_s,
    )


def phxq_sender(client: Client, topic: str) -> Send:
    async def send(payload: bytes, key: str) -> object:
        return await client.enqueue(topic, payload, key=key)

    return send


async def latency(
    addresses: list[str],
    *,
    topic: str = "orders",
    count: int = 5000,
    warmup: int = 500,
    size: int = 100,
    cpu: CpuMeter | None = None,
    credentials: dict[str, Any] | None = None,
) -> Result:
    """Sequential phxq enqueues of ``size``-byte messages, one outstanding at a time.
    ``credentials``: ``phxq.Client`` ``token``/``ca`` for a secured cluster."""
    async with Client(addresses, **(credentials or {})) as client:
        return await run_latency(
            phxq_sender(client, topic), count=count, warmup=warmup, size=size, cpu=cpu
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
    cpu: CpuMeter | None = None,
    window: int | None = None,
    credentials: dict[str, Any] | None = None,
) -> Result:
    """``outstanding`` concurrent phxq producers for ``seconds`` (after ``warmup`` seconds);
    ``window``: the client's requests in flight per group (its default if None)."""
    extra: dict[str, Any] = {} if window is None else {"window": window}
    extra |= credentials or {}
    async with Client(addresses, batching=batching, **extra) as client:
        return await run_throughput(
            phxq_sender(client, topic),
            outstanding=outstanding,
            seconds=seconds,
            size=size,
            warmup=warmup,
            cpu=cpu,
            params={"batching": batching},
        )


# ------------------------------------------------------------------------------ environment


def _git_commit() -> str:
    """The commit of the phxq source tree in use (``-dirty`` with uncommitted changes to tracked
    files); ``unknown`` for an installed copy outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=here,
        )
    except OSError:
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    with contextlib.suppress(OSError):
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
            cwd=here,
        ).stdout.strip()
        if dirty and commit != "unknown":
            commit += "-dirty"
    return commit


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def filesystem_type(path: Path) -> str:
    """The filesystem type ``path`` lives on (``/proc/mounts``, longest matching mount point)."""
    best, fstype = "", "unknown"
    with contextlib.suppress(OSError):
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1]
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                best
            ):
                best, fstype = mount, parts[2]
    return fstype


def environment(data_dir: Path | None = None) -> dict[str, Any]:
    """What the figures were measured on: commit, machine, kernel, Python, event loop."""
    from phxq.net.loop import uvloop_available

    env: dict[str, Any] = {
        "commit": _git_commit(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "event_loop": "uvloop" if uvloop_available() else "asyncio",
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else [],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if data_dir is not None:
        env["data_fs"] = filesystem_type(data_dir)
    return env


# ---------------------------------------------------------------------------------- tables


def _fmt_params(run: dict[str, Any]) -> tuple[str, str, str, str]:
    p = run.get("params", {})
    batching = p.get("batching")
    return (
        str(p.get("groups", "-")),
        str(p.get("size", "-")),
        str(p.get("outstanding", "-")),
        "-" if batching is None else ("yes" if batching else "no"),
    )


def markdown_table(runs: Iterable[dict[str, Any]]) -> str:
    """One markdown row per run (``Result.to_json()`` dicts)."""
    lines = [
        "| system | run | groups | size B | outstanding | batching | msgs/s | p50 ms | p90 ms "
        "| p99 ms | p99.9 ms | max ms | errors | CPU us/msg | CPU s (per process) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        lat = r["latency_ms"]
        groups, size, outstanding, batching = _fmt_params(r)
        cpu_s = r.get("cpu_s", {})
        cpu = " ".join(f"{k}={v:.2f}" for k, v in cpu_s.items())
        per_msg = (
            f"{sum(cpu_s.values()) / r['messages'] * 1e6:,.0f}" if cpu_s and r["messages"] else "-"
        )
        lines.append(
            f"| {r.get('system', 'phxq')} | {r['name']} | {groups} | {size} | {outstanding} "
            f"| {batching} | {r['msgs_per_s']:,.0f} | {lat['p50']:.3f} | {lat['p90']:.3f} "
            f"| {lat['p99']:.3f} | {lat['p99.9']:.3f} | {lat['max']:.3f} "
            f"| {r.get('errors', 0)} | {per_msg} | {cpu} |"
        )
    return "\n".join(lines)
