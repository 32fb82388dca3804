"""Consumer-tier delivery rate from a cold backlog (default 10 million messages).

    .venv/bin/python -m bench.backlog                     # 10M x 100 B: fill, then 2 min reading
    .venv/bin/python -m bench.backlog --drain             # ... and read all of it (long)
    .venv/bin/python -m bench.backlog --messages 1000000  # ~1-2 min
    .venv/bin/python -m bench.backlog --quick             # 20k messages, seconds (smoke)

1. Starts 3 stores and 3 lock nodes (real processes, fdatasync on, 127.0.0.1, 16 groups,
   production 64 MiB segments) with a topic ``backlog`` of ``--queues`` queues and a consumer
   group ``backlog-cg`` (no-op in-process handler, strict order) declared in the config.
2. **Builds the backlog through the real client**: ``--messages`` messages of ``--size`` bytes
   enqueued with ``Client.enqueue_many`` (4 calls of up to 4096 messages in flight, keys
   spread over every queue), each acked only once chosen, i.e. fdatasynced on a majority --
   the honest path, only batched (``harness.fill``). The dedup window is ``--dedup-window``
   (default 10 s): a real 10M backlog piles up over hours, so its producers' dedup ids have
   long expired; built in minutes under the 5-minute default, every id would still be held.
3. ``sync`` and drops the page cache (``echo 3 > /proc/sys/vm/drop_caches``; needs root, else
   the report says the backlog was *not* cold). The stores keep running: their in-memory
   indexes stay (they are process memory), every message must come off the disk again.
4. Starts a consumer daemon (:class:`phxq.consumer.daemon.ConsumerDaemon`, the real lock
   service, in this process) for ``backlog-cg``, whose cursors start at the beginning, and
   counts deliveries for ``--max-seconds`` (default 120: the rate from the cold start of a
   deep backlog; draining 10M through one daemon takes far longer), or with ``--drain`` until
   all arrived.

Reports (numbers only): fill rate, time from daemon start to the first delivery, delivery rate
(first to last delivery) overall and per ``--interval`` seconds, the store and client CPU
seconds, the data directory size. ``--warm`` then runs a second fresh group over the same
backlog without dropping the cache, for the warm figure beside the cold one.
Output: ``bench/results/backlog-<commit>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from typing import Any

from bench import harness
from bench.consumer_e2e import set_hook
from phxq import benchmark
from phxq.client import Client
from phxq.config import ConsumerGroupConfig
from phxq.consumer.daemon import ConsumerDaemon
from phxq.devcluster import ProcessCluster

TOPIC = "backlog"
GROUP = "backlog-cg"
HANDLER = "bench.consumer_e2e:on_message"


async def consume(
    cluster: ProcessCluster, group: str, expected: int, max_seconds: float, interval: float
) -> dict[str, Any]:
    """Run a consumer daemon for ``group`` until ``expected`` deliveries or ``max_seconds``."""
    count = 0
    first = last = 0.0
    buckets: list[int] = []
    done = asyncio.Event()
    perf = time.perf_counter

    def record(payload: bytes) -> None:
        nonlocal count, first, last
        now = perf()
        if count == 0:
            first = now
        last = now
        count += 1
        slot = int((now - first) / interval)
        while len(buckets) <= slot:
            buckets.append(0)
        buckets[slot] += 1
        if count >= expected:
            done.set()

    set_hook(record)
    spec = ConsumerGroupConfig(name=group, topic=TOPIC, handler=HANDLER, dead_letter=TOPIC + ".dlq")
    cfg = dataclasses.replace(cluster.config, consumer_groups=(spec,))
    meter = benchmark.CpuMeter(harness.store_pids(cluster))
    before = meter.snapshot()
    started = perf()
    async with ConsumerDaemon(cfg, f"bench-backlog-{os.getpid()}"):
        with contextlib.suppress(TimeoutError):  # reported: delivered < expected
            await asyncio.wait_for(done.wait(), max_seconds)
        cpu = benchmark.CpuMeter.delta(before, meter.snapshot())
    span = last - first
    return {
        "group": group,
        "expected": expected,
        "delivered": count,
        "first_delivery_s": round(first - started, 3) if count else None,
        "delivery_seconds": round(span, 3),
        "msgs_per_s": round((count - 1) / span, 1) if span > 0 else None,
        "per_interval_msgs_per_s": [round(b / interval, 1) for b in buckets],
        "interval_s": interval,
        "cpu_s": cpu,
    }


async def fill_backlog(cluster: ProcessCluster, args: argparse.Namespace) -> dict[str, Any]:
    async with Client(cluster.store_addresses, retry_timeout=120) as client:
        return await harness.fill(client, TOPIC, args.messages, args.size, keys=args.queues * 16)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {}
    with harness.workdir(args.dir, "phxq-backlog-") as base:
        env = benchmark.environment(base)
        options = f"dedup_window = {harness.toml_duration(args.dedup_window)}"
        with harness.store_cluster(
            base,
            groups=args.groups,
            topics={TOPIC: args.queues, TOPIC + ".dlq": 1},
            segment_bytes=args.segment,
            cluster_options=options,
            locks=True,
        ) as cluster:
            print(f"filling {args.messages:,} x {args.size} B ...", flush=True)
            result["fill"] = asyncio.run(fill_backlog(cluster, args))
            print(f"  {result['fill']}", flush=True)
            result["data_dir_bytes"] = harness.dir_bytes(base)
            result["store_rss_bytes"] = harness.rss_bytes(cluster)
            env["load_avg"] = harness.load_avg()  # just before the measured part
            cold = harness.drop_caches(keep=args.keep_cache)
            result["page_cache"] = cold or "dropped (sync; echo 3 > /proc/sys/vm/drop_caches)"
            print(f"page cache: {result['page_cache']}; consuming ...", flush=True)
            result["cold"] = asyncio.run(
                consume(cluster, GROUP, args.messages, args.max_seconds, args.interval)
            )
            print(f"  cold: {result['cold']}", flush=True)
            if args.warm:
                result["warm"] = asyncio.run(
                    consume(
                        cluster, GROUP + "-warm", args.messages, args.max_seconds, args.interval
                    )
                )
                print(f"  warm: {result['warm']}", flush=True)
    settings = {
        "messages": args.messages,
        "size": args.size,
        "queues": args.queues,
        "groups": args.groups,
        "dedup_window": args.dedup_window,
        "segment_bytes": args.segment,
        "max_seconds": args.max_seconds,
        "handler": "in-process no-op, strict order, one consumer daemon",
    }
    return harness.finish_report(env, started, settings, **result)


def markdown(report: dict[str, Any]) -> list[str]:
    s, fill = report["settings"], report["fill"]
    lines = harness.header(report, "Consumer-tier delivery from a cold backlog")
    lines += [
        f"Backlog: {s['messages']:,} messages of {s['size']} B on topic `{TOPIC}` "
        f"({s['queues']} queues, {s['groups']} Paxos groups, 3 stores, fdatasync on, PLog "
        f"segments {s['segment_bytes']}, dedup window {s['dedup_window']}); "
        f"{report['data_dir_bytes'] / 2**30:.2f} GiB on disk (3 replicas, preallocated "
        f"segments included). Built by {fill['method']}: {fill['seconds']} s, "
        f"{fill['msgs_per_s']:,} msgs/s. Page cache before consuming: {report['page_cache']}. "
        f"Load average given above is the one just before consuming. Consumer: {s['handler']}.",
        "",
        "| run | delivered | first delivery s | delivery s | msgs/s | store CPU s | client CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("cold", "warm"):
        r = report.get(name)
        if r is None:
            continue
        store_cpu = harness.store_cpu(r["cpu_s"])
        lines.append(
            f"| {name} | {r['delivered']:,} / {r['expected']:,} | {r['first_delivery_s']} | "
            f"{r['delivery_seconds']} | {r['msgs_per_s'] or 0:,.0f} | {store_cpu:.1f} | "
            f"{r['cpu_s'].get('client', 0):.1f} |"
        )
    lines.append("")
    for name in ("cold", "warm"):
        r = report.get(name)
        if r is not None:
            rates = ", ".join(f"{x:,.0f}" for x in r["per_interval_msgs_per_s"])
            lines.append(f"{name}: msgs/s per {r['interval_s']} s from the first delivery: {rates}")
    lines.append("")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.parser("backlog", __doc__)
    ap.add_argument("--quick", action="store_true", help="20k messages (smoke)")
    ap.add_argument("--messages", type=int, default=None, help="backlog size (10,000,000)")
    ap.add_argument("--size", type=int, default=100, help="message bytes")
    ap.add_argument("--queues", type=int, default=64, help="queues of the topic")
    ap.add_argument("--groups", type=int, default=16, help="Paxos groups")
    ap.add_argument("--dedup-window", default="10s", help="the cluster's dedup_window")
    ap.add_argument("--max-seconds", type=float, default=None, help="consume this long (120)")
    ap.add_argument("--drain", action="store_true", help="consume until all arrived")
    ap.add_argument("--interval", type=float, default=None, help="rate buckets s (10)")
    ap.add_argument("--keep-cache", action="store_true", help="do not drop the page cache")
    ap.add_argument("--warm", action="store_true", help="then a second group, cache warm")
    ap.add_argument("--segment", default=None, help="PLog segment size (64MiB)")
    harness.output_args(ap)
    args = ap.parse_args(argv)
    quick = args.quick
    harness.fill_defaults(
        args,
        {
            "messages": 20_000 if quick else 10_000_000,
            "max_seconds": 60.0 if quick else 120.0,
            "interval": 1.0 if quick else 10.0,
            "segment": "4MiB" if quick else harness.SEGMENT_BYTES,
        },
    )
    if args.drain:
        args.max_seconds = 24 * 3600.0
    if args.messages < 1:
        ap.error("--messages must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main("backlog", argv, parse_args, run, markdown, log=True)


if __name__ == "__main__":
    sys.exit(main())
