"""Store sets: msgs/s and CPU per message per set with 1 set and with 2 sets, in the same run,
and the capacity that sets on separate machines project to (DESIGN.md §5.1, issue 18).

    .venv/bin/python -m bench.sets                 # ~1 minute: 3 rounds of each case
    .venv/bin/python -m bench.sets --quick         # a few seconds (smoke)
        [--seconds 8] [--warmup 2] [--rounds 3] [--outstanding 64] [--groups 16] [--size 100]

**What runs.** Two clusters, one after the other, started fresh by this command (real store
processes, ``phxq.devcluster``, fdatasync before every ack, 127.0.0.1, production 64 MiB PLog
segments): *1 set* = 3 stores, the topic's 64 queues all on set 1; *2 sets* = 6 stores (two
independent Paxos clusters of 3), the same topic's 64 queues dealt over both sets (queue q on
set ``q % 2 + 1``). Each round drives ``phxq.benchmark.run_throughput`` (the ``scripts/bench``
loop: producer tasks, client batching on, keys over 1024 names so every queue is used) with
``--outstanding`` producers *per set* (so each set sees the same offered load in both cases),
for ``--seconds`` after ``--warmup``; rounds alternate the cases (1, 2, 1, 2...) so a change
in the machine's load hits both.

**What is measured, per set.** Messages: the window's messages (``run_throughput``'s count),
split over the sets by the share of the window's acks whose queue each set holds (the cluster
map's placement). CPU: user+sys
seconds of the set's store processes over the window (``/proc/<pid>/stat``, via
``phxq.benchmark.CpuMeter``). CPU per message = set CPU / set messages; msgs/s = set messages
/ window. The busiest store of the set (the most CPU per message) is reported too: a store
process is single-threaded, so it is what saturates first.

**Capacity table (the method).** On separate machines sets share nothing: each set's stores
run on their own cores, and sets never talk to each other on the data path (§5.1), so N sets
carry N times what one set carries as long as the per-set cost does not grow with N. One set's
CPU-bound capacity is ``1 / (busiest store's CPU seconds per message)`` msgs/s: the point where
that store's process uses a whole core. The table projects ``N x`` that capacity from the
per-set CPU per message measured with 1 set and with 2 sets (the 2-set figure is the mean of
the two sets), and states the ratio of the two: a ratio near 1.0 is the "no cross-set
overhead" claim, measured. What the projection leaves out: disks (fdatasync latency is per
machine, so separate machines do not share it: it is in the measured CPU only as waits), the
network between DCs, and the producers (the load driver here is one process); the measured
msgs/s on this machine are printed beside it and are not the projection (here every set shares
this machine's cores).

Output: ``bench/results/sets-<commit>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import harness
from phxq import benchmark
from phxq.client import Client
from phxq.devcluster import ProcessCluster
from phxq.net.loop import run as run_loop

TOPIC = "bench"
QUEUES = 64
PROJECTED = (1, 2, 4, 8, 16)


def set_cluster(
    base: Path, sets: int, args: argparse.Namespace
) -> contextlib.AbstractContextManager[ProcessCluster]:
    """``sets`` store sets of 3 stores (fresh, under ``base``), the bench topic's queues dealt
    over all of them: ``harness.store_cluster``'s context manager."""
    return harness.store_cluster(
        base, groups=args.groups, topics={TOPIC: QUEUES}, segment_bytes=args.segment, sets=sets
    )


