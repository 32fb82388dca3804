"""Where a sequential enqueue's time goes: a timeline of its critical path across processes.

    .venv/bin/python -m bench.trace_path [--count 3000] [--warmup 300] [--groups 1]

Starts a fresh local 3-replica cluster (real processes, fdatasync on) with ``PHXQ_TRACE`` set
(see :mod:`phxq.trace`), sends ``count`` sequential 100 B enqueues from this process, stops the
cluster (each process writes its marks when it exits) and merges every process's marks into
one timeline (``CLOCK_MONOTONIC`` is shared by the processes of a machine). Each enqueue is one
cycle, from the client's ``client.batch`` mark to the next; for every (process, mark) seen in
at least 90% of the cycles it prints the median time since the cycle began and the median step
from the mark before it on the critical path. With one group, store 1 is the master.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

_PREFIX = Path(tempfile.mkdtemp(prefix="phxq-trace-")) / "marks"
os.environ["PHXQ_TRACE"] = str(_PREFIX)  # before phxq is imported: phxq.trace reads it once

from phxq import trace  # noqa: E402
from phxq.client import Client  # noqa: E402
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config  # noqa: E402


async def _enqueue(addrs: list[str], count: int) -> None:
    async with Client(addrs) as client:
        for i in range(count):
            await client.enqueue("orders", b"x" * 100, key=f"k{i}")


def _read(prefix: Path, names: dict[int, str]) -> list[tuple[int, str, str]]:
    marks = []
    for path in prefix.parent.glob(prefix.name + ".*"):
        pid = int(path.suffix[1:])
        who = names.get(pid, f"pid{pid}")
        for line in path.read_text().splitlines():
            t, _, name = line.partition(" ")
            marks.append((int(t), who, name))
    marks.sort()
    return marks


def analyse(marks: list[tuple[int, str, str]], warmup: int, share: float = 0.9) -> str:
    cycles: list[dict[tuple[str, str], int]] = []
    start = 0
    for t, who, name in marks:
        if who == "client" and name == "client.batch":
            start = t
            cycles.append({})
        elif cycles:
            # The n-th occurrence of a mark in a cycle is its own row ("in.Accepted#2").
            cycle, key = cycles[-1], (who, name)
            n = 1
            while key in cycle:
                n += 1
                key = (who, f"{name}#{n}")
            cycle[key] = t - start
    cycles = cycles[warmup:-1]  # the last one may be cut off by the shutdown
    if not cycles:
        return "no complete cycles"
    keys: dict[tuple[str, str], list[int]] = {}
    for c in cycles:
        for k, v in c.items():
            keys.setdefault(k, []).append(v)
    rows = [
        (statistics.median(v), k)
        for k, v in keys.items()
        if len(v) >= share * len(cycles) and k[1] != "client.batch"
    ]
    rows.sort()
    out = [f"{len(cycles)} sequential enqueues (median µs since the client's call)", ""]
    out.append("| µs | step µs | process | mark |")
    out.append("|---:|---:|---|---|")
    prev = 0.0
    for offset, (who, name) in rows:
        out.append(f"| {offset / 1000:.0f} | {(offset - prev) / 1000:.0f} | {who} | {name} |")
        prev = offset
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--share", type=float, default=0.9, help="rows seen in this share of cycles")
    args = ap.parse_args()
    assert trace.ON, "PHXQ_TRACE must be set before phxq is imported"
    with tempfile.TemporaryDirectory(prefix="phxq-trace-cluster-") as tmp:
        ports = free_ports(6)
        config = write_dev_config(
            Path(tmp), groups=args.groups, store_ports=ports[:3], lock_ports=ports[3:]
        )
        cluster = ProcessCluster(config)
        names = {os.getpid(): "client"}
        try:
            cluster.start()
            cluster.wait_ready(60)
            for (role, node), p in cluster.procs.items():
                if p.popen is not None:
                    names[p.popen.pid] = f"{role}{node}"
            asyncio.run(_enqueue(cluster.store_addresses, args.count))
        finally:
            cluster.stop()
    trace._dump()
    print(analyse(_read(_PREFIX, names), args.warmup, args.share))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
