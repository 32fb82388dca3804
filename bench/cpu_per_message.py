"""CPU per message: a load-independent cost measure of the enqueue path (a busy machine makes
wall-clock msgs/s noise; CPU seconds and instructions spent per message barely move).

    .venv/bin/python -m bench.cpu_per_message [--count 20000] [--outstanding 64] [--groups 16]
        [--size 100] [--rounds 3] [--no-batching] [--perf] [--syscalls] [--idle 5] [--profile DIR]

Starts a fresh 3-store cluster (``phxq.devcluster``, fdatasync on, the bench topic of
``bench/run_all.py``), then per round drives ``--count`` enqueues with ``--outstanding`` in flight
over 1024 keys (so every group is used) and prints, per message: each store's user+sys CPU
(``/proc/<pid>/stat``), their sum, the client's CPU and, with ``--perf``, each store's retired
instructions (``perf stat -e instructions -p``; not on every VM) and, with ``--syscalls``, the
stores' system calls per message (``strace -c -f``). ``--idle S`` first measures the idle cluster for
S seconds: CPU ms/s and context switches (wakeups) per second per store. ``--profile DIR``
cProfiles every store during the measured rounds only (started and stopped by SIGUSR1/SIGUSR2
through a ``sitecustomize`` hook, so any checkout can be profiled unmodified) and writes
``DIR/store<N>.prof``; profiled CPU figures are inflated, so keep them apart from the plain runs.

Uses only the devcluster/client calls older checkouts have too: to measure another checkout, run
this file with that checkout's interpreter and tree first on the path, e.g.
``cd OTHER && .venv/bin/python /tmp/cpu_per_message.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from phxq.client import Client
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.net.loop import run as run_loop

TOPIC = "bench"
QUEUES = 64

_HOOK = """
import os, signal
_dir = os.environ.get("PHXQ_BENCH_PROFILE_DIR")
if _dir:
    import cProfile, sys
    _prof = cProfile.Profile()
    def _start(signum, frame):
        _prof.enable()
    def _stop(signum, frame):
        _prof.disable()
        name = "store" + (sys.argv[sys.argv.index("--node") + 1] if "--node" in sys.argv else "")
        _prof.dump_stats(os.path.join(_dir, f"{name}-{os.getpid()}.prof"))
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
"""


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _ticks()


def proc_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` (each voluntary
    switch is one sleep, i.e. one wakeup later)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def store_pids(cluster: ProcessCluster) -> dict[str, int]:
    return {
        f"store{node}": proc.popen.pid
        for (role, node), proc in cluster.procs.items()
        if role == "store" and proc.popen is not None
    }


class _Attached:
    """A tool attached to each store pid for one measured window (``start`` .. ``stop``),
    writing into a temporary file that is read back and removed."""

    tool = ""
    suffix = ""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def command(self, pid: int, out: Path) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        for name, pid in self.pids.items():
            out = Path(tempfile.mkstemp(prefix=f"{self.tool}-{name}-", suffix=self.suffix)[1])
            cmd = self.command(pid, out)
            popen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs[name] = (popen, out)

    def _outputs(self) -> dict[str, str]:
        """Detach (SIGINT makes each tool write its summary); each pid's output."""
        texts: dict[str, str] = {}
        for name, (popen, out) in self.procs.items():
            popen.send_signal(signal.SIGINT)
            popen.wait(10)
            texts[name] = out.read_text()
            out.unlink()
        self.procs.clear()
        return texts


class Perf(_Attached):
    """``perf stat -e instructions`` attached to each pid for one measured window."""

    tool, suffix = "perf", ".csv"

    def command(self, pid: int, out: Path) -> list[str]:
        return ["perf", "stat", "-x", ",", "-e", "instructions", "-p", str(pid), "-o", str(out)]

    def stop(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        for name, text in self._outputs().items():
            for line in text.splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[2].startswith("instructions") and parts[0].isdigit():
                    counts[name] = float(parts[0])
        return counts


class Strace(_Attached):
    """``strace -c -f`` attached to each pid for one window: system calls per message (slows
    the stores a lot: counts, not time, are the figure)."""

    tool, suffix = "strace", ".txt"

    def command(self, pid: int, out: Path) -> list[str]:
        return ["strace", "-c", "-f", "-p", str(pid), "-o", str(out)]

    def stop(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for name, text in self._outputs().items():
            calls: dict[str, int] = {}
            for line in text.splitlines():
                parts = line.split()
                # "% time seconds usecs/call calls [errors] syscall"
                if len(parts) >= 5 and parts[3].isdigit() and not line.startswith("100"):
                    calls[parts[-1]] = int(parts[3])
            counts[name] = calls
        return counts


async def drive(client: Client, count: int, outstanding: int, size: int) -> tuple[int, float]:
    """``count`` enqueues, ``outstanding`` in flight; returns (errors, wall seconds)."""
    payload = os.urandom(size)
    keys = [f"k{i}" for i in range(1024)]
    next_i = 0
    errors = 0

    async def worker() -> None:
        nonlocal next_i, errors
        while next_i < count:
            i = next_i
            next_i += 1
            try:
                await client.enqueue(TOPIC, payload, key=keys[(i * 7) % 1024])
            except Exception:  # counted and reported: a benchmark measures, it does not stop
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(outstanding)))
    return errors, time.perf_counter() - t0


def count_requests(client: Client) -> list[int]:
    """Count the client's ``enqueue`` RPCs (each becomes one Paxos instance, or shares one):
    CPU per message falls as batches grow, and a busy machine grows them, so runs compare
    fairly only at similar messages per request."""
    counter = [0]
    pool = client._pool
    call = pool.call

    async def counted(addr: str, method: str, params: Any, **kw: Any) -> Any:
        if method == "enqueue":
            counter[0] += 1
        return await call(addr, method, params, **kw)

    pool.call = counted  # type: ignore[method-assign]
    return counter


