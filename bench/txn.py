"""Transactions: the cost of a transaction of 1, 10 and 100 messages over 1 and several groups,
beside plain enqueues of the same messages.

    .venv/bin/python -m bench.txn [--rounds 50] [--sizes 1,10,100] [--groups 1,4]
                                  [--concurrency 1,8] [--json]
    .venv/bin/python -m bench.txn --smoke          # a few seconds; structure only

It starts 3 stores (real processes, fsync on, 16 groups) on 127.0.0.1 in a temporary
directory. For every (size, groups touched, concurrency) it runs ``--rounds`` rounds per
worker, each worker looping:

- **txn**: ``async with client.transaction()`` of ``size`` messages spread over queues of
  ``groups`` distinct groups (commit = prepare home, prepare the others in parallel, decide,
  release everywhere), measured until ``commit()`` returns (all messages visible);
- **plain**: the same messages as one ``enqueue_many`` per queue, in parallel (the baseline:
  what the producer pays without atomicity).

Reported per case: latency of one transaction / batch (p50, p99, max; ms) and messages/s over
all workers. Numbers only, nothing asserted; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from phxq.client import Client
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config

TOPIC = "orders"
QUEUES = 8  # the dev config's orders topic; queue q is in group q % 16


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 3)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}


def plan(size: int, groups: int) -> list[int]:
    """The queue of each message: round robin over ``groups`` queues of distinct groups."""
    return [i % groups for i in range(size)]


async def one_txn(client: Client, queues: list[int], payload: bytes) -> None:
    async with client.transaction(timeout=30) as txn:
        for q in queues:
            await txn.enqueue(TOPIC, payload, queue=q)


async def one_plain(client: Client, queues: list[int], payload: bytes) -> None:
    by_queue: dict[int, int] = {}
    for q in queues:
        by_queue[q] = by_queue.get(q, 0) + 1
    await asyncio.gather(
        *(client.enqueue_many(TOPIC, [(payload, None)] * n, queue=q) for q, n in by_queue.items())
    )


async def case(
    client: Client, kind: str, size: int, groups: int, workers: int, rounds: int
) -> dict[str, Any]:
    queues = plan(size, groups)
    payload = b"x" * 100
    samples: list[float] = []
    work = one_txn if kind == "txn" else one_plain

    async def worker() -> None:
        for _ in range(rounds):
            started = time.perf_counter()
            await work(client, queues, payload)
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    return {
        "kind": kind,
        "messages_per_txn": size,
        "groups": groups,
        "concurrency": workers,
        "rounds": rounds * workers,
        "latency": percentiles(samples),
        "msgs_per_s": round(size * rounds * workers / elapsed, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="phxq-txn-") as tmp:
        data = Path(tmp)
        ports = free_ports(6)
        path = write_dev_config(
            data, nodes=3, groups=16, store_ports=ports[:3], lock_ports=ports[3:]
        )
        cluster = ProcessCluster(path, log_dir=data)
        try:
            cluster.start()
            await cluster.wait_ready_async(60)
            async with Client(cluster.store_addresses) as client:
                await one_txn(client, [0], b"warm-up")
                for size in args.sizes:
                    for groups in args.groups:
                        for workers in args.concurrency:
                            for kind in ("plain", "txn"):
                                results.append(
                                    await case(client, kind, size, groups, workers, args.rounds)
                                )
        finally:
            cluster.stop()
    return {"cases": results, "environment": {"cpus": os.cpu_count(), "load": os.getloadavg()}}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50, help="per worker and case")
    parser.add_argument("--sizes", type=_ints, default=[1, 10, 100])
    parser.add_argument("--groups", type=_ints, default=[1, 4], help="groups touched (<= 8)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 8])
    parser.add_argument("--smoke", action="store_true", help="tiny numbers: a few seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.sizes, args.groups, args.concurrency = 2, [1, 10], [1, 2], [1]
    if any(not 1 <= g <= QUEUES for g in args.groups):
        parser.error(f"--groups must be in [1, {QUEUES}]")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    print("kind   msgs  groups  conc  p50 ms    p99 ms    msgs/s")
    for c in result["cases"]:
        lat = c["latency"]
        print(
            f"{c['kind']:5}  {c['messages_per_txn']:4}  {c['groups']:6}  {c['concurrency']:4}  "
            f"{lat['p50_ms']:8.2f}  {lat['p99_ms']:8.2f}  {c['msgs_per_s']:8.1f}"
        )


if __name__ == "__main__":
    main()
