"""CPU cost of an enqueue, measured in one process: three StoreNodes and a Client on one loop.

    .venv/bin/python -m bench.profile_inproc [--count 2000] [--outstanding 1,64]
        [--batching on|off] [--repeat 3] [--groups 16] [--cprofile OUT] [--loop uvloop|asyncio]
        [--cluster-options 'heartbeat_interval = "1s"; lease = "5s"']

Real sockets (127.0.0.1), real PLog files with fdatasync, the real client; only the process
boundary is gone. On a shared, loaded machine wall-clock figures are noise, but the CPU time
the process spends per acked message (``time.process_time``: every thread, user + system) is
a stable measure of the work an enqueue costs: three replicas plus the client. The idle cost
(heartbeats, ticks: CPU per wall second, measured first) is subtracted, since it grows with the
wall time a noisy machine adds. Prints, per run, messages, net CPU microseconds per message and
wall msgs/s; with ``--cprofile OUT`` the loop thread is profiled (cProfile, wall clock) and the
top functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from phxq.client import Client
from phxq.config import load_config
from phxq.devcluster import free_ports, write_dev_config
from phxq.store.node import StoreNode


async def _ready(nodes: list[StoreNode], groups: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        masters = [{n.replicas[g].paxos.master for n in nodes} for g in range(groups)]
        serving = all(any(n.replicas[g].serving for n in nodes) for g in range(groups))
        if serving and all(len(m) == 1 and None not in m for m in masters):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("cluster not ready")


async def _idle_rate(seconds: float = 2.0) -> float:
    """CPU seconds per wall second the idle cluster uses."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu0) / (time.perf_counter() - t0)


async def _run(
    addrs: list[str], count: int, outstanding: int, batching: bool
) -> tuple[int, float, float]:
    payload = os.urandom(100)
    async with Client(addrs, batching=batching) as client:
        for i in range(200):  # warm-up: connections, masters cached
            await client.enqueue("orders", payload, key=f"w{i % 64}")
        per_worker = max(1, count // outstanding)

        async def worker(w: int) -> None:
            for i in range(per_worker):
                await client.enqueue("orders", payload, key=f"k{w}-{i % 64}")

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(outstanding)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return per_worker * outstanding, cpu, wall


async def _main(args: argparse.Namespace, data: Path) -> list[str]:
    ports = free_ports(6)
    config_path = write_dev_config(
        data,
        groups=args.groups,
        store_ports=ports[:3],
        lock_ports=ports[3:],
        cluster_options=args.cluster_options.replace(";", "\n"),
    )
    cluster = load_config(config_path)
    lines = []
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(StoreNode(cluster, s.id)) for s in cluster.stores]
        await _ready(nodes, args.groups)
        addrs = [s.addr for s in cluster.stores]
        idle = await _idle_rate()
        lines.append(f"idle: {100 * idle:.1f}% of a core")
        print(lines[-1], flush=True)
        for outstanding in [int(x) for x in args.outstanding.split(",")]:
            cpus = []
            for _ in range(args.repeat):
                n, cpu, wall = await _run(addrs, args.count, outstanding, args.batching == "on")
                cpu -= idle * wall
                cpus.append(cpu / n * 1e6)
                lines.append(
                    f"outstanding={outstanding} batching={args.batching}: {n} msgs, "
                    f"{cpu / n * 1e6:.0f} us CPU/msg, {n / wall:,.0f} msgs/s wall"
                )
                print(lines[-1], flush=True)
            lines.append(
                f"outstanding={outstanding}: CPU/msg min {min(cpus):.0f} us, "
                f"median {statistics.median(cpus):.0f} us"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--outstanding", default="1,64")
    ap.add_argument("--batching", choices=("on", "off"), default="on")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--cprofile", type=Path, default=None)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument(
        "--cluster-options",
        default="",
        help='extra [cluster] keys, ";"-separated, e.g. \'heartbeat_interval = "1s"; lease = "5s"\'',
    )
    args = ap.parse_args()
    if args.loop == "asyncio":
        os.environ["PHXQ_LOOP"] = "asyncio"
    from phxq.net.loop import run

    with tempfile.TemporaryDirectory(prefix="phxq-inproc-") as tmp:
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler is not None:
            profiler.enable()
        try:
            run(_main(args, Path(tmp)))
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.cprofile)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()
