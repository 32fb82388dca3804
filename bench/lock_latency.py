"""Lock service benchmark: request latency, and how soon a lock is free after its holder dies.

    .venv/bin/python -m bench.lock_latency [--config C] [--count 2000] [--ttl 3] [--trials 3]
                                           [--json]

Without ``--config`` it starts three ``phxq lock`` daemons (real processes, fsync on) on
127.0.0.1 in a temporary directory; with ``--config`` (e.g. ``phxq dev``'s
``./phxq-data/cluster.toml``) it uses that cluster's ``[[lock]]`` nodes.

Reports (numbers only, nothing asserted):

- ``acquire`` / ``renew`` / ``release`` latency, one client, sequential: p50, p99, p99.9, max;
- **holder SIGKILL**: a holder *process* holds a lock with ``hold(ttl)`` (renewing every
  ttl/3) and is SIGKILLed at a random point; a contender polls ``acquire`` every 10 ms. Time
  from the kill to the contender's grant: expect between 2/3 ttl and ttl (the lease runs out);
- **holder + lock master SIGKILL** (own cluster only): both die at once; the new master
  honours the lease for ttl + drift margin from its own start, so expect about
  election + ttl + margin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from phxq.config import load_config
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.errors import LockHeld, Unavailable
from phxq.lock import LockClient
from phxq.lock.state import drift_margin
from phxq.net.rpc import RpcPool

HOLDER = """
import asyncio, sys
from phxq.lock import LockClient
async def main():
    async with LockClient(sys.argv[1].split(",")) as c:
        async with c.hold(sys.argv[2], "holder", float(sys.argv[3])) as lease:
            print(lease.token, flush=True)
            await lease.lost.wait()
asyncio.run(main())
"""


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] * 1000

    return {
        "n": len(s),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": s[-1] * 1000,
    }


async def latencies(addresses: list[str], count: int) -> dict[str, Any]:
    out: dict[str, list[float]] = {"acquire": [], "renew": [], "release": []}
    async with LockClient(addresses) as client:
        for _ in range(50):  # warm up connections and caches
            await client.release("bench/warm", "w", await client.acquire("bench/warm", "w", 5))
        for i in range(count):
            name = f"bench/{i % 64}"
            t0 = time.perf_counter()
            token = await client.acquire(name, "bench", 10.0)
            t1 = time.perf_counter()
            await client.renew(name, "bench", token)
            t2 = time.perf_counter()
            await client.release(name, "bench", token)
            t3 = time.perf_counter()
            out["acquire"].append(t1 - t0)
            out["renew"].append(t2 - t1)
            out["release"].append(t3 - t2)
    return {op: percentiles(samples) for op, samples in out.items()}


async def lock_master(addresses: list[str]) -> int:
    async with RpcPool() as pool:
        while True:
            for addr in addresses:
                try:
                    meta = await pool.call(addr, "meta", {}, timeout=1.0)
                except Unavailable:
                    continue
                if meta["serving"]:
                    return int(meta["master"])
            await asyncio.sleep(0.05)


async def failover_trial(
    addresses: list[str], ttl: float, name: str, cluster: ProcessCluster | None
) -> float:
    """Seconds from the holder's SIGKILL (and the master's, with ``cluster``) to a new grant."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ",".join(addresses), name, str(ttl)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.to_thread(holder.stdout.readline)
        if not line.strip():
            raise RuntimeError("the holder process did not get the lock")
        await asyncio.sleep(random.uniform(ttl, 2 * ttl))  # a random point between renewals
        master = await lock_master(addresses) if cluster is not None else None
        holder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        if cluster is not None and master is not None:
            cluster.kill(master, role="lock")
    finally:
        holder.kill()
        holder.wait()
    async with LockClient(addresses, retry_timeout=60) as contender:
        while True:
            try:
                token = await contender.acquire(name, "contender", ttl)
                elapsed = time.monotonic() - killed
                await contender.release(name, "contender", token)
                break
            except LockHeld:
                await asyncio.sleep(0.01)
    if cluster is not None and master is not None:
        cluster.restart(master, role="lock")
        await cluster.wait_locks_ready_async(timeout=60)
    return elapsed


async def run(
    args: argparse.Namespace, addresses: list[str], cluster: ProcessCluster | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"ttl": args.ttl, "drift_margin": drift_margin(args.ttl)}
    result["latency"] = await latencies(addresses, args.count)
    trials = [
        await failover_trial(addresses, args.ttl, f"bench/holder-{i}", None)
        for i in range(args.trials)
    ]
    result["holder_sigkill_to_free_s"] = trials
    if cluster is not None:
        result["holder_and_master_sigkill_to_free_s"] = [
            await failover_trial(addresses, args.ttl, f"bench/master-{i}", cluster)
            for i in range(args.trials)
        ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cluster = None
    if args.config is not None:
        addresses = [n.addr for n in load_config(args.config).locks]
    else:
        tmp = Path(tempfile.mkdtemp(prefix="phxq-lock-bench-"))
        ports = free_ports(6)
        path = write_dev_config(tmp, store_ports=ports[:3], lock_ports=ports[3:])
        cluster = ProcessCluster(path, locks=True)
        for node in cluster.config.locks:
            cluster.start_node("lock", str(node.id))
        cluster.wait_locks_ready(timeout=60)
        addresses = cluster.lock_addresses
    try:
        result = asyncio.run(run(args, addresses, cluster))
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"lock service, 3 nodes, fsync on; ttl={args.ttl}s (drift margin {drift_margin(args.ttl)}s)"
    )
    for op, p in result["latency"].items():
        print(
            f"  {op:8s} n={p['n']}  p50 {p['p50_ms']:.2f} ms  p99 {p['p99_ms']:.2f} ms  "
            f"p99.9 {p['p999_ms']:.2f} ms  max {p['max_ms']:.2f} ms"
        )
    for key in ("holder_sigkill_to_free_s", "holder_and_master_sigkill_to_free_s"):
        if key in result:
            print(f"  {key}: " + ", ".join(f"{s:.2f}" for s in result[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
