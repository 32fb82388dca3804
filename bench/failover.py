"""Failover: a producer's longest pause when a group's master fails, and spurious elections.

    .venv/bin/python -m bench.failover                 # ~4 min: 3 repeats of each fault
    .venv/bin/python -m bench.failover --quick         # ~1 min: a smoke run, no figures
    .venv/bin/python -m bench.failover --lease 1s --heartbeat 100ms   # other lease settings

A real cluster of 3 store processes (fdatasync on). Around each fault two producers write to
queues of group 0 through :class:`phxq.Client` with its default settings: one sequential
(enqueue, await the ack, next) and one with ``--window`` (8) enqueues outstanding. The faults,
each on group 0's master, each ``--repeats`` times:

- ``kill``: SIGKILL; the store is restarted after ``--down`` seconds;
- ``stop``: SIGSTOP (a process pause: its sockets stay open and silent); SIGCONT after ``--down``;
- ``partition``: a kernel-level partition. Every store runs in its own network namespace,
  joined by veth pairs to a bridge (the producers' side); the fault sets the master's bridge
  port down, so every packet to or from it is dropped silently, and heals it after ``--down``.
  Needs root and ``ip`` (iproute2); without them this fault is skipped and the report says why.

Per fault: the longest gap between two acks of each producer that overlaps the fault (``pause``),
how long after the fault a surviving store first claimed group 0 (``elected``: the Paxos side;
``pause - elected`` is the client's side), and the longest gap after the heal, when the preferred
store takes its group back (``return``).

Spurious elections: ``--steady`` seconds with no fault, producers loading every group
(``--load`` outstanding enqueues), once on an otherwise idle machine and once with ``--hogs``
busy processes (default: one per CPU) competing for the CPUs; "became master" log lines of every
store are counted. Any election there is spurious: no store failed.

For "before" figures, copy this file into a checkout of an older commit and run it there with
``--no-netns`` (that commit's ``ProcessCluster`` cannot run daemons in namespaces).

Writes ``bench/results/failover-<commit>-<time>.{json,md}``. Figures need a quiet machine (say
the load average, which the report records); ``--quick`` is only a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import phxq
from phxq import benchmark
from phxq.devcluster import ProcessCluster, free_ports
from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool

RESULTS = Path(__file__).resolve().parent / "results"
TOPIC = "fo"
FAULTS = ("kill", "stop", "partition")
ELECTED = b"became master"


# ------------------------------------------------------------------------------ network


class Loopback:
    """Every store on 127.0.0.1 (no partition)."""

    why_no_partition = "not root, or network namespaces unavailable"

    def __init__(self, n: int) -> None:
        self.ports = free_ports(n)

    def addr(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i - 1]}"

    def wrap(self, role: str, node: str) -> list[str]:
        return []

    def cut(self, i: int) -> None:
        raise NotImplementedError(self.why_no_partition)

    def heal(self, i: int) -> None:
        raise NotImplementedError(self.why_no_partition)

    def close(self) -> None:
        pass


class Namespaces(Loopback):
    """Store ``i`` in network namespace ``pxfo<pid>-<i>`` at ``10.213.<k>.<i+1>``, its veth
    pair's other end on a bridge that holds ``10.213.<k>.1`` (this process's side)."""

    def __init__(self, n: int) -> None:
        tag = os.getpid() % 100000
        self.bridge = f"pxb{tag}"
        self.ns = {i: f"pxfo{tag}-{i}" for i in range(1, n + 1)}
        self.host_if = {i: f"pxh{tag}-{i}" for i in range(1, n + 1)}
        used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        k = next(k for k in range(20, 250) if f"10.213.{k}." not in used)
        self.net = f"10.213.{k}"
        self.port = 7000
        self._made: list[list[str]] = []  # undo commands, newest last
        try:
            self._ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(["link", "del", self.bridge])
            self._ip("addr", "add", f"{self.net}.1/24", "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")
            for i, ns in self.ns.items():
                self._ip("netns", "add", ns)
                self._made.append(["netns", "del", ns])
                inner = f"pxn{tag}-{i}"
                self._ip("link", "add", self.host_if[i], "type", "veth", "peer", "name", inner)
                self._ip("link", "set", inner, "netns", ns)
                self._ip("link", "set", self.host_if[i], "master", self.bridge, "up")
                self._ip("-n", ns, "addr", "add", f"{self.net}.{i + 1}/24", "dev", inner)
                self._ip("-n", ns, "link", "set", inner, "up")
                self._ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> str | None:
        """None when namespaces can be made here, else why not."""
        if os.geteuid() != 0:
            return "needs root (network namespaces, veth pairs and a bridge)"
        if shutil.which("ip") is None:
            return "needs `ip` (iproute2)"
        probe = f"pxfo{os.getpid() % 100000}-probe"
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return None

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def addr(self, i: int) -> str:
        return f"{self.net}.{i + 1}:{self.port}"

    def wrap(self, role: str, node: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[int(node)]]

    def cut(self, i: int) -> None:
        self._ip("link", "set", self.host_if[i], "down")

    def heal(self, i: int) -> None:
        self._ip("link", "set", self.host_if[i], "up")

    def close(self) -> None:
        while self._made:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._ip(*self._made.pop())


# ------------------------------------------------------------------------------ cluster


def write_config(base: Path, net: Loopback, groups: int, cluster_options: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    lines = ["[cluster]", f"groups = {groups}", 'segment_bytes = "8MiB"', cluster_options, ""]
    for i in (1, 2, 3):
        lines += ["[[store]]", f"id = {i}", f'addr = "{net.addr(i)}"', f'dc = "dc{i}"']
        lines += [f'data = "store{i}"', ""]
    lines += ["[[topic]]", f'name = "{TOPIC}"', f"queues = {2 * groups}", ""]
    path = base / "cluster.toml"
    path.write_text("\n".join(lines))
    return path


def elections(cluster: ProcessCluster) -> int:
    """ "became master" lines in every store's log so far."""
    assert cluster.log_dir is not None
    return sum(p.read_bytes().count(ELECTED) for p in cluster.log_dir.glob("store*.log"))


