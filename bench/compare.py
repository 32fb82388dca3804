"""Several benchmark JSON files -> one markdown comparison table.

    .venv/bin/python -m bench.compare bench/results/a.json bench/results/b.json [...]
    scripts/bench_compare bench/results/*.json

One row per case (system, run, groups, size, outstanding, batching) that any file has; for each
file the columns msgs/s, p50 and p99.9 (ms), and with two or more files the last file's msgs/s
and p50 relative to the first's (``x1.50`` = 1.5 times the first). A case a file lacks shows
``-``. Reads the output of ``bench.run_all`` (``runs``), the older ``bench.enqueue`` files
(``results``) and single ``phxq bench --json`` results. Columns are named ``<label>@<commit>``
(the file name when those are absent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Key = tuple[str, str, str, str, str, str]


def load(path: Path) -> tuple[str, list[dict[str, Any]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read benchmark JSON: {exc}") from exc
    runs = data.get("runs", data.get("results")) if isinstance(data, dict) else None
    if runs is None and isinstance(data, dict) and "latency_ms" in data:
        runs = [data]  # one ``phxq bench --json`` result
    if not isinstance(runs, list):
        raise SystemExit(f"{path}: no 'runs' list: not a benchmark result file")
    env = data.get("environment", {})
    label = data.get("settings", {}).get("label")
    name = f"{label}@{env['commit']}" if label and env.get("commit") else path.stem
    return name, runs


def case_key(run: dict[str, Any]) -> Key:
    p = run.get("params", {})
    batching = p.get("batching")
    return (
        run.get("system", "phxq"),
        run["name"],
        str(p.get("groups", "-")),
        str(p.get("size", "-")),
        str(p.get("outstanding", "-")),
        "-" if batching is None else ("yes" if batching else "no"),
    )


def _sort_key(key: Key) -> tuple[Any, ...]:
    def num(s: str) -> int:
        return int(s) if s.isdigit() else -1

    system, name, groups, size, outstanding, batching = key
    return (system, name != "latency", num(groups), num(size), num(outstanding), batching)


def _times(new: float, old: float) -> str:
    return f"x{new / old:.2f}" if old else "-"


def table(files: list[tuple[str, list[dict[str, Any]]]]) -> str:
    by_file: list[dict[Key, dict[str, Any]]] = [{case_key(r): r for r in runs} for _, runs in files]
    keys = sorted({k for runs in by_file for k in runs}, key=_sort_key)
    head = ["system", "run", "groups", "size B", "outstanding", "batching"]
    for name, _ in files:
        head += [f"{name} msgs/s", f"{name} p50", f"{name} p99.9"]
    compare = len(files) > 1
    if compare:
        head += ["msgs/s last/first", "p50 last/first"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        row = list(key)
        for runs in by_file:
            r = runs.get(key)
            if r is None:
                row += ["-", "-", "-"]
            else:
                lat = r["latency_ms"]
                row += [f"{r['msgs_per_s']:,.0f}", f"{lat['p50']:.3f}", f"{lat['p99.9']:.3f}"]
        if compare:
            first, last = by_file[0].get(key), by_file[-1].get(key)
            if first and last:
                row += [
                    _times(last["msgs_per_s"], first["msgs_per_s"]),
                    _times(last["latency_ms"]["p50"], first["latency_ms"]["p50"]),
                ]
            else:
                row += ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("files", nargs="+", type=Path, help="benchmark JSON files, oldest first")
    args = ap.parse_args(argv)
    print(table([load(p) for p in args.files]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
