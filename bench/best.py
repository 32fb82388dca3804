"""phxq and NATS JetStream each at its best, beside the same-loop pair, in one table.

    .venv/bin/python -m bench.best                    # 64 and 256 outstanding, ~1 minute
    .venv/bin/python -m bench.best --levels 64 --calls 4
    .venv/bin/python -m bench.best --quick            # a few seconds (smoke)

Both clusters are up together (3 phxq stores with 16 groups, fdatasync on; 3 JetStream servers,
``sync_interval: always``, one R3 stream; 127.0.0.1) and the cases alternate, so drift in the
machine's load hits both alike. For every ``--levels`` value (messages outstanding), 100 B:

- **same loop** (what ``scripts/bench`` reports): ``phxq.benchmark.run_throughput``, N producer
  tasks each awaiting one send; phxq's ``Client.enqueue``, NATS's ``publish_async`` + awaiting
  the PubAck (``bench/nats_peer.py``).
- **best**: each system driven the fastest way its own client allows, without a task per
  message. NATS: ``publish_async`` with a window of N publishes in flight, a done callback per
  PubAck (``run_nats_windowed``), what its users do for speed. phxq: ``Client.enqueue_many``
  (its batch call: one future per message, no task) from C concurrent callers of N / C
  messages each, so N messages are in flight, for every C in ``--calls`` (1,4,16); the pair
  row shows the fastest C (all are in the runs table); a message's latency is its call's
  (the call returns when the last of its messages is acked).

Output: ``bench/results/best-<commit>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from typing import Any

from bench import harness
from bench.run_all import _ints, peer_status
from phxq import benchmark
from phxq.client import Client
from phxq.net.loop import run as run_loop

TOPIC = "bench"
QUEUES = 64


async def run_phxq_many(
    client: Client,
    *,
    outstanding: int = 64,
    calls: int = 4,
    seconds: float = 4.0,
    size: int = 100,
    warmup: float = 1.0,
    cpu: benchmark.CpuMeter | None = None,
) -> benchmark.Result:
    """``calls`` concurrent ``enqueue_many`` callers, each with ``outstanding // calls``
    messages per call (keys rotating over 1024), for ``warmup`` s unrecorded then
    ``seconds``; a call's messages count when it returns inside the window, each with the
    call's latency."""
    per_call = max(1, outstanding // calls)
    payload = os.urandom(size)
    keys = [f"k{i}" for i in range(1024)]
    hist = benchmark._histogram()  # the shared loops' histogram: figures compare
    perf = time.perf_counter
    window_start = perf() + warmup
    window_end = window_start + seconds
    done = errors = 0

    async def caller(n: int) -> None:
        nonlocal done, errors
        i = n * per_call
        while perf() < window_end:
            msgs = [(payload, keys[(i + j) % 1024]) for j in range(per_call)]
            i += per_call * calls
            t0 = perf()
            try:
                await client.enqueue_many(TOPIC, msgs)
            except Exception:  # counted and reported: a benchmark measures, it does not stop
                if window_start <= perf() <= window_end:
                    errors += per_call
                continue
            t1 = perf()
            if window_start <= t1 <= window_end:
                hist.record_value(max(1, int((t1 - t0) * 1e6)), per_call)
                done += per_call

    async def meter() -> dict[str, float]:
        if cpu is None:
            return {}
        await asyncio.sleep(max(0.0, window_start - perf()))
        before = cpu.snapshot()
        await asyncio.sleep(max(0.0, window_end - perf()))
        return benchmark.CpuMeter.delta(before, cpu.snapshot())

    results = await asyncio.gather(meter(), *(caller(n) for n in range(calls)))
    return benchmark.Result(
        "throughput",
        done,
        seconds,
        done / seconds,
        benchmark._summary(hist),
        {
            "size": size,
            "outstanding": per_call * calls,
            "driver": f"enqueue_many {calls} x {per_call}",
        },
        system="phxq",
        errors=errors,
        cpu_s=results[0] or {},
    )


async def phxq_case(
    cluster: Any, args: argparse.Namespace, outstanding: int, calls: int | None
) -> benchmark.Result:
    """The same-loop case (``calls`` None) or the ``enqueue_many`` one with ``calls``."""
    best = calls is not None
    meter = benchmark.CpuMeter(harness.store_pids(cluster))
    async with Client(cluster.store_addresses) as client:
        if calls is not None:
            result = await run_phxq_many(
                client,
                outstanding=outstanding,
                calls=min(calls, outstanding),
                seconds=args.seconds,
                size=args.size,
                warmup=args.warmup,
                cpu=meter,
            )
        else:
            result = await benchmark.run_throughput(
                benchmark.phxq_sender(client, TOPIC),
                outstanding=outstanding,
                seconds=args.seconds,
                size=args.size,
                warmup=args.warmup,
                cpu=meter,
                params={"driver": "same loop: a task per producer, enqueue"},
            )
    result.params.update(groups=args.groups, batching=True, pair="best" if best else "same loop")
    return result


async def nats_case(peer: Any, args: argparse.Namespace, outstanding: int, best: bool) -> Any:
    from bench.nats_peer import nats_sender, run_nats_windowed

    meter = benchmark.CpuMeter(peer.pids)
    if best:
        result = await run_nats_windowed(
            peer.servers,
            outstanding=outstanding,
            seconds=args.seconds,
            size=args.size,
            warmup=args.warmup,
            queues=QUEUES,
            cpu=meter,
        )
    else:
        async with nats_sender(peer.servers, QUEUES) as send:
            result = await benchmark.run_throughput(
                send,
                outstanding=outstanding,
                seconds=args.seconds,
                size=args.size,
                warmup=args.warmup,
                cpu=meter,
                system="nats",
                params={"driver": "same loop: a task per producer, publish_async + await"},
            )
    result.params.update(groups=1, stream_replicas=3, pair="best" if best else "same loop")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    skip = peer_status(["nats"])
    if skip is not None:
        raise SystemExit(f"bench.best needs the peer: {skip}")
    from bench.nats_peer import NatsCluster

    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with harness.workdir(args.dir, "phxq-best-") as base:
        env = benchmark.environment(base)
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(
                harness.store_cluster(base / "phxq", groups=args.groups, segment_bytes=args.segment)
            )
            peer = stack.enter_context(NatsCluster(base / "nats"))
            run_loop(peer.wait_ready(60))
            peer_info = peer.jetstream_config()
            for level in args.levels:
                cases: list[tuple[str, int | None]] = [("phxq", None), ("nats", None)]
                cases.append(("phxq", args.calls[0]))
                cases.append(("nats", 1))
                cases += [("phxq", c) for c in args.calls[1:]]
                for system, calls in dict.fromkeys(cases):
                    if system == "phxq":
                        result = run_loop(phxq_case(cluster, args, level, calls))
                    else:
                        result = run_loop(nats_case(peer, args, level, calls is not None))
                    print(result.line(), result.params, flush=True)
                    runs.append(result.to_json())
    settings = {
        "label": "best",
        "groups": args.groups,
        "size": args.size,
        "levels": args.levels,
        "calls": args.calls,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "segment_bytes": args.segment,
    }
    return harness.finish_report(env, started, settings, peer={"servers": peer_info}, runs=runs)


def pairs_table(runs: list[dict[str, Any]]) -> list[str]:
    """One row per (outstanding, pair): phxq beside NATS and their msgs/s ratio (of several
    phxq ``best`` variants, the fastest)."""
    by: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
    for r in runs:
        p = r["params"]
        row = by.setdefault((p["outstanding"], p["pair"]), {})
        old = row.get(r["system"])
        if old is None or r["msgs_per_s"] > old["msgs_per_s"]:
            row[r["system"]] = r
    lines = [
        "| outstanding | pair | phxq driver | phxq msgs/s | phxq p50 ms | phxq p99 ms | "
        "NATS driver | NATS msgs/s | NATS p50 ms | NATS p99 ms | phxq/NATS msgs/s |",
        "|---:|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for (level, pair), systems in sorted(
        by.items(), key=lambda kv: (kv[0][0], kv[0][1] != "same loop")
    ):
        x, n = systems.get("phxq"), systems.get("nats")
        cells = [str(level), pair]
        for r in (x, n):
            if r is None:
                cells += ["-"] * 4
                continue
            lat = r["latency_ms"]
            cells += [
                r["params"]["driver"],
                f"{r['msgs_per_s']:,.0f}",
                f"{lat['p50']:.3f}",
                f"{lat['p99']:.3f}",
            ]
        ratio = x["msgs_per_s"] / n["msgs_per_s"] if x and n and n["msgs_per_s"] else None
        cells.append("-" if ratio is None else f"{ratio:.2f}")
        lines.append(harness.md_row(cells))
    return lines


def markdown(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = harness.header(report, "phxq and NATS JetStream: same loop and each at its best")
    lines += [
        f"phxq: 3 stores, {s['groups']} groups, fdatasync before ack, client batching on. NATS: "
        "3 JetStream servers, `sync_interval: always`, one R3 stream. 127.0.0.1, "
        f"{s['size']} B messages; each case {s['seconds']} s after {s['warmup_s']} s warm-up; "
        "phxq and NATS cases alternate. Latency: from the call to the ack (phxq best: the "
        "enqueue_many call's, for each of its messages).",
        "",
        *pairs_table(report["runs"]),
        "",
        "All runs:",
        "",
        benchmark.markdown_table(report["runs"]),
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.parser("best", __doc__)
    ap.add_argument("--quick", action="store_true", help="a few seconds (smoke)")
    ap.add_argument("--levels", type=_ints, default=None, help="outstanding (default 64,256)")
    ap.add_argument(
        "--calls", type=_ints, default=[1, 4, 16], help="phxq best: concurrent enqueue_many"
    )
    ap.add_argument("--groups", type=int, default=16, help="phxq Paxos groups")
    ap.add_argument("--size", type=int, default=100, help="message bytes")
    ap.add_argument("--seconds", type=float, default=None, help="measured window (default 5)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up s (default 1)")
    ap.add_argument("--segment", default=harness.SEGMENT_BYTES, help="phxq PLog segment size")
    harness.output_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.levels = args.levels or [16]
        args.seconds = args.seconds or 0.5
        args.warmup = args.warmup if args.warmup is not None else 0.2
        args.groups = 4 if args.groups == 16 else args.groups
        args.segment = "4MiB" if args.segment == harness.SEGMENT_BYTES else args.segment
    args.levels = args.levels or [64, 256]
    args.seconds = args.seconds or 5.0
    args.warmup = 1.0 if args.warmup is None else args.warmup
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main("best", argv, parse_args, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
