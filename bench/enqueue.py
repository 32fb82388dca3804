"""Enqueue latency and throughput through a fresh local 3-replica cluster (fsync on).

    .venv/bin/python -m bench.enqueue [--count 5000] [--seconds 5] [--out bench/results]

Starts real store processes on free 127.0.0.1 ports in a temporary directory, runs the
sequential latency benchmark and the throughput benchmark at several concurrency levels, and
writes ``<out>/enqueue-<commit>.json`` plus a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from phxq import benchmark
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--levels", default="1,16,64,256")
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="phxq-bench-") as tmp:
        ports = free_ports(6)
        config = write_dev_config(
            Path(tmp), groups=args.groups, store_ports=ports[:3], lock_ports=ports[3:]
        )
        with ProcessCluster(config) as cluster:
            cluster.wait_ready(60)
            addrs = cluster.store_addresses
            results.append(asyncio.run(benchmark.latency(addrs, count=args.count)))
            print(results[-1].line(), flush=True)
            for level in [int(x) for x in args.levels.split(",")]:
                for batching in (True, False):
                    r = asyncio.run(
                        benchmark.throughput(
                            addrs, outstanding=level, seconds=args.seconds, batching=batching
                        )
                    )
                    results.append(r)
                    print(r.line(), r.params, flush=True)
    env = benchmark.environment()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"enqueue-{env['commit']}.json"
    path.write_text(
        json.dumps({"environment": env, "results": [r.to_json() for r in results]}, indent=2)
    )
    print(f"\nwrote {path}\n")
    print("| run | outstanding | batching | msgs/s | p50 ms | p99 ms | p99.9 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = r.latency_ms
        print(
            f"| {r.name} | {r.params.get('outstanding')} | {r.params.get('batching', '-')} | "
            f"{r.msgs_per_s:,.0f} | {lat['p50']:.3f} | {lat['p99']:.3f} | {lat['p99.9']:.3f} | {lat['max']:.3f} |"
        )


if __name__ == "__main__":
    main()