async def master_of(pool: RpcPool, addrs: dict[int, str], group: int) -> int | None:
    """The store that says it is master of ``group`` (None: none of them, right now)."""
    for node, addr in addrs.items():
        with contextlib.suppress(PhxqError, AttributeError):
            meta = await pool.call(addr, "meta", {}, timeout=0.3)
            if meta["masters"].get(str(group)) == node:
                return node
    return None


async def wait_master(
    pool: RpcPool, addrs: dict[int, str], group: int, node: int, t: float
) -> None:
    deadline = time.monotonic() + t
    while await master_of(pool, {node: addrs[node]}, group) != node:
        if time.monotonic() > deadline:
            raise TimeoutError(f"store {node} did not take group {group} back within {t:g}s")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- producers


@dataclass
class Producer:
    """``window`` enqueue loops on one queue; every ack's time."""

    name: str
    queue: int
    window: int
    acks: list[float] = field(default_factory=list)
    failed: int = 0

    async def run(self, client: phxq.Client, stop: asyncio.Event) -> None:
        async def loop(k: int) -> None:
            seq = 0
            while not stop.is_set():
                dedup = f"{self.name}-{k}-{seq}"
                try:
                    await client.enqueue(TOPIC, b"x" * 100, queue=self.queue, dedup_id=dedup)
                except PhxqError:
                    self.failed += 1  # retried with the same dedup id
                    continue
                self.acks.append(time.monotonic())
                seq += 1

        await asyncio.gather(*(loop(k) for k in range(self.window)))

    def longest_gap(self, start: float, end: float) -> float:
        """The longest gap between two acks that overlaps [start, end]; when no ack came
        after ``start`` yet, the time since the last one (a lower bound)."""
        acks = self.acks
        before = [a for a in acks if a <= start]
        gaps = [b - a for a, b in pairwise(acks) if b > start and a < end]
        if before and not any(a > start for a in acks):
            gaps.append(end - before[-1])
        return max(gaps, default=0.0)


