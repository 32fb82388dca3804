"""Is B slower than A beyond noise? Repeated ``scripts/bench`` runs of two labels, compared.

    .venv/bin/python -m bench.regression --before g1before --after g1after bench/results/s7-*.json

Reads ``bench.run_all`` JSON files (``scripts/bench ... --label L``), keeps those whose label is
``--before`` or ``--after`` (a leading ``g<groups>`` is ignored, so ``g1before`` and
``g16before`` are both "before"), and prints one markdown row per case (groups, run, batching)
and metric: the median of each side with its range and run count, after / before, and a
two-sided permutation test of the difference of medians (20,000 label shuffles, fixed seed):
the chance that runs of one code base split this unevenly by luck. Metrics: msgs/s for
throughput runs, p50 for sequential ones, and the CPU per message of all processes and of the
client alone (CPU seconds of the whole run over its messages: relative figures only).

Run the two code bases alternately (before, after, before, ...) on an otherwise idle machine, so
that drift in the machine's speed falls on both alike; a shared 2-core VM varies by 20% between
consecutive runs of one commit, which is why this counts many runs instead of trusting one.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.compare import load

SHUFFLES = 20_000
Case = tuple[int, str, bool]  # (groups, run name, batching)


def _side(label: str, before: str, after: str) -> str | None:
    bare = re.sub(r"^g\d+", "", label)
    return "before" if bare == before else "after" if bare == after else None


def collect(paths: list[Path], before: str, after: str) -> dict[tuple[Case, str], list[Any]]:
    """``(case, side) -> [(msgs/s, p50 ms, CPU µs/msg all, client CPU µs/msg), ...]``."""
    out: dict[tuple[Case, str], list[Any]] = defaultdict(list)
    for path in paths:
        _, runs = load(path)
        label = json.loads(path.read_text()).get("settings", {}).get("label") or ""
        side = _side(label, before, after)
        if side is None:
            continue
        for r in runs:
            p, cpu = r.get("params", {}), r.get("cpu_s") or {}
            n = r.get("messages") or 1
            case = (int(p.get("groups", 0)), str(r.get("name")), bool(p.get("batching")))
            every = sum(cpu.values()) / n * 1e6 if cpu else None
            client = cpu["client"] / n * 1e6 if "client" in cpu else None
            out[(case, side)].append((r["msgs_per_s"], r["latency_ms"]["p50"], every, client))
    return out


def permutation_p(a: list[float], b: list[float], seed: int = 1) -> float:
    """Two-sided: how often a random relabelling of ``a + b`` moves the medians at least as far
    apart as they are."""
    observed = abs(statistics.median(b) - statistics.median(a))
    pool, rnd, hits = a + b, random.Random(seed), 0
    for _ in range(SHUFFLES):
        rnd.shuffle(pool)
        if abs(statistics.median(pool[len(a) :]) - statistics.median(pool[: len(a)])) >= observed:
            hits += 1
    return hits / SHUFFLES


def table(data: dict[tuple[Case, str], list[Any]]) -> list[str]:
    lines = [
        "| groups | run | batching | metric | before: median (range) n | after: median (range) n "
        "| after / before | p |",
        "|---:|---|---|---|---|---|---:|---:|",
    ]
    metrics = ((0, "msgs/s"), (1, "p50 ms"), (2, "CPU µs/msg, all"), (3, "client CPU µs/msg"))
    for case in sorted({c for c, _ in data}):
        a, b = data.get((case, "before"), []), data.get((case, "after"), [])
        if not a or not b:
            continue
        for i, name in metrics:
            if i < 2 and (i == 0) == (case[1] == "latency"):
                continue  # msgs/s for throughput runs, p50 for sequential ones
            xs = [x[i] for x in a if x[i] is not None]
            ys = [y[i] for y in b if y[i] is not None]
            if not xs or not ys:
                continue
            mx, my = statistics.median(xs), statistics.median(ys)

            def cell(v: list[float], m: float) -> str:
                return f"{m:,.2f} ({min(v):,.1f} to {max(v):,.1f}) {len(v)}"

            lines.append(
                f"| {case[0]} | {case[1]} | {'on' if case[2] else 'off'} | {name} "
                f"| {cell(xs, mx)} | {cell(ys, my)} | {my / mx:.3f} | {permutation_p(xs, ys):.2f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--before", default="before", help="label of the reference runs")
    p.add_argument("--after", default="after", help="label of the runs under test")
    args = p.parse_args(argv)
    print("\n".join(table(collect(args.files, args.before, args.after))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