def client_kwargs(cluster: ProcessCluster) -> dict[str, Any]:
    try:  # newer checkouts: the admin token / CA of a secure cluster
        from phxq.security.daemon import client_options
    except ImportError:
        return {}
    return dict(client_options(cluster.config))


async def measure(cluster: ProcessCluster, args: argparse.Namespace) -> list[dict[str, Any]]:
    pids = store_pids(cluster)
    rows: list[dict[str, Any]] = []
    if args.idle:
        await asyncio.sleep(1.0)
        c0 = {n: proc_cpu(p) for n, p in pids.items()}
        s0 = {n: proc_switches(p) for n, p in pids.items()}
        await asyncio.sleep(args.idle)
        idle = {
            n: {
                "cpu_ms_per_s": round((proc_cpu(p) - c0[n]) * 1000 / args.idle, 2),
                "wakeups_per_s": round((proc_switches(p) - s0[n]) / args.idle, 1),
            }
            for n, p in pids.items()
        }
        print("idle", json.dumps(idle), flush=True)
        rows.append({"idle": idle})
    options = client_kwargs(cluster)
    if args.no_batching:
        options["batching"] = False
    async with Client(cluster.store_addresses, **options) as client:
        requests = count_requests(client)
        await drive(client, args.warmup, args.outstanding, args.size)
        if args.profile:
            for pid in pids.values():
                os.kill(pid, signal.SIGUSR1)
        for r in range(args.rounds):
            perf = Perf(pids) if args.perf else None
            tracer = Strace(pids) if args.syscalls else None
            for attach in (perf, tracer):
                if attach:
                    attach.start()
                    await asyncio.sleep(0.5)  # it attaches
            c0 = {n: proc_cpu(p) for n, p in pids.items()}
            s0 = {n: proc_switches(p) for n, p in pids.items()}
            t0 = os.times()
            requests[0] = 0
            errors, wall = await drive(client, args.count, args.outstanding, args.size)
            t1 = os.times()
            cpu = {n: proc_cpu(p) - c0[n] for n, p in pids.items()}
            sw = {n: proc_switches(p) - s0[n] for n, p in pids.items()}
            instr = perf.stop() if perf else {}
            calls = tracer.stop() if tracer else {}
            n = args.count
            row = {
                "round": r,
                "msgs_per_s": round(n / wall),
                "errors": errors,
                "msgs_per_request": round(n / max(1, requests[0]), 2),
                "store_us_per_msg": {k: round(v * 1e6 / n, 1) for k, v in cpu.items()},
                "stores_us_per_msg": round(sum(cpu.values()) * 1e6 / n, 1),
                "client_us_per_msg": round(
                    (t1.user + t1.system - t0.user - t0.system) * 1e6 / n, 1
                ),
                "store_switches_per_msg": {k: round(v / n, 2) for k, v in sw.items()},
            }
            if instr:
                row["store_kinstr_per_msg"] = {k: round(v / n / 1e3, 1) for k, v in instr.items()}
                row["stores_kinstr_per_msg"] = round(sum(instr.values()) / n / 1e3, 1)
            if calls:
                total: dict[str, int] = {}
                for per_store in calls.values():
                    for k, v in per_store.items():
                        total[k] = total.get(k, 0) + v
                row["stores_syscalls_per_msg"] = {
                    k: round(v / n, 2) for k, v in sorted(total.items(), key=lambda kv: -kv[1])
                }
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.profile:
            for pid in pids.values():
                os.kill(pid, signal.SIGUSR2)
            await asyncio.sleep(2.0)  # the dumps
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    runs = [r for r in rows if "round" in r]
    if not runs:
        return ""
    out = []
    keys = ("stores_us_per_msg", "client_us_per_msg", "stores_kinstr_per_msg", "msgs_per_request")
    for key in (*keys, "msgs_per_s"):
        vals = [r[key] for r in runs if key in r]
        if vals:
            out.append(
                f"{key}: median {statistics.median(vals)} (min {min(vals)}, max {max(vals)})"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=20000, help="messages per measured round")
    p.add_argument("--warmup", type=int, default=3000, help="messages before the first round")
    p.add_argument("--outstanding", type=int, default=64)
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-batching", action="store_true", help="one request per message")
    p.add_argument("--perf", action="store_true", help="perf stat instructions per store")
    p.add_argument("--syscalls", action="store_true", help="strace -c system calls per message")
    p.add_argument("--idle", type=float, default=0.0, help="seconds of idle measurement first")
    p.add_argument("--profile", type=Path, help="cProfile the stores into this directory")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="phxq-cpm-") as tmp:
        base = Path(tmp)
        if args.profile:
            args.profile = args.profile.resolve()
            args.profile.mkdir(parents=True, exist_ok=True)
            hook = base / "hook"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(_HOOK)
            os.environ["PHXQ_BENCH_PROFILE_DIR"] = str(args.profile)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        ports = free_ports(6)
        topic = f'[[topic]]\nname = "{TOPIC}"\nqueues = {QUEUES}\nmax_message_bytes = 1048576\n'
        config = write_dev_config(
            base / "cluster",
            groups=args.groups,
            store_ports=ports[:3],
            lock_ports=ports[3:],
            extra=topic,
        )
        cluster = ProcessCluster(config)
        try:
            cluster.start()
            cluster.wait_ready(60)
            rows = run_loop(measure(cluster, args))
        finally:
            cluster.stop()
    print(summary(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
