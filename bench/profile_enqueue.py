"""Measure (and optionally profile) enqueue through a fresh local 3-replica cluster, fsync on.

    .venv/bin/python -m bench.profile_enqueue [--count 3000] [--seconds 3] [--levels 1,16,64,256]
        [--batching both|on|off] [--groups 16] [--loop uvloop|asyncio]
        [--pyspy DIR] [--pyspy-rate 250] [--pyspy-node 1] [--pyspy-gil] [--no-latency]

Starts real store processes on free 127.0.0.1 ports in a temporary directory and runs
``phxq.benchmark.latency`` (sequential) and ``phxq.benchmark.throughput`` at each level.
With ``--pyspy DIR`` it records a py-spy profile (raw collapsed stacks) of one store process
(``--pyspy-node``, default 1: the preferred master of groups 0, 3, 6, ...) over each run and
prints its top frames (self and total); the raw files stay in DIR for flame graphs.
Prints one line per run with, per store process: CPU used (% of one core), CPU ms per acked
message, and from its metrics endpoint fdatasyncs and chosen instances per acked message.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from phxq import benchmark
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config


def _run(coro: Coroutine[Any, Any, Any], loop: str) -> Any:
    if loop == "uvloop":
        from phxq.net.loop import run

        return run(coro)
    return asyncio.run(coro)


def _cpu_seconds(pid: int, which: str = "both") -> float:
    """CPU seconds used by ``pid`` so far: user, system or both."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]), int(fields[12])
    ticks = {"user": user, "system": system, "both": user + system}[which]
    return ticks / os.sysconf("SC_CLK_TCK")


def _scrape(addr: str) -> dict[str, float]:
    """fdatasync count and time, chosen-instance count and acked messages from a store's
    metrics."""
    wanted = {
        "phxq_fsync_latency_seconds_count": "fsyncs",
        "phxq_fsync_latency_seconds_sum": "fsync_s",
        "phxq_batch_items_count": "instances",
        "phxq_batch_items_sum": "items",
    }
    out = {"fsyncs": 0.0, "fsync_s": 0.0, "instances": 0.0, "items": 0.0, "acked": 0.0}
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[wanted[name]] += float(value)
        elif name.startswith("phxq_enqueued_messages_total{"):
            out["acked"] += float(value)
    return out


def _pyspy_start(pid: int, out: Path, rate: int, gil: bool) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("py-spy")
    cmd = [str(exe), "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)]
    cmd += ["--nonblocking", "--threads"]
    if gil:
        cmd.append("--gil")  # only samples of the thread holding the GIL: where Python CPU goes
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pyspy_stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Top frames by self and by total samples of a py-spy raw (collapsed) file."""
    self_count: collections.Counter[str] = collections.Counter()
    total_count: collections.Counter[str] = collections.Counter()
    samples = 0
    if not path.exists():
        return f"(no profile at {path})"
    for line in path.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not n_text.isdigit():
            continue
        n = int(n_text)
        samples += n
        # "func (file.py:123)" -> "func (file.py)": aggregate per function, not per line
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") else f for f in stack.split(";")]
        if frames:
            self_count[frames[-1]] += n
        for frame in set(frames):
            total_count[frame] += n
    lines = [f"{samples} samples"]
    lines.append("self:")
    for frame, n in self_count.most_common(top):
        lines.append(f"  {100 * n / samples:5.1f}%  {frame}")
    lines.append("total:")
    for frame, n in total_count.most_common(top):
        lines.append(f"  {100 * n / samples:5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--levels", default="1,16,64,256")
    ap.add_argument("--batching", choices=("both", "on", "off"), default="both")
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--pyspy", type=Path, default=None)
    ap.add_argument("--pyspy-rate", type=int, default=250)
    ap.add_argument("--pyspy-node", type=int, default=1)
    ap.add_argument("--pyspy-gil", action="store_true")
    ap.add_argument("--cluster-options", default="")
    ap.add_argument(
        "--queues", type=int, default=0, help="enqueue to a topic of this many queues (else orders)"
    )
    ap.add_argument("--window", type=int, default=None, help="client requests in flight per group")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x]
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.batching]
    with tempfile.TemporaryDirectory(prefix="phxq-prof-") as tmp:
        ports = free_ports(9)
        metrics_addrs = [f"127.0.0.1:{p}" for p in ports[6:]]
        config = write_dev_config(
            Path(tmp),
            groups=args.groups,
            store_ports=ports[:3],
            lock_ports=ports[3:6],
            metrics_ports=ports[6:],
            cluster_options=args.cluster_options,
            extra=f'[[topic]]\nname = "bench"\nqueues = {args.queues}\n' if args.queues else "",
        )
        topic = "bench" if args.queues else "orders"
        with ProcessCluster(config) as cluster:
            cluster.wait_ready(60)
            addrs = cluster.store_addresses
            pids = {
                int(node): p.popen.pid
                for (role, node), p in cluster.procs.items()
                if role == "store" and p.popen is not None
            }
            runs: list[tuple[str, Coroutine[Any, Any, Any]]] = []
            if not args.no_latency:
                runs.append(("latency", benchmark.latency(addrs, topic=topic, count=args.count)))
            for level in levels:
                for batching in modes:
                    coro = benchmark.throughput(
                        addrs,
                        topic=topic,
                        outstanding=level,
                        seconds=args.seconds,
                        batching=batching,
                        window=args.window,
                    )
                    runs.append((f"tput-{level}-{'b' if batching else 'nb'}", coro))
            for name, coro in runs:
                cpu0 = {n: _cpu_seconds(p) for n, p in pids.items()}
                sys0 = sum(_cpu_seconds(p, "system") for p in pids.values())
                m0 = [_scrape(a) for a in metrics_addrs]
                spy = None
                if args.pyspy is not None:
                    args.pyspy.mkdir(parents=True, exist_ok=True)
                    out = args.pyspy / f"{name}-node{args.pyspy_node}.txt"
                    spy = _pyspy_start(pids[args.pyspy_node], out, args.pyspy_rate, args.pyspy_gil)
                    time.sleep(0.5)
                t0 = time.monotonic()
                client0 = time.process_time()
                result = _run(coro, args.loop)
                client = time.process_time() - client0
                wall = time.monotonic() - t0
                if spy is not None:
                    _pyspy_stop(spy)
                cpu = {n: _cpu_seconds(p) - cpu0[n] for n, p in pids.items()}
                system = sum(_cpu_seconds(p, "system") for p in pids.values()) - sys0
                m1 = [_scrape(a) for a in metrics_addrs]
                d = {k: sum(b[k] - a[k] for a, b in zip(m0, m1, strict=True)) for k in m0[0]}
                acked = max(d["acked"], 1.0)
                cpu_text = " ".join(
                    f"s{n}={100 * c / wall:.0f}%/{1000 * c / acked:.2f}ms"
                    for n, c in sorted(cpu.items())
                )
                cpu_text += f" client={100 * client / wall:.0f}%/{1000 * client / acked:.2f}ms"
                print(f"{name}: {result.line()}", flush=True)
                print(
                    f"{name}: cpu (% | ms per msg) {cpu_text}; per msg: fsyncs (3 nodes) "
                    f"{d['fsyncs'] / acked:.3f} (mean {1000 * d['fsync_s'] / max(d['fsyncs'], 1):.2f} "
                    f"ms), instances {d['instances'] / 3 / acked:.3f}; "
                    f"system share of store CPU {100 * system / max(sum(cpu.values()), 1e-9):.0f}%",
                    flush=True,
                )
                if spy is not None:
                    print(summarize_collapsed(out), flush=True)


if __name__ == "__main__":
    main()
