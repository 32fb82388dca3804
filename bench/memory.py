"""Resident memory of each store against dedup ids, queues and scheduled messages.

    .venv/bin/python -m bench.memory                   # 1M dedup ids, 10k queues, 1M scheduled
    .venv/bin/python -m bench.memory --only scheduled --scheduled 200000
    .venv/bin/python -m bench.memory --quick           # 10k / 200 / 10k, seconds (smoke)

Every scenario gets its own fresh cluster (3 stores as real processes, fdatasync on, 127.0.0.1,
16 groups, production 64 MiB segments; lock nodes for the online topic) and is measured
against that cluster's own empty baseline: VmRSS of each store after start-up and 2,000
warm-up enqueues (connections, code paths), then again after the scenario's load (after 2 s
settling). Scenarios (``--only`` picks some):

- ``dedup``: ``--messages`` (1M) 100 B messages, each with its own dedup id (the client's
  default ids: 24 hex digits, a dash, a hex counter), dedup window 5 minutes (the default), so
  every id is still remembered when measured;
- ``nodedup``: the same messages with ``dedup_window = 0``: the per-message cost without dedup
  (indexes, offsets, time index). ``dedup`` minus ``nodedup`` is the cost of the ids alone;
- ``queues``: a topic of ``--queues`` (10k) queues created online (``phxq admin topic
  create``), one message enqueued into every queue and one consumer group's cursor committed
  on every queue;
- ``scheduled``: ``--scheduled`` (1M) messages scheduled 30 days ahead (pending, invisible),
  the load ``bench/delayed.py`` measured at +275 B RSS per pending message in session 5.

Messages are sent with ``Client.enqueue_many`` (4 calls of 4096 in flight, acked once chosen).
Output: ``bench/results/memory-<commit>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bench import harness
from phxq import benchmark
from phxq.client import Client
from phxq.devcluster import ProcessCluster
from phxq.topics import topic_create

TOPIC = "bench"
MANY = "many"
SCENARIOS = ("dedup", "nodedup", "queues", "scheduled")
SETTLE_S = 2.0


async def warm_up(client: Client) -> None:
    await harness.fill(client, TOPIC, 2000, 100, batch=200, calls=2)


async def many_queues(cluster: ProcessCluster, queues: int) -> dict[str, Any]:
    """Create a topic of ``queues`` queues online, one message and one cursor in each (from a
    client opened after the topic exists: it fetches the new map at once)."""
    started = time.perf_counter()
    await topic_create(cluster.config, MANY, queues=queues)
    async with Client(cluster.store_addresses, retry_timeout=120) as client:
        await fill_queues(client, queues)
    return {"queues": queues, "seconds": round(time.perf_counter() - started, 2)}


async def fill_queues(client: Client, queues: int) -> None:
    chunk = 500
    for first in range(0, queues, chunk):
        qs = range(first, min(queues, first + chunk))
        acks = await asyncio.gather(*(client.enqueue(MANY, b"q", queue=q) for q in qs))
        await asyncio.gather(
            *(
                client.commit("mem-cg", MANY, queue=ack.queue, offset=ack.offset, token=1)
                for ack in acks
                if ack.offset is not None
            )
        )


async def scenario(cluster: ProcessCluster, name: str, args: argparse.Namespace) -> dict[str, Any]:
    async with Client(cluster.store_addresses, retry_timeout=120) as client:
        await warm_up(client)
        await asyncio.sleep(SETTLE_S)
        before = harness.rss_bytes(cluster)
        if name in ("dedup", "nodedup"):
            load = await harness.fill(client, TOPIC, args.messages, 100)
            count = args.messages
        elif name == "queues":
            load = await many_queues(cluster, args.queues)
            count = args.queues
        else:
            load = await harness.fill(client, TOPIC, args.scheduled, 100, delay=30 * 86400.0)
            count = args.scheduled
        await asyncio.sleep(SETTLE_S)
        after = harness.rss_bytes(cluster)
    growth = {n: after[n] - before[n] for n in after if n in before}
    return {
        "scenario": name,
        "count": count,
        "load": load,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_growth_bytes": growth,
        "bytes_per_item": {n: round(g / max(1, count), 1) for n, g in growth.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    results = []
    env: dict[str, Any] = {}
    for name in args.only:
        with harness.workdir(args.dir, f"phxq-mem-{name}-") as base:
            env = env or benchmark.environment(base)
            window = "0" if name == "nodedup" else "5m"
            with harness.store_cluster(
                base,
                groups=args.groups,
                topics={TOPIC: 64},
                segment_bytes=args.segment,
                cluster_options=f"dedup_window = {harness.toml_duration(window)}",
                locks=name == "queues",
            ) as cluster:
                print(f"{name} ...", flush=True)
                load_avg = harness.load_avg()
                result = asyncio.run(scenario(cluster, name, args))
                result["load_avg_before"] = load_avg
                result["dedup_window"] = window
                print(f"  {result['bytes_per_item']} B per item", flush=True)
                results.append(result)
    settings = {
        "groups": args.groups,
        "messages": args.messages,
        "queues": args.queues,
        "scheduled": args.scheduled,
        "segment_bytes": args.segment,
    }
    return harness.finish_report(env, started, settings, scenarios=results)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def markdown(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = harness.header(report, "Store resident memory")
    lines += [
        f"3 stores, {s['groups']} groups, fdatasync on; each scenario on a fresh cluster, "
        "against its own empty baseline (after start-up and 2,000 warm-up enqueues). VmRSS "
        "per store; growth per item = (after - before) / items.",
        "",
        "| scenario | items | dedup window | load avg before | RSS before MiB (store 1/2/3) | "
        "RSS after MiB | growth MiB | bytes per item (store 1/2/3) | load took s |",
        "|---|---:|---|---|---|---|---|---|---:|",
    ]
    for r in report["scenarios"]:
        ids = sorted(r["rss_after_bytes"])

        def row(d: dict[str, float], ids: list[str] = ids) -> str:
            return " / ".join(_mib(d.get(i, 0)) for i in ids)

        per = " / ".join(f"{r['bytes_per_item'].get(i, 0):,.0f}" for i in ids)
        lines.append(
            f"| {r['scenario']} | {r['count']:,} | {r['dedup_window']} | {r['load_avg_before']} "
            f"| {row(r['rss_before_bytes'])} | {row(r['rss_after_bytes'])} | "
            f"{row(r['rss_growth_bytes'])} | {per} | {r['load']['seconds']} |"
        )
    by = {r["scenario"]: r for r in report["scenarios"]}
    if "dedup" in by and "nodedup" in by and by["dedup"]["count"] == by["nodedup"]["count"]:
        d, n = by["dedup"]["bytes_per_item"], by["nodedup"]["bytes_per_item"]
        per_id = " / ".join(f"{d[i] - n.get(i, 0):,.0f}" for i in sorted(d))
        lines += ["", f"Dedup ids alone (dedup - nodedup), bytes per id, store 1/2/3: {per_id}."]
    lines.append("")
    return lines


def _scenarios(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in SCENARIOS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(SCENARIOS)}; got {text!r}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.parser("memory", __doc__)
    ap.add_argument("--quick", action="store_true", help="small counts (smoke)")
    ap.add_argument("--only", type=_scenarios, default=list(SCENARIOS), help=",".join(SCENARIOS))
    ap.add_argument("--messages", type=int, default=None, help="dedup ids (1,000,000)")
    ap.add_argument("--queues", type=int, default=None, help="queues (10,000)")
    ap.add_argument("--scheduled", type=int, default=None, help="pending (1,000,000)")
    ap.add_argument("--groups", type=int, default=16, help="Paxos groups")
    ap.add_argument("--segment", default=None, help="PLog segment size (64MiB)")
    harness.output_args(ap)
    args = ap.parse_args(argv)
    quick = args.quick
    harness.fill_defaults(
        args,
        {
            "messages": 10_000 if quick else 1_000_000,
            "queues": 200 if quick else 10_000,
            "scheduled": 10_000 if quick else 1_000_000,
            "segment": "4MiB" if quick else harness.SEGMENT_BYTES,
        },
    )
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main("memory", argv, parse_args, run, markdown, log=True)


if __name__ == "__main__":
    sys.exit(main())
