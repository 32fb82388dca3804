"""Load-robust cost of a Paxos instance: counts per chosen instance, not wall-clock figures.

    .venv/bin/python -m bench.profile_counts [--count 4000] [--outstanding 64] [--groups 16]
        [--repeat 3] [--loop uvloop|asyncio] [--cluster-options 'heartbeat_interval = "1s"'] [--top 40] [--sort tottime|ncalls|cumulative]

Runs :mod:`bench.profile_inproc`'s set-up (three StoreNodes and a Client in one process, real
sockets and fdatasync) under cProfile and prints, per enqueue run, per chosen Paxos instance
(instances counted once, not per replica): Python function calls, socket writes (transport
flushes that wrote), frames received, Paxos messages handled, and CPU microseconds (process
time, all threads, minus the idle rate; noisier than the counts). First the same counts per
second of the idle cluster (heartbeats, ticks), measured over ``--idle-seconds``. On a loaded machine the
counts move only with how many messages share an instance, which the line also prints.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

from bench.profile_inproc import _idle_rate, _ready, _run
from phxq import metrics
from phxq.config import load_config
from phxq.devcluster import free_ports, write_dev_config
from phxq.store.node import StoreNode

_COUNTED = {
    "writes": ("transport.py", "_flush"),
    "frames": ("frames.py", "decode_body"),
    "paxos": ("node.py", "on_message"),
    "heartbeats": ("node.py", "_on_heartbeat"),
    "ticks": ("host.py", "_tick_loop"),
}


def _instances() -> float:
    for metric in metrics.BATCH_ITEMS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return sample.value / 3  # every replica observes each instance
    return 0.0


def _calls(prof: cProfile.Profile) -> dict[str, int]:
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = dict.fromkeys(_COUNTED, 0)
    out["calls"] = 0
    for (filename, _, name), (_, ncalls, *_rest) in stats.items():
        out["calls"] += ncalls
        for key, (file_end, func) in _COUNTED.items():
            if name == func and filename.endswith(file_end):
                out[key] += ncalls
    return out


async def _main(args: argparse.Namespace, data: Path) -> None:
    ports = free_ports(6)
    config_path = write_dev_config(
        data,
        groups=args.groups,
        store_ports=ports[:3],
        lock_ports=ports[3:],
        cluster_options=args.cluster_options.replace(";", "\n"),
    )
    cluster = load_config(config_path)
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(StoreNode(cluster, s.id)) for s in cluster.stores]
        await _ready(nodes, args.groups)
        addrs = [s.addr for s in cluster.stores]
        prof = cProfile.Profile()
        prof.enable()
        t0 = time.perf_counter()
        idle = await _idle_rate(args.idle_seconds)
        prof.disable()
        c = {k: v / (time.perf_counter() - t0) for k, v in _calls(prof).items()}
        print(
            f"idle: {100 * idle:.1f}% of a core (profiled); per second: {c['calls']:,.0f} calls, "
            f"{c['frames']:.0f} frames, {c['paxos']:.0f} paxos msgs ({c['heartbeats']:.0f} "
            f"heartbeats), {c['ticks']:.0f} tick passes; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for _ in range(args.repeat):
            prof = cProfile.Profile()
            inst0 = _instances()
            prof.enable()
            n, cpu, wall = await _run(addrs, args.count, args.outstanding, True)
            prof.disable()
            inst = max(_instances() - inst0, 1.0)
            c = _calls(prof)
            if args.top:
                pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
            print(
                f"outstanding={args.outstanding} groups={args.groups}: {n} msgs, "
                f"{n / inst:.1f} msgs/instance; per instance: {c['calls'] / inst:,.0f} calls, "
                f"{c['writes'] / inst:.2f} flushes, {c['frames'] / inst:.2f} frames, "
                f"{c['paxos'] / inst:.2f} paxos msgs ({c['heartbeats'] / inst:.2f} heartbeats), "
                f"{c['ticks'] / inst:.2f} tick passes, "
                f"{(cpu - idle * wall) / inst * 1e6:,.0f} us CPU (profiled); "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--outstanding", type=int, default=64)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--cluster-options",
        default="",
        help='extra [cluster] keys, ";"-separated, e.g. \'heartbeat_interval = "1s"; lease = "5s"\'',
    )
    ap.add_argument("--idle-seconds", type=float, default=2.0)
    ap.add_argument("--top", type=int, default=0, help="print the top functions of each run")
    ap.add_argument("--sort", default="tottime", help="pstats sort key for --top")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = ap.parse_args()
    if args.loop == "asyncio":
        os.environ["PHXQ_LOOP"] = "asyncio"
    from phxq.net.loop import run

    with tempfile.TemporaryDirectory(prefix="phxq-counts-") as tmp:
        start = time.monotonic()
        run(_main(args, Path(tmp)))
        print(f"({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
