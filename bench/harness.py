"""Shared plumbing of the cost-curve benchmarks (``bench.curves``, ``bench.best``,
``bench.backlog``, ``bench.startup``, ``bench.memory``, ``bench.sets``): one cluster start-up,
one report shape (json + md, the md headed by command, commit, machine and load average
before/after), one command skeleton.

Public API::

    store_cluster(base, groups=16, topics={"bench": 64}, sets=1, ...)  # ctx manager: cluster
    workdir(parent, prefix)                # ctx manager: a fresh temporary directory under parent
    store_pids(cluster) -> {"store1": pid, ...};  rss_bytes(cluster) -> {"1": bytes, ...}
    dir_bytes(path) -> int
    drop_caches() -> str | None            # sync + drop the page cache; why not (None = done)
    async fill(client, topic, count, size, ...) -> dict   # a backlog through the real client
    command_line() -> str                  # how this run was started
    load_avg() -> list[float]              # the load average now
    finish_report(env, started, settings, **body) -> dict   # + command, wall time, load after
    write_report(out, name, report, md_lines) -> (json_path, md_path)
    header(report, title) -> list[str]     # the md head: command, commit, machine, load average
    md_row(cells) -> str;  store_cpu(cpu_s) -> float
    parser(name, doc);  output_args(parser);  fill_defaults(args, defaults)   # argparse parts
    main(name, argv, parse_args, run, markdown) -> int    # run, write json + md, print them

Every cluster here is 3 real store processes per set (``phxq.devcluster``, fdatasync on, 127.0.0.1) with
the *production* segment size (64 MiB) unless told otherwise: the dev configs' 1 MiB segments
make a 16 KiB or 256 KiB message batch roll a segment per request, which is a dev-config
artefact, not the product's cost (a 256 KiB run measured 15x slower with them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from phxq import benchmark
from phxq.client import Client
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config

RESULTS = Path(__file__).resolve().parent / "results"
SEGMENT_BYTES = "64MiB"  # the production default (phxq.config DEFAULTS)


@contextlib.contextmanager
def store_cluster(
    base: Path,
    *,
    groups: int = 16,
    topics: Mapping[str, int] | None = None,
    segment_bytes: str = SEGMENT_BYTES,
    cluster_options: str = "",
    locks: bool = False,
    max_message_bytes: int = 1 << 20,
    ready_timeout: float = 120.0,
    sets: int = 1,
) -> Iterator[ProcessCluster]:
    """A fresh cluster of ``sets`` store sets of 3 stores (and 3 lock nodes with ``locks``)
    under ``base``, ready (every group has a master) when yielded, stopped on exit. ``topics``:
    name -> queues (default ``bench`` with 64 queues, so every group of up to 64 is used; with
    several sets, dealt over all of them)."""
    stores = 3 * sets
    ports = free_ports(stores + 3)
    extra = "".join(
        f'[[topic]]\nname = "{name}"\nqueues = {queues}\nmax_message_bytes = {max_message_bytes}\n'
        for name, queues in (topics or {"bench": 64}).items()
    )
    config = write_dev_config(
        base,
        groups=groups,
        store_ports=ports[:stores],
        lock_ports=ports[stores:],
        extra=extra,
        segment_bytes=segment_bytes,
        cluster_options=cluster_options,
        sets=sets,
    )
    cluster = ProcessCluster(config, locks=locks)
    try:
        cluster.start()
        cluster.wait_ready(ready_timeout)
        if locks:
            cluster.wait_locks_ready(ready_timeout)
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def workdir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh temporary directory under ``parent`` (made if missing), removed on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        yield Path(tmp)


def toml_duration(text: str) -> str:
    """A duration for the config: a bare number of seconds stays a number, "10s" a string."""
    try:
        return str(float(text))
    except ValueError:
        return f'"{text}"'


def store_pids(cluster: ProcessCluster) -> dict[str, int]:
    return {
        f"store{node}": proc.popen.pid
        for (role, node), proc in cluster.procs.items()
        if role == "store" and proc.popen is not None and proc.popen.poll() is None
    }


def rss_bytes(cluster: ProcessCluster) -> dict[str, int]:
    """VmRSS of each running store process (``/proc/<pid>/status``), by store id."""
    out = {}
    for name, pid in store_pids(cluster).items():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[name.removeprefix("store")] = int(line.split()[1]) * 1024
    return out


def dir_bytes(path: Path) -> int:
    """Bytes the files under ``path`` hold on disk (allocated blocks: preallocated segments
    count in full)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def drop_caches(keep: bool = False) -> str | None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``: None when done, else why not (``keep``:
    asked not to, e.g. a smoke test on a shared machine; not root; no procfs): a run then
    says its data was *not* cold."""
    if keep:
        return "page cache kept (--keep-cache): NOT cold"
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"page cache not dropped: {exc}"
    return None


async def fill(
    client: Client,
    topic: str,
    count: int,
    size: int,
    *,
    batch: int = 4096,
    calls: int = 4,
    keys: int = 1024,
    delay: float | None = None,
    progress_every: float = 10.0,
) -> dict[str, Any]:
    """Enqueue ``count`` messages of ``size`` bytes through the real client: ``calls``
    concurrent ``enqueue_many`` calls of ``batch`` messages each (about 4 MiB a call at most,
    keys spread over ``keys`` so every queue gets its share); each acked only when chosen
    (fdatasynced on a majority), exactly like any producer's; with ``delay``, scheduled that
    many seconds ahead. Returns the time it took."""
    batch = max(1, min(batch, (4 << 20) // max(1, size)))
    payload = os.urandom(size)
    sent = 0
    started = time.perf_counter()
    last_note = started

    async def caller(n: int) -> None:
        nonlocal sent, last_note
        i = n
        while sent < count:
            take = min(batch, count - sent)
            sent += take
            msgs = [(payload, f"k{(i + j) % keys}") for j in range(take)]
            i += take
            await client.enqueue_many(topic, msgs, delay=delay)
            now = time.perf_counter()
            if now - last_note >= progress_every:
                last_note = now
                print(f"  filled {sent:,} / {count:,} ({sent / (now - started):,.0f} msgs/s)")

    await asyncio.gather(*(caller(n) for n in range(calls)))
    took = time.perf_counter() - started
    return {
        "messages": count,
        "size": size,
        "seconds": round(took, 2),
        "msgs_per_s": round(count / took, 1) if took else None,
        "method": f"enqueue_many through phxq.Client: {calls} calls of up to {batch} messages "
        "in flight, acked when chosen (fdatasync on a majority)",
    }


def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load average now, as ``benchmark.environment`` gives it."""
    figures: list[float] = benchmark.environment()["load_avg"]
    return figures