async def one_round(cluster: ProcessCluster, sets: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measured window on ``cluster`` (see the module docstring); the per-set figures."""
    set_of_store = {f"store{s.id}": s.set for s in cluster.config.stores}
    meter = benchmark.CpuMeter(harness.store_pids(cluster))
    perf = time.perf_counter
    set_of_addr = {s.addr: s.set for s in cluster.config.stores}
    acked: Counter[int] = Counter()
    requests: Counter[int] = Counter()
    async with Client(cluster.store_addresses) as client:
        cmap = await client.cluster_map()
        placement = cmap.placement[TOPIC]
        window = [0.0, 0.0]
        call = client._pool.call  # counted: CPU per message falls as batches grow

        async def counted(addr: str, method: str, params: Any, **kw: Any) -> Any:
            if method == "enqueue" and window[0] <= perf() <= window[1]:
                requests[set_of_addr.get(addr, 0)] += 1
            return await call(addr, method, params, **kw)

        client._pool.call = counted  # type: ignore[method-assign]

        async def send(payload: bytes, key: str) -> object:
            ack = await client.enqueue(TOPIC, payload, key=key)
            if window[0] <= perf() <= window[1]:
                acked[placement[ack.queue]] += 1
            return ack

        window[0] = perf() + args.warmup
        window[1] = window[0] + args.seconds
        result = await benchmark.run_throughput(
            send,
            outstanding=args.outstanding * sets,
            seconds=args.seconds,
            size=args.size,
            warmup=args.warmup,
            cpu=meter,
        )
    per_set = {}
    seen = sum(acked.values())
    for number in range(1, sets + 1):
        stores = {k: v for k, v in result.cpu_s.items() if set_of_store.get(k) == number}
        # The window's messages, split by the share of the acks each set sent in it.
        msgs = round(result.messages * acked[number] / seen) if seen else 0
        per_set[str(number)] = {
            "messages": msgs,
            "msgs_per_s": round(msgs / args.seconds, 1),
            "msgs_per_request": round(msgs / requests[number], 1) if requests[number] else None,
            "store_cpu_s": stores,
            "cpu_us_per_msg": round(sum(stores.values()) * 1e6 / msgs, 1) if msgs else None,
            "busiest_store_us_per_msg": round(max(stores.values()) * 1e6 / msgs, 1)
            if msgs and stores
            else None,
        }
    row = result.to_json()
    row["params"].update(
        sets=sets, groups=args.groups, batching=True, outstanding_per_set=args.outstanding
    )
    row["per_set"] = per_set
    print(
        f"{sets} set(s): {result.msgs_per_s:,.0f} msgs/s, errors {result.errors}, per set "
        + ", ".join(
            f"{n}: {p['msgs_per_s']:,.0f} msgs/s {p['cpu_us_per_msg']} us/msg"
            for n, p in per_set.items()
        ),
        flush=True,
    )
    return row


def _median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return round(statistics.median(real), 1) if real else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per case: median msgs/s (total and per set), per-set CPU per message and busiest store
    per message (2 sets: the mean of both sets' medians); and the capacity projection."""
    cases: dict[str, Any] = {}
    for sets in (1, 2):
        rows = [r for r in runs if r["params"]["sets"] == sets]
        per_set = {
            n: {
                key: _median([r["per_set"][n][key] for r in rows])
                for key in (
                    "msgs_per_s",
                    "msgs_per_request",
                    "cpu_us_per_msg",
                    "busiest_store_us_per_msg",
                )
            }
            for n in (rows[0]["per_set"] if rows else {})
        }
        cpu = [p["cpu_us_per_msg"] for p in per_set.values() if p["cpu_us_per_msg"]]
        busiest = [
            p["busiest_store_us_per_msg"] for p in per_set.values() if p["busiest_store_us_per_msg"]
        ]
        cases[str(sets)] = {
            "rounds": len(rows),
            "msgs_per_s": _median([r["msgs_per_s"] for r in rows]),
            "per_set": per_set,
            "cpu_us_per_msg_per_set": round(statistics.mean(cpu), 1) if cpu else None,
            "busiest_store_us_per_msg": round(statistics.mean(busiest), 1) if busiest else None,
        }
    one, two = cases["1"], cases["2"]
    capacity = {}
    for key, case in (("from_1_set", one), ("from_2_sets", two)):
        busy = case["busiest_store_us_per_msg"]
        one_set = 1e6 / busy if busy else None
        capacity[key] = {
            "per_set_msgs_per_s": None if one_set is None else round(one_set),
            "projected": {
                str(n): None if one_set is None else round(n * one_set) for n in PROJECTED
            },
        }
    a, b = one["cpu_us_per_msg_per_set"], two["cpu_us_per_msg_per_set"]
    ratio = round(b / a, 3) if a and b else None
    return {"cases": cases, "capacity": capacity, "cpu_ratio_2_sets_over_1": ratio}


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with harness.workdir(args.dir, "phxq-sets-") as base:
        env = benchmark.environment(base)
        with set_cluster(base / "one", 1, args) as one, set_cluster(base / "two", 2, args) as two:
            for _ in range(args.rounds):
                runs.append(run_loop(one_round(one, 1, args)))
                runs.append(run_loop(one_round(two, 2, args)))
    settings = {
        "mode": "quick" if args.quick else "full",
        "topic_queues": QUEUES,
        "groups_per_set": args.groups,
        "outstanding_per_set": args.outstanding,
        "size": args.size,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "segment_bytes": args.segment,
    }
    return harness.finish_report(env, started, settings, summary=summarize(runs), runs=runs)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(report: dict[str, Any]) -> list[str]:
    s, summ = report["settings"], report["summary"]
    lines = harness.header(report, f"phxq store sets: 1 set vs 2 sets ({s['mode']})")
    lines += [
        f"Both clusters up at once, rounds alternating (1 set, 2 sets) x {s['rounds']}: 3 stores "
        f"per set, {s['groups_per_set']} Paxos groups per set, topic of {s['topic_queues']} "
        f"queues (2 sets: dealt over both), {s['outstanding_per_set']} producers per set, "
        f"{s['size']} B messages, {s['seconds']} s measured after {s['warmup_s']} s; fdatasync "
        "before every ack. Medians over the rounds.",
        "",
        "| case | set | msgs/s (this machine) | msgs/request | store CPU us/msg (set) | "
        "busiest store us/msg |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for sets, case in summ["cases"].items():
        name = f"{sets} set{'s' if sets != '1' else ''}"
        for n, p in case["per_set"].items():
            lines.append(
                f"| {name} | {n} | {_num(p['msgs_per_s'])} | {p['msgs_per_request']} | "
                f"{p['cpu_us_per_msg']} | {p['busiest_store_us_per_msg']} |"
            )
        lines.append(f"| {name} | all | {_num(case['msgs_per_s'])} | | | |")
    lines += [
        "",
        f"Store CPU per message per set, 2 sets over 1 set: **{summ['cpu_ratio_2_sets_over_1']}** "
        "(1.0 = no cross-set overhead).",
        "",
        "## Capacity: sets on separate machines (projected)",
        "",
        "One set carries `1 / (busiest store's CPU s per message)` msgs/s when that store's "
        "process uses a whole core; sets share nothing on the data path, so N sets on separate "
        "machines carry N times that (the method: module docstring of `bench/sets.py`; disks, "
        "network and producers are not in it).",
        "",
        "| sets | projected msgs/s (from the 1-set run) | projected msgs/s (from the 2-set run) |",
        "|---|---|---|",
    ]
    cap = summ["capacity"]
    for n in PROJECTED:
        a = cap["from_1_set"]["projected"][str(n)]
        b = cap["from_2_sets"]["projected"][str(n)]
        lines.append(f"| {n} | {_num(a)} | {_num(b)} |")
    lines += ["", "### All runs", "", benchmark.markdown_table(report["runs"])]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.parser("sets", __doc__)
    ap.add_argument("--quick", action="store_true", help="a few seconds (smoke)")
    ap.add_argument("--seconds", type=float, default=None, help="measured window (default 8)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up s (default 2)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per case (default 3)")
    ap.add_argument("--outstanding", type=int, default=64, help="producers per set")
    ap.add_argument("--groups", type=int, default=None, help="Paxos groups per set (16)")
    ap.add_argument("--size", type=int, default=100, help="message bytes")
    ap.add_argument("--segment", default=None, help="PLog segment size (default 64MiB)")
    harness.output_args(ap)
    args = ap.parse_args(argv)
    quick = args.quick
    harness.fill_defaults(
        args,
        {
            "seconds": 0.5 if quick else 8.0,
            "warmup": 0.2 if quick else 2.0,
            "rounds": 1 if quick else 3,
            "groups": 4 if quick else 16,
            "segment": "4MiB" if quick else harness.SEGMENT_BYTES,
        },
    )
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main("sets", argv, parse_args, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