async def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------- runs


async def one_fault(
    cluster: ProcessCluster,
    net: Loopback,
    client: phxq.Client,
    pool: RpcPool,
    fault: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    addrs = {i: net.addr(i) for i in (1, 2, 3)}
    victim = await master_of(pool, addrs, 0)
    if victim is None:
        raise RuntimeError("group 0 has no master before the fault")
    groups = args.groups
    producers = [Producer("seq", 0, 1), Producer("win", groups, args.window)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(p.run(client, stop)) for p in producers]
    try:
        await asyncio.sleep(args.warmup)
        before = elections(cluster)
        inflict, end = {
            "kill": (cluster.kill, cluster.restart),
            "stop": (cluster.pause, cluster.resume),
            "partition": (net.cut, net.heal),
        }[fault]
        t_fault = time.monotonic()
        inflict(victim)
        survivors = {i: a for i, a in addrs.items() if i != victim}
        elected = None
        while time.monotonic() - t_fault < args.down:
            if elected is None and await master_of(pool, survivors, 0) is not None:
                elected = time.monotonic() - t_fault
            await asyncio.sleep(0.01)
        t_heal = time.monotonic()
        end(victim)
        await wait_master(pool, addrs, 0, 1, args.settle)
        await asyncio.sleep(args.after)
        t_end = time.monotonic()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "fault": fault,
        "victim": victim,
        "elected": elected,
        "pause": {p.name: round(p.longest_gap(t_fault, t_heal), 3) for p in producers},
        "return": {p.name: round(p.longest_gap(t_heal, t_end), 3) for p in producers},
        "acks": {p.name: len(p.acks) for p in producers},
        "failed_attempts": sum(p.failed for p in producers),
        "elections": elections(cluster) - before,
    }