def finish_report(
    env: dict[str, Any], started: float, settings: dict[str, Any], **body: Any
) -> dict[str, Any]:
    """The report every bench writes: ``env`` (``benchmark.environment``, taken before the run)
    with the load average after (now), the command line, the wall time since ``started``
    (``time.monotonic``), the settings, then ``body``."""
    env["load_avg_after"] = load_avg()
    return {
        "environment": env,
        "command": command_line(),
        "wall_s": round(time.monotonic() - started, 1),
        "settings": settings,
        **body,
    }


def command_line() -> str:
    """How this process was started, as a user would type it (``python -m bench.x ...``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    return shlex.join(head + sys.argv[1:])


def _stem(name: str, commit: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}-{commit}-{stamp}")


def write_report(
    out: Path, name: str, report: dict[str, Any], md_lines: list[str]
) -> tuple[Path, Path]:
    """``out/<name>-<commit>-<time>.json`` and ``.md``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(name, report["environment"]["commit"])
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text("\n".join(md_lines) + "\n")
    return json_path, md_path


def header(report: dict[str, Any], title: str) -> list[str]:
    """The md head every result states: command, commit, machine, load average before."""
    env = report["environment"]
    return [
        f"# {title}, commit {env['commit']}, {env['time']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {env['cpus']} x {env['cpu_model']}, kernel {env['kernel']}, Python "
        f"{env['python']} ({env['event_loop']}), data on {env.get('data_fs', '?')}. "
        f"Load average before: {env['load_avg']}; after: {env.get('load_avg_after', '?')}. "
        f"Wall time {report.get('wall_s', '?')} s.",
        "",
    ]


def md_row(cells: list[str]) -> str:
    """One md table row."""
    return "| " + " | ".join(cells) + " |"


def store_cpu(cpu_s: Mapping[str, float]) -> float:
    """CPU seconds of the store processes in a ``CpuMeter`` delta (``store1``, ``store2``...)."""
    return sum(v for k, v in cpu_s.items() if k.startswith("store"))


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m bench.<name>``, its help the module docstring ``doc``."""
    return argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def output_args(ap: argparse.ArgumentParser) -> None:
    """``--out`` (where the json + md go) and ``--dir`` (where the clusters' data goes)."""
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))


def fill_defaults(args: argparse.Namespace, defaults: Mapping[str, Any]) -> None:
    """Each option left at None takes its value from ``defaults`` (which may depend on
    ``--quick``)."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def main(
    name: str,
    argv: list[str] | None,
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], list[str]],
    *,
    log: bool = False,
) -> int:
    """A bench's whole command: parse, run, write ``<name>-<commit>-<time>.{json,md}`` into
    ``--out`` and print the md. ``log``: warnings of phxq's loggers with their time."""
    args = parse_args(argv)
    if log:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    lines = markdown(result)
    json_path, md_path = write_report(args.out, name, result, lines)
    print("\n".join(lines))
    print(f"wrote {json_path} and {md_path}")
    return 0
