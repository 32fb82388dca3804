"""Store start-up time (process start -> serving) against the size of its log: 1 and 10 GiB.

    .venv/bin/python -m bench.startup                  # 1 GiB and 10 GiB of 4 KiB messages
    .venv/bin/python -m bench.startup --gib 1 --size 1024
    .venv/bin/python -m bench.startup --quick          # 16 MiB, seconds (smoke)

One cluster: 3 stores (real processes, fdatasync on, 127.0.0.1, 16 groups, production 64 MiB
segments), topic ``startup`` with 64 queues. For each ``--gib`` target, in increasing order:

1. **Grow the log through the real client** until each replica holds that many GiB of message
   payload: ``Client.enqueue_many`` of ``--size``-byte messages, 4 calls of up to 4 MiB in
   flight, every message acked once chosen (fdatasynced on a majority) -- the path every
   producer takes, only batched (``harness.fill``). The dedup window is ``--dedup-window``
   (10 s): a log of many GiB is written over days, so only its last minutes' ids would be held.
2. **One store, cold**: SIGTERM store 1, ``sync`` + drop the page cache, start it again while
   the other two serve: the time from ``Popen`` until it answers an RPC (it listens only once
   every group's PLog is recovered and replayed into its state) and until its every group has
   caught up with the master's chosen instance.
3. **One store, warm**: the same again without dropping the cache.
4. **Whole cluster, cold**: SIGTERM all 3, drop the cache, start all 3 at once (they share the
   2 cores and the disk): until every store answers, until every group has a master, and until
   a first enqueue is acked.

The page cache drop needs root; without it the report says so. Reports the PLog bytes per store
(``status`` ``disk_bytes``) and the data directory's allocated size.
Output: ``bench/results/startup-<commit>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

from bench import harness
from phxq import benchmark
from phxq.client import Client
from phxq.devcluster import ProcessCluster
from phxq.net.rpc import RpcPool

TOPIC = "startup"
QUEUES = 64


async def answers(cluster: ProcessCluster, node: int, t0: float, deadline: float) -> float:
    """Seconds from ``t0`` until store ``node`` answers ``meta``."""
    addr = cluster.store_address(node)
    async with RpcPool(transport_factory=cluster.credentials.transport_factory()) as pool:
        while time.perf_counter() < deadline:
            try:
                await pool.call(addr, "meta", {}, timeout=1.0)
                return time.perf_counter() - t0
            except Exception:  # not listening yet (refused, reset, timed out): poll again
                await asyncio.sleep(0.02)
    raise TimeoutError(f"store {node} did not answer\n{cluster.logs('store', node)}")


async def chosen_ends(cluster: ProcessCluster, node: int) -> dict[int, int]:
    async with RpcPool(transport_factory=cluster.credentials.transport_factory()) as pool:
        view = await pool.call(cluster.store_address(node), "status", {}, timeout=10.0)
    return {g["group"]: g["chosen_up_to"] for g in view["groups"]}


async def plog_bytes(cluster: ProcessCluster) -> dict[str, int]:
    out = {}
    async with RpcPool(transport_factory=cluster.credentials.transport_factory()) as pool:
        for s in cluster.config.stores:
            view = await pool.call(s.addr, "status", {}, timeout=10.0)
            out[str(s.id)] = sum(g["disk_bytes"] for g in view["groups"])
    return out


def stop_store(cluster: ProcessCluster, node: int) -> None:
    cluster.signal("store", str(node), signal.SIGTERM)
    proc = cluster.procs[("store", str(node))]
    assert proc.popen is not None
    proc.popen.wait(60)


async def one_store(
    cluster: ProcessCluster, node: int, cold: bool, keep: bool = False
) -> dict[str, Any]:
    """Restart store ``node`` alone (the others serve): until it answers, until caught up."""
    target = await chosen_ends(cluster, 2)  # what the others have chosen: nothing new arrives
    stop_store(cluster, node)
    cache = harness.drop_caches(keep) if cold else "warm (not dropped)"
    t0 = time.perf_counter()
    cluster.start_node("store", str(node))
    deadline = t0 + 1800
    listening = await answers(cluster, node, t0, deadline)
    while time.perf_counter() < deadline:
        ends = await chosen_ends(cluster, node)
        if all(ends.get(g, 0) >= end for g, end in target.items()):
            break
        await asyncio.sleep(0.02)
    caught_up = time.perf_counter() - t0
    await cluster.wait_ready_async(600)  # masters settled again before the next step
    return {
        "page_cache": cache or "dropped",
        "answers_s": round(listening, 3),
        "caught_up_s": round(caught_up, 3),
    }


async def whole_cluster(cluster: ProcessCluster, keep: bool = False) -> dict[str, Any]:
    """Stop every store, drop the cache, start all: until each answers, masters, an enqueue."""
    cluster.stop()
    cache = harness.drop_caches(keep)
    t0 = time.perf_counter()
    cluster.start()
    deadline = t0 + 1800
    each = await asyncio.gather(
        *(answers(cluster, s.id, t0, deadline) for s in cluster.config.stores)
    )
    await cluster.wait_ready_async(600)
    masters = time.perf_counter() - t0
    async with Client(cluster.store_addresses, retry_timeout=120) as client:
        await client.enqueue(TOPIC, b"after restart", key="k0")
    first_enqueue = time.perf_counter() - t0
    return {
        "page_cache": cache or "dropped",
        "answers_s": {
            str(s.id): round(t, 3) for s, t in zip(cluster.config.stores, each, strict=True)
        },
        "masters_s": round(masters, 3),
        "first_enqueue_s": round(first_enqueue, 3),
    }


async def grow(cluster: ProcessCluster, messages: int, size: int) -> dict[str, Any]:
    async with Client(cluster.store_addresses, retry_timeout=120) as client:
        return await harness.fill(client, TOPIC, messages, size, keys=QUEUES * 16)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    with harness.workdir(args.dir, "phxq-startup-") as base:
        env = benchmark.environment(base)
        with harness.store_cluster(
            base,
            groups=args.groups,
            topics={TOPIC: QUEUES},
            segment_bytes=args.segment,
            cluster_options=f"dedup_window = {harness.toml_duration(args.dedup_window)}",
            max_message_bytes=max(1 << 20, args.size),
        ) as cluster:
            written = 0
            for gib in sorted(args.gib):
                target = int(gib * (1 << 30)) // args.size
                print(f"growing the log to {gib} GiB of payload per replica ...", flush=True)
                fill = asyncio.run(grow(cluster, target - written, args.size))
                written = target
                step: dict[str, Any] = {
                    "gib": gib,
                    "messages": written,
                    "payload_bytes": written * args.size,
                    "fill": fill,
                    "plog_bytes": asyncio.run(plog_bytes(cluster)),
                    "data_dir_bytes": harness.dir_bytes(base),
                    "load_avg_before": harness.load_avg(),
                }
                step["one_store_cold"] = asyncio.run(one_store(cluster, 1, True, args.keep_cache))
                print(f"  one store, cold: {step['one_store_cold']}", flush=True)
                step["one_store_warm"] = asyncio.run(one_store(cluster, 1, cold=False))
                print(f"  one store, warm: {step['one_store_warm']}", flush=True)
                step["cluster_cold"] = asyncio.run(whole_cluster(cluster, args.keep_cache))
                print(f"  whole cluster, cold: {step['cluster_cold']}", flush=True)
                steps.append(step)
    settings = {
        "gib": args.gib,
        "size": args.size,
        "groups": args.groups,
        "queues": QUEUES,
        "dedup_window": args.dedup_window,
        "segment_bytes": args.segment,
    }
    return harness.finish_report(env, started, settings, steps=steps)


def markdown(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = harness.header(report, "Store start-up time against log size")
    lines += [
        f"3 stores, {s['groups']} groups, fdatasync on, PLog segments {s['segment_bytes']}, "
        f"topic of {s['queues']} queues, {s['size']} B messages, dedup window "
        f"{s['dedup_window']}. The log is grown through the real client (enqueue_many, acked "
        "when chosen); every replica holds all of it. *Answers*: `Popen` until the store "
        "answers an RPC (it listens once every group is recovered and replayed). *Caught up*: "
        "until its every group reached the master's chosen instance. Cold = `sync; echo 3 > "
        "/proc/sys/vm/drop_caches` just before the start.",
        "",
        "| log GiB (payload/replica) | messages | PLog GiB (store 1, with preallocated segments) | load avg before | "
        "one store cold: answers s | caught up s | one store warm: answers s | whole cluster "
        "cold: all answer s | all groups have a master s | first enqueue acked s |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for st in report["steps"]:
        c1, w1, cc = st["one_store_cold"], st["one_store_warm"], st["cluster_cold"]
        lines.append(
            f"| {st['gib']} | {st['messages']:,} | {st['plog_bytes'].get('1', 0) / 2**30:.2f} | "
            f"{st['load_avg_before']} | {c1['answers_s']} | {c1['caught_up_s']} | "
            f"{w1['answers_s']} | {max(cc['answers_s'].values())} | {cc['masters_s']} | "
            f"{cc['first_enqueue_s']} |"
        )
    lines.append("")
    for st in report["steps"]:
        f = st["fill"]
        lines.append(
            f"{st['gib']} GiB: grown by {f['method']} at {f['msgs_per_s']:,} msgs/s "
            f"({f['seconds']} s for {f['messages']:,}); page cache: "
            f"{st['one_store_cold']['page_cache']}; data directory "
            f"{st['data_dir_bytes'] / 2**30:.2f} GiB allocated (3 replicas)."
        )
    lines.append("")
    return lines


def _gibs(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.parser("startup", __doc__)
    ap.add_argument("--quick", action="store_true", help="16 MiB of log (smoke)")
    ap.add_argument("--gib", type=_gibs, default=None, help="log sizes per replica (1,10)")
    ap.add_argument("--size", type=int, default=4096, help="message bytes")
    ap.add_argument("--groups", type=int, default=16, help="Paxos groups")
    ap.add_argument("--dedup-window", default="10s", help="the cluster's dedup_window")
    ap.add_argument("--segment", default=None, help="PLog segment size (64MiB)")
    ap.add_argument("--keep-cache", action="store_true", help="do not drop the page cache")
    harness.output_args(ap)
    args = ap.parse_args(argv)
    harness.fill_defaults(
        args,
        {
            "gib": [1 / 64] if args.quick else [1.0, 10.0],
            "segment": "4MiB" if args.quick else harness.SEGMENT_BYTES,
        },
    )
    if args.size < 1:
        ap.error("--size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main("startup", argv, parse_args, run, markdown, log=True)


if __name__ == "__main__":
    sys.exit(main())
