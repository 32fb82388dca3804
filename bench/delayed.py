"""Delayed and scheduled messages: release accuracy under load, and the cost of many pending.

    .venv/bin/python -m bench.delayed [--scheduled 2000] [--spread 10] [--load 32]
                                      [--pending 1000000] [--pure 1000000] [--json]
    .venv/bin/python -m bench.delayed --smoke          # a few seconds; structure only

It starts 3 stores (real processes, fsync on, 16 groups) on 127.0.0.1 in a temporary directory
and reports (numbers only, nothing asserted):

- **lateness**: ``--scheduled`` messages with ``deliver_at`` spread evenly over ``--spread``
  seconds (from 2 s ahead), over the 8 queues of ``orders``, while ``--load`` concurrent
  producers enqueue immediate messages all along. A reader long-polls every queue and notes
  when each scheduled message first becomes readable: ``visible_late`` = that minus its due
  time (what a consumer sees, p50/p99/max; never negative if nothing is early), and
  ``stamp_late`` = the release stamp (``Message.enqueued_at``) minus the due time. Also the
  immediate enqueues' latency during the run.
- **pending**: ``--pending`` messages scheduled 30 days ahead (they stay pending): the stores'
  RSS before and after (bytes per pending message), the data directory size, sequential
  immediate-enqueue latency before and with them pending, and after a whole-cluster restart
  the time until every store answers and until the masters report all of them pending again.
- **pure**: the in-memory index alone (``phxq.store.schedule.Schedule``) with ``--pure``
  entries spread over 40 days: traced bytes per entry, snapshot and restore time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from phxq.client import Client
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.store.schedule import Schedule

TOPIC = "orders"
QUEUES = 8


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    if not s:
        return {}

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 3)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0), "min_ms": at(0.0)}


def rss_bytes(cluster: ProcessCluster) -> dict[str, int]:
    out = {}
    for (role, node), proc in cluster.procs.items():
        if role != "store" or proc.popen is None or proc.popen.poll() is not None:
            continue
        for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[node] = int(line.split()[1]) * 1024
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def sequential_latency(client: Client, count: int) -> dict[str, float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        await client.enqueue(TOPIC, b"now-%d" % i, queue=i % QUEUES)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


# ------------------------------------------------------------------------------- lateness


async def lateness(client: Client, scheduled: int, spread: float, load: int) -> dict[str, Any]:
    start = time.time() + 2.0
    due: dict[bytes, float] = {}
    for i in range(scheduled):
        at = start + spread * i / max(1, scheduled - 1)
        due[f"s{i}-{at!r}".encode()] = at
    ends: dict[int, int | None] = {}
    for q in range(QUEUES):  # read only what comes after now
        msgs = await client.dequeue(None, TOPIC, queue=q, limit=1_000_000)
        ends[q] = msgs[-1].offset if msgs else None
    calls = [
        client.enqueue(TOPIC, payload, queue=i % QUEUES, deliver_at=at)
        for i, (payload, at) in enumerate(due.items())
    ]
    await asyncio.gather(*calls)
    visible: dict[bytes, float] = {}
    stamps: dict[bytes, float] = {}
    enqueue_lat: list[float] = []
    stop = asyncio.Event()

    async def reader(q: int) -> None:
        after = ends[q]
        while not stop.is_set():
            msgs = await client.dequeue(None, TOPIC, queue=q, after=after, limit=10_000, wait=1.0)
            now = time.time()
            for m in msgs:
                if m.payload in due:
                    visible.setdefault(m.payload, now)
                    stamps.setdefault(m.payload, m.enqueued_at)
            if msgs:
                after = msgs[-1].offset
            if len(visible) == len(due):
                stop.set()

    async def producer(n: int) -> None:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            await client.enqueue(TOPIC, b"load", queue=(n + i) % QUEUES)
            enqueue_lat.append(time.perf_counter() - started)
            i += 1

    deadline = start + spread + 30
    async with asyncio.TaskGroup() as tg:
        for q in range(QUEUES):
            tg.create_task(reader(q))
        for n in range(load):
            tg.create_task(producer(n))
        while not stop.is_set() and time.time() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
    return {
        "scheduled": scheduled,
        "released_seen": len(visible),
        "early": sum(1 for p, t in visible.items() if t < due[p]),
        "visible_late": percentiles([t - due[p] for p, t in visible.items()]),
        "stamp_late": percentiles([t - due[p] for p, t in stamps.items()]),
        "load_enqueues": len(enqueue_lat),
        "load_enqueue_latency": percentiles(enqueue_lat),
    }


# -------------------------------------------------------------------------------- pending


async def schedule_pending(client: Client, count: int) -> float:
    started = time.perf_counter()
    chunk = 20_000
    for first in range(0, count, chunk):
        calls = [
            client.enqueue(TOPIC, b"p%d" % i, queue=i % QUEUES, delay=30 * 86400.0)
            for i in range(first, min(count, first + chunk))
        ]
        await asyncio.gather(*calls)
    return time.perf_counter() - started


async def total_pending(client: Client) -> int:
    total = 0
    for view in (await client.status()).get("groups", []):
        total += view["scheduled"]["pending"]
    return total


async def masters_pending(cluster: ProcessCluster, client: Client) -> int:
    total = 0
    for s in cluster.config.stores:
        try:
            view = await client.status(s.addr)
        except Exception:  # a store still starting: counted on the next poll
            continue
        total += sum(g["scheduled"]["pending"] for g in view["groups"] if g["is_master"])
    return total


async def pending(cluster: ProcessCluster, data: Path, count: int) -> dict[str, Any]:
    async with Client(cluster.store_addresses, retry_timeout=60) as client:
        before = rss_bytes(cluster)
        lat_before = await sequential_latency(client, 300)
        took = await schedule_pending(client, count)
        lat_with = await sequential_latency(client, 300)
        after = rss_bytes(cluster)
    growth = {n: after[n] - before.get(n, 0) for n in after}
    disk = dir_bytes(data)
    cluster.stop()
    started = time.perf_counter()
    cluster.start()
    await cluster.wait_ready_async(600)
    ready = time.perf_counter() - started
    async with Client(cluster.store_addresses, retry_timeout=60) as client:
        while await masters_pending(cluster, client) < count:
            if time.perf_counter() - started > 1200:
                break
            await asyncio.sleep(0.2)
        all_pending = time.perf_counter() - started
        rss_restarted = rss_bytes(cluster)
    return {
        "pending": count,
        "schedule_s": round(took, 2),
        "rss_growth_bytes": growth,
        "rss_bytes_per_pending": {n: round(g / max(1, count), 1) for n, g in growth.items()},
        "rss_after_restart_bytes": rss_restarted,
        "data_dir_bytes": disk,
        "enqueue_latency_before": lat_before,
        "enqueue_latency_with_pending": lat_with,
        "restart_ready_s": round(ready, 2),
        "restart_all_pending_s": round(all_pending, 2),
    }


# ----------------------------------------------------------------------------------- pure


def pure(count: int) -> dict[str, Any]:
    rng = random.Random(1)
    now = 1.7e9
    dues = [now + rng.random() * 40 * 86400 for _ in range(count)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    schedule = Schedule()
    started = time.perf_counter()
    for i, due in enumerate(dues):
        schedule.add((i + 1) << 20, due)
    add_s = time.perf_counter() - started
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    started = time.perf_counter()
    rows = schedule.snapshot()
    snap_s = time.perf_counter() - started
    started = time.perf_counter()
    Schedule.restore(rows)
    restore_s = time.perf_counter() - started
    return {
        "entries": count,
        "bytes_per_entry": round(used / max(1, count), 1),
        "add_us_per_entry": round(add_s / max(1, count) * 1e6, 2),
        "snapshot_s": round(snap_s, 3),
        "restore_s": round(restore_s, 3),
        "snapshot_bytes": sum(len(r[1]) + len(r[2]) for r in rows),
    }


# ------------------------------------------------------------------------------------ main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"pure": pure(args.pure)}
    with tempfile.TemporaryDirectory(prefix="phxq-delayed-") as tmp:
        data = Path(tmp)
        ports = free_ports(6)
        path = write_dev_config(
            data, nodes=3, groups=16, store_ports=ports[:3], lock_ports=ports[3:]
        )
        cluster = ProcessCluster(path, log_dir=data)
        try:
            cluster.start()
            await cluster.wait_ready_async(60)
            async with Client(cluster.store_addresses) as client:
                result["lateness"] = await lateness(client, args.scheduled, args.spread, args.load)
            if args.pending:
                result["pending"] = await pending(cluster, data, args.pending)
        finally:
            cluster.stop()
    result["environment"] = {"cpus": os.cpu_count(), "load": os.getloadavg()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduled", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=10.0)
    parser.add_argument("--load", type=int, default=32, help="concurrent immediate producers")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--pure", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="tiny numbers: a few seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.scheduled, args.spread, args.load, args.pending, args.pure = 50, 1.0, 4, 2000, 10_000
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
