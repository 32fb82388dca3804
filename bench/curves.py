"""Cost curves: phxq msgs/s and latency against groups, message size and outstanding requests.

    .venv/bin/python -m bench.curves                  # sweeps around the baseline, ~1.5 min
    .venv/bin/python -m bench.curves --peer nats      # and NATS JetStream beside, ~3 min
    .venv/bin/python -m bench.curves --full           # the whole cross product, ~7 min (+NATS ~9)
    .venv/bin/python -m bench.curves --quick          # a few seconds (smoke)

Sweeps around a baseline (``--base``: 16 groups, 100 B, 64 outstanding): groups over
``--groups`` (1,4,16,64) at the baseline size and outstanding; size over ``--sizes`` (100 B,
1 KiB, 16 KiB, 256 KiB) and outstanding over ``--levels`` (1,16,64,256) at the baseline group
count; ``--full`` runs every combination instead. Each point is ``phxq.benchmark.run_throughput``
(the ``scripts/bench`` loop: N producer tasks, client batching on) for ``--seconds`` after
``--warmup``; one fresh 3-store cluster (fdatasync on, 127.0.0.1, production 64 MiB PLog
segments) per group count. With ``--peer nats`` the same (size, outstanding) points run on a
3-node JetStream cluster (``sync_interval: always``, one R3 stream) up at the same time as the
baseline phxq cluster, cases alternating; and for the group sweep, after each group count's
phxq points, a fresh JetStream cluster with that many R3 streams (a stream is one Raft group;
the 64 subjects spread over them) runs the baseline point: NATS's own cost of groups.

Output: ``bench/results/curves-<commit>-<time>.{json,md}``: a table per sweep (msgs/s, p50,
p99, p99.9, store CPU per message, NATS beside), and every run in ``bench.compare``'s format.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import harness
from bench.run_all import _ints, peer_status
from phxq import benchmark
from phxq.client import Client
from phxq.devcluster import ProcessCluster
from phxq.net.loop import run as run_loop

TOPIC = "bench"
QUEUES = 64


@dataclass(frozen=True)
class Point:
    groups: int
    size: int
    outstanding: int

    @property
    def peer_key(self) -> tuple[int, int]:
        return (self.size, self.outstanding)


def plan(args: argparse.Namespace) -> list[Point]:
    """The points to run, baseline first, each once (sweeps share the baseline point)."""
    g0, s0, o0 = args.base
    if args.full:
        points = [Point(g, s, o) for g in args.groups for s in args.sizes for o in args.levels]
    else:
        points = [Point(g0, s0, o0)]
        points += [Point(g, s0, o0) for g in args.groups]
        points += [Point(g0, s, o0) for s in args.sizes]
        points += [Point(g0, s0, o) for o in args.levels]
    seen: dict[Point, None] = {}
    for p in points:
        seen.setdefault(p)
    return list(seen)


def sweeps(points: list[Point], base: tuple[int, int, int]) -> dict[str, list[Point]]:
    """The points of each one-variable sweep through the baseline (in value order)."""
    g0, s0, o0 = base
    return {
        "groups": sorted(
            (p for p in points if (p.size, p.outstanding) == (s0, o0)), key=lambda p: p.groups
        ),
        "size": sorted(
            (p for p in points if (p.groups, p.outstanding) == (g0, o0)), key=lambda p: p.size
        ),
        "outstanding": sorted(
            (p for p in points if (p.groups, p.size) == (g0, s0)), key=lambda p: p.outstanding
        ),
    }


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.runs: list[dict[str, Any]] = []

    def _record(self, result: benchmark.Result, **params: Any) -> None:
        result.params.update(params)
        self.runs.append(result.to_json())
        print(result.line(), result.params, flush=True)

    async def phxq(self, cluster: ProcessCluster, point: Point) -> None:
        a = self.args
        meter = benchmark.CpuMeter(harness.store_pids(cluster))
        async with Client(cluster.store_addresses) as client:
            result = await benchmark.run_throughput(
                benchmark.phxq_sender(client, TOPIC),
                outstanding=point.outstanding,
                seconds=a.seconds,
                size=point.size,
                warmup=a.warmup,
                cpu=meter,
            )
        self._record(result, groups=point.groups, batching=True)

    async def nats(self, peer: Any, size: int, outstanding: int) -> None:
        """One NATS point; ``peer.streams`` R3 streams share the 64 subjects."""
        from bench.nats_peer import nats_sender

        a = self.args
        meter = benchmark.CpuMeter(peer.pids)
        async with nats_sender(peer.servers, QUEUES) as send:
            result = await benchmark.run_throughput(
                send,
                outstanding=outstanding,
                seconds=a.seconds,
                size=size,
                warmup=a.warmup,
                cpu=meter,
                system="nats",
            )
        self._record(result, groups=peer.streams, streams=peer.streams, stream_replicas=3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    points = plan(args)
    runner = Runner(args)
    skip = peer_status(["nats"]) if args.peer == "nats" else "not requested (--peer nats)"
    if args.peer == "nats" and skip is not None:
        raise SystemExit(f"--peer nats: {skip}")
    by_groups: dict[int, list[Point]] = {}
    for p in points:
        by_groups.setdefault(p.groups, []).append(p)
    peer_points = list(dict.fromkeys(p.peer_key for p in points if p.groups == args.base[0]))
    if args.full:
        peer_points = [(s, o) for s in args.sizes for o in args.levels]
    peer_info: list[dict[str, Any]] = []
    started = time.monotonic()
    with harness.workdir(args.dir, "phxq-curves-") as base:
        env = benchmark.environment(base)
        for groups, group_points in by_groups.items():  # the baseline group count first
            with contextlib.ExitStack() as stack:
                cluster = stack.enter_context(
                    harness.store_cluster(
                        base / f"phxq-g{groups}",
                        groups=groups,
                        topics={TOPIC: QUEUES},
                        segment_bytes=args.segment,
                        max_message_bytes=max(1 << 20, max(args.sizes)),
                    )
                )
                peer = None
                if skip is None and groups == args.base[0]:
                    from bench.nats_peer import NatsCluster

                    peer = stack.enter_context(NatsCluster(base / "nats"))
                    run_loop(peer.wait_ready(60))
                    peer_info = peer.jetstream_config()
                left = list(peer_points) if peer is not None else []
                for point in group_points:
                    run_loop(runner.phxq(cluster, point))
                    if peer is not None and point.peer_key in left:
                        left.remove(point.peer_key)
                        run_loop(runner.nats(peer, *point.peer_key))
                for size, outstanding in left:
                    assert peer is not None
                    run_loop(runner.nats(peer, size, outstanding))
                stack.close()  # phxq and the 1-stream peer stop: nothing else runs beside the next
                if skip is None and groups > 1 and groups in args.groups:
                    # The group sweep's NATS counterpart: as many R3 streams as phxq groups.
                    from bench.nats_peer import NatsCluster

                    with NatsCluster(base / f"nats-s{groups}", streams=groups) as many:
                        run_loop(many.wait_ready(120))
                        run_loop(runner.nats(many, args.base[1], args.base[2]))
    settings = {
        "label": "curves",
        "mode": "full" if args.full else ("quick" if args.quick else "sweeps"),
        "base": {"groups": args.base[0], "size": args.base[1], "outstanding": args.base[2]},
        "groups": args.groups,
        "sizes": args.sizes,
        "levels": args.levels,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "segment_bytes": args.segment,
        "topic_queues": QUEUES,
        "replicas": 3,
    }
    peer = {"status": skip or "ran", "servers": peer_info}
    return harness.finish_report(env, started, settings, peer=peer, runs=runner.runs)


def _cpu_per_msg(r: dict[str, Any]) -> str:
    cpu = harness.store_cpu(r.get("cpu_s", {}))
    return f"{cpu / r['messages'] * 1e6:,.0f}" if r["messages"] and cpu else "-"


def sweep_tables(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    base = (s["base"]["groups"], s["base"]["size"], s["base"]["outstanding"])
    phxq = {
        Point(r["params"]["groups"], r["params"]["size"], r["params"]["outstanding"]): r
        for r in report["runs"]
        if r["system"] == "phxq"
    }
    nats = {
        (r["params"]["size"], r["params"]["outstanding"]): r
        for r in report["runs"]
        if r["system"] == "nats" and r["params"].get("streams", 1) == 1
    }
    nats_streams = {
        r["params"].get("streams", 1): r
        for r in report["runs"]
        if r["system"] == "nats"
        and (r["params"]["size"], r["params"]["outstanding"]) == (base[1], base[2])
    }
    fixed = {
        "groups": f"{base[1]} B, {base[2]} outstanding",
        "size": f"{base[0]} groups, {base[2]} outstanding",
        "outstanding": f"{base[0]} groups, {base[1]} B",
    }
    lines: list[str] = []
    for name, points in sweeps(list(phxq), base).items():
        if len(points) < 2:
            continue
        lines += [
            f"### msgs/s and latency against {name} ({fixed[name]})",
            "",
            *(
                [
                    "NATS here: as many R3 streams as phxq has groups (subjects spread over them).",
                    "",
                ]
                if name == "groups" and nats_streams
                else []
            ),
            f"| {name} | phxq msgs/s | p50 ms | p99 ms | p99.9 ms | store CPU us/msg | "
            "NATS msgs/s | NATS p99 ms | phxq/NATS msgs/s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in points:
            r = phxq[p]
            lat = r["latency_ms"]
            n = nats_streams.get(p.groups) if name == "groups" else nats.get(p.peer_key)
            value = {"groups": p.groups, "size": p.size, "outstanding": p.outstanding}[name]
            cells = [
                str(value),
                f"{r['msgs_per_s']:,.0f}",
                f"{lat['p50']:.3f}",
                f"{lat['p99']:.3f}",
                f"{lat['p99.9']:.3f}",
                _cpu_per_msg(r),
            ]
            if n is None:
                cells += ["-", "-", "-"]
            else:
                ratio = r["msgs_per_s"] / n["msgs_per_s"] if n["msgs_per_s"] else None
                cells += [
                    f"{n['msgs_per_s']:,.0f}",
                    f"{n['latency_ms']['p99']:.3f}",
                    "-" if ratio is None else f"{ratio:.2f}",
                ]
            lines.append(harness.md_row(cells))
        lines.append("")
    return lines


def markdown(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = harness.header(report, f"phxq cost curves ({s['mode']})")
    lines += [
        f"phxq: 3 stores on 127.0.0.1, fdatasync before ack, client batching on, topic of "
        f"{s['topic_queues']} queues, PLog segments {s['segment_bytes']}; one fresh cluster per "
        f"group count. Each point: `phxq.benchmark.run_throughput` (N producer tasks, the "
        f"`scripts/bench` loop) for {s['seconds']} s after {s['warmup_s']} s warm-up; latency "
        f"from the call to the ack. Peer: {report['peer']['status']}"
        + (
            " (3 JetStream servers, `sync_interval: always`, one R3 stream, same loop, cases "
            "alternating with phxq's on the baseline cluster; in the group sweep, a fresh NATS "
            "cluster per group count with that many R3 streams, each a Raft group)."
            if report["peer"]["status"] == "ran"
            else "."
        ),
        "",
        *sweep_tables(report),
        "### All runs",
        "",
        benchmark.markdown_table(report["runs"]),
    ]
    return lines


def _base(text: str) -> tuple[int, int, int]:
    values = _ints(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError("--base takes GROUPS,SIZE,OUTSTANDING")
    return values[0], values[1], values[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.parser("curves", __doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="every combination, not sweeps")
    mode.add_argument("--quick", action="store_true", help="a few seconds (smoke)")
    ap.add_argument("--peer", choices=["none", "nats"], default="none")
    ap.add_argument("--base", type=_base, default=None, help="GROUPS,SIZE,OUTSTANDING (16,100,64)")
    ap.add_argument("--groups", type=_ints, default=None, help="Paxos groups (1,4,16,64)")
    ap.add_argument("--sizes", type=_ints, default=None, help="bytes (100,1024,16384,262144)")
    ap.add_argument("--levels", type=_ints, default=None, help="outstanding (1,16,64,256)")
    ap.add_argument("--seconds", type=float, default=None, help="measured window (default 4)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up s (default 1)")
    ap.add_argument("--segment", default=None, help="PLog segment size (default 64MiB)")
    harness.output_args(ap)
    args = ap.parse_args(argv)
    quick = args.quick
    harness.fill_defaults(
        args,
        {
            "base": (4, 100, 16) if quick else (16, 100, 64),
            "groups": [1, 4] if quick else [1, 4, 16, 64],
            "sizes": [100, 16384] if quick else [100, 1024, 16384, 262144],
            "levels": [1, 16] if quick else [1, 16, 64, 256],
            "seconds": 0.5 if quick else 4.0,
            "warmup": 0.2 if quick else 1.0,
            "segment": "4MiB" if quick else harness.SEGMENT_BYTES,
        },
    )
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main("curves", argv, parse_args, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