async def steady(
    cluster: ProcessCluster, client: phxq.Client, args: argparse.Namespace, hogs: int
) -> dict[str, Any]:
    """No fault: count elections while every group is loaded (and ``hogs`` CPU burners run)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    per_queue = max(1, args.load // (2 * args.groups))
    producers = [Producer(f"steady{q}", q, per_queue) for q in range(2 * args.groups)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(p.run(client, stop)) for p in producers]
    try:
        await asyncio.sleep(1.0)
        before = elections(cluster)
        t0 = time.monotonic()
        await asyncio.sleep(args.steady)
        counted = elections(cluster) - before
        t1 = time.monotonic()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for b in burners:
            b.kill()
            b.wait()
    acks = sum(1 for p in producers for a in p.acks if t0 <= a <= t1)
    return {
        "hogs": hogs,
        "seconds": args.steady,
        "outstanding": per_queue * len(producers),
        "msgs_per_s": round(acks / (t1 - t0)),
        "longest_gap": round(max(p.longest_gap(t0, t1) for p in producers), 3),
        "elections": counted,
    }


async def measure(cluster: ProcessCluster, net: Loopback, args: argparse.Namespace) -> Any:
    faults: list[dict[str, Any]] = []
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        for fault in args.faults:
            if fault == "partition" and not isinstance(net, Namespaces):
                continue
            for rep in range(args.repeats):
                run = await one_fault(cluster, net, client, pool, fault, args)
                run["repeat"] = rep
                faults.append(run)
                print(json.dumps(run), flush=True)
        quiet = [await steady(cluster, client, args, 0)]
        if args.hogs:
            quiet.append(await steady(cluster, client, args, args.hogs))
        for s in quiet:
            print(json.dumps(s), flush=True)
    return faults, quiet


def summarize(faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for fault in FAULTS:
        runs = [r for r in faults if r["fault"] == fault]
        if not runs:
            continue
        for name in ("seq", "win"):
            pauses = sorted(r["pause"][name] for r in runs)
            rows.append(
                {
                    "fault": fault,
                    "producer": name,
                    "pause_max": max(pauses),
                    "pause_median": pauses[len(pauses) // 2],
                    "elected_max": max((r["elected"] or 0.0) for r in runs),
                    "return_max": max(r["return"][name] for r in runs),
                    "repeats": len(runs),
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]], quiet: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        f"# failover ({meta['settings']}, groups={meta['groups']}, commit {meta['commit']})",
        "",
        f"load average before: {meta['load_avg']}; partition: {meta['partition']}",
        "",
        "| fault | producer | longest pause (max) | median | elected after (max) "
        "| return pause (max) | repeats |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['fault']} | {r['producer']} | {r['pause_max']:.3f} s "
            f"| {r['pause_median']:.3f} s | {r['elected_max']:.3f} s | {r['return_max']:.3f} s "
            f"| {r['repeats']} |"
        )
    out += ["", "| steady run | CPU hogs | outstanding | msgs/s | longest gap | elections |"]
    out.append("|---|---|---|---|---|---|")
    for s in quiet:
        out.append(
            f"| {s['seconds']:g} s | {s['hogs']} | {s['outstanding']} | {s['msgs_per_s']} "
            f"| {s['longest_gap']:.3f} s | {s['elections']} |"
        )
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 repeat, short")
    parser.add_argument("--faults", default=",".join(FAULTS), help="kill,stop,partition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--window", type=int, default=8, help="the second producer's window")
    parser.add_argument("--lease", default=None, help='e.g. "1s" (default: the config default)')
    parser.add_argument("--heartbeat", default=None, help='e.g. "100ms" (default: config)')
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--down", type=float, default=4.0, help="seconds the fault lasts")
    parser.add_argument("--after", type=float, default=2.0, help="seconds after the take-back")
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--steady", type=float, default=60.0, help="fault-free seconds")
    parser.add_argument("--load", type=int, default=64, help="outstanding in the steady run")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-netns", action="store_true", help="stores on 127.0.0.1")
    parser.add_argument("--dir", default=None, help="where the temporary cluster goes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    if parser.parse_known_args(argv)[0].quick:  # its settings, unless given explicitly
        parser.set_defaults(repeats=1, groups=4, warmup=1.0, down=3.0, after=1.0, steady=5.0)
    args = parser.parse_args(argv)
    args.faults = [f for f in args.faults.split(",") if f]
    if bad := set(args.faults) - set(FAULTS):
        parser.error(f"unknown faults {sorted(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from phxq.net.loop import run as run_loop

    why = "disabled (--no-netns)" if args.no_netns else Namespaces.available()
    options = "\n".join(
        [
            *([f'lease = "{args.lease}"'] if args.lease else []),
            *([f'heartbeat_interval = "{args.heartbeat}"'] if args.heartbeat else []),
        ]
    )
    env = benchmark.environment()
    net: Loopback = Loopback(3) if why else Namespaces(3)
    try:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="phxq-failover-") as tmp:
            config = write_config(Path(tmp) / "cluster", net, args.groups, options)
            # No ``wrap`` without namespaces: this file then also runs on commits before it
            # existed (copy it there for "before" figures, with --no-netns).
            wrap = {} if why else {"wrap": net.wrap}
            cluster = ProcessCluster(config, **wrap)  # type: ignore[arg-type]
            cluster.start()
            try:
                cluster.wait_ready(60)
                settings = cluster.config.cluster
                faults, quiet = run_loop(measure(cluster, net, args))
            except BaseException:
                print(cluster.logs(tail=20), file=sys.stderr)
                raise
            finally:
                cluster.stop()
    finally:
        net.close()
    rows = summarize(faults)
    meta = {
        "commit": env.get("commit", "unknown")[:10],
        "load_avg": env.get("load_avg"),
        "groups": args.groups,
        "settings": f"lease={settings.lease:g}s heartbeat={settings.heartbeat_interval:g}s",
        "partition": "network namespaces" if why is None else f"skipped: {why}",
        "quick": args.quick,
    }
    stamp = time.strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"failover-{meta['commit']}-{stamp}"
    report = {"meta": meta, "summary": rows, "faults": faults, "steady": quiet, "environment": env}
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    table = markdown(rows, quiet, meta)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
