"""The HTTP gateway beside the native client, on one fresh local cluster, in the same run.

    .venv/bin/python -m bench.gateway                  # ~30 s: latency and 64 outstanding
    .venv/bin/python -m bench.gateway --quick          # a few seconds: a smoke run, no figures
    .venv/bin/python -m bench.gateway --outstanding 64,256 --seconds 10

The cluster is 3 real store processes and one ``phxq gateway`` process (``phxq.devcluster``,
fdatasync on, 127.0.0.1) in a temporary directory; the topic ``bench`` has 64 queues. Both
systems are driven by the same workload loops (``phxq.benchmark.run_latency`` /
``run_throughput``) with the same payloads and keys, alternating native and gateway cases:

- native: ``phxq.Client.enqueue(topic, payload, key=...)`` (adaptive batching on);
- gateway: ``POST /v1/topics/bench/messages`` with the raw payload and ``Phxq-Key`` over
  keep-alive connections (one per outstanding request), reused. The load generator is
  ``bench.http_raw`` (a lean HTTP/1.1 client) unless ``--http-client aiohttp``: on a 2-core
  machine the generator shares the CPU with the gateway and the stores, and aiohttp's client
  costs about as much CPU per request as the gateway itself, which real callers (curl, other
  languages, other machines) do not add to the gateway's machine.

The CPU of every process is read from /proc around each window; the summary gives the
gateway's CPU per message, the load-independent figure of its cost (the stores' per message
shows how well concurrent HTTP enqueues were batched), besides the msgs/s ratios.

Output: ``<out>/gateway-<commit>-<time>.json`` and ``.md`` (the runs as a markdown table, then
gateway/native ratios of sequential p50 and of msgs/s per outstanding level; the issue's target
is gateway msgs/s >= half of native). Run it on a quiet machine: figures from a busy one say
little.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.http_raw import RawPool
from phxq import benchmark
from phxq.client import Client
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config

TOPIC = "bench"
QUEUES = 64
RESULTS = Path(__file__).resolve().parent / "results"


def gateway_sender(http: aiohttp.ClientSession, url: str, topic: str) -> benchmark.Send:
    """``send(payload, key)`` through the gateway: resolves on the ack, raises on a problem."""
    target = f"{url}/v1/topics/{topic}/messages"

    async def send(payload: bytes, key: str) -> object:
        async with http.post(target, data=payload, headers={"Phxq-Key": key}) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"gateway answered {resp.status}: {body[:200]!r}")
            return body

    return send


def raw_sender(pool: RawPool, topic: str) -> benchmark.Send:
    """The same request as :func:`gateway_sender`, through :class:`bench.http_raw.RawPool`."""
    path = f"/v1/topics/{topic}/messages"

    async def send(payload: bytes, key: str) -> object:
        status, body = await pool.request(b"POST", path, payload, {"Phxq-Key": key})
        if status != 200:
            raise RuntimeError(f"gateway answered {status}: {body[:200]!r}")
        return body

    return send


def start_cluster(base: Path, groups: int) -> ProcessCluster:
    ports = free_ports(7)
    topic = f'[[topic]]\nname = "{TOPIC}"\nqueues = {QUEUES}\nmax_message_bytes = 1048576\n'
    config = write_dev_config(
        base,
        groups=groups,
        store_ports=ports[:3],
        lock_ports=ports[3:6],
        extra=topic,
        gateway_port=ports[6],
    )
    cluster = ProcessCluster(config, gateway=True)
    cluster.start()
    try:
        cluster.wait_ready(60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _pids(cluster: ProcessCluster) -> dict[str, int]:
    return {
        f"{role}{node}": proc.popen.pid
        for (role, node), proc in cluster.procs.items()
        if proc.popen is not None
    }


async def measure(cluster: ProcessCluster, args: argparse.Namespace) -> list[dict[str, Any]]:
    url = cluster.gateway_url
    assert url is not None
    cpu = benchmark.CpuMeter(_pids(cluster))
    runs: list[dict[str, Any]] = []
    limit = max(args.outstanding)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    async with (
        Client(cluster.store_addresses) as client,
        aiohttp.ClientSession(connector=connector) as http,
    ):
        raw = RawPool(url) if args.http_client == "raw" and url.startswith("http:") else None
        senders = {
            "phxq": benchmark.phxq_sender(client, args.topic),
            "gateway": (
                raw_sender(raw, args.topic) if raw else gateway_sender(http, url, args.topic)
            ),
        }
        for system, send in senders.items():
            result = await benchmark.run_latency(
                send, count=args.count, warmup=args.warmup, size=args.size, cpu=cpu, system=system
            )
            runs.append(result.to_json())
            print(result.line(), file=sys.stderr)
        for outstanding in args.outstanding:
            for system, send in senders.items():
                result = await benchmark.run_throughput(
                    send,
                    outstanding=outstanding,
                    seconds=args.seconds,
                    size=args.size,
                    warmup=args.warmup_seconds,
                    cpu=cpu,
                    system=system,
                )
                runs.append(result.to_json())
                print(result.line(), file=sys.stderr)
        if raw is not None:
            raw.close()
    for run in runs:
        run["params"]["groups"] = args.groups
        run["params"]["http_client"] = args.http_client
    return runs


def ratios(runs: list[dict[str, Any]]) -> list[str]:
    """Gateway/native ratios of the paired runs (latency p50; msgs/s per outstanding)."""
    by_case = {(r["system"], r["name"], r["params"].get("outstanding")): r for r in runs}
    lines = []
    for (system, name, outstanding), run in by_case.items():
        native = by_case.get(("phxq", name, outstanding))
        if system != "gateway" or native is None:
            continue
        if name == "latency":
            ratio = run["latency_ms"]["p50"] / native["latency_ms"]["p50"]
            lines.append(f"sequential p50: gateway/native = {ratio:.2f}x")
        else:
            ratio = run["msgs_per_s"] / max(native["msgs_per_s"], 1e-9)
            lines.append(f"{outstanding} outstanding msgs/s: gateway/native = {ratio:.2f}")
        lines.append(f"{name} {outstanding or 1} outstanding: {cpu_per_message(run, native)}")
    return lines


def cpu_per_message(run: dict[str, Any], native: dict[str, Any]) -> str:
    """CPU microseconds per message: the gateway's, and the stores' through the gateway
    against the native client's run (load-independent figures; the ratios are not)."""

    def per(r: dict[str, Any], prefix: str) -> float:
        cpu = sum(v for k, v in r.get("cpu_s", {}).items() if k.startswith(prefix))
        return cpu / max(r["messages"], 1) * 1e6

    return (
        f"gateway CPU {per(run, 'gateway'):.0f} us/msg; stores {per(run, 'store'):.0f} us/msg "
        f"(native {per(native, 'store'):.0f}); load generator {per(run, 'client'):.0f} us/msg "
        f"(native client {per(native, 'client'):.0f})"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="sequential enqueues measured")
    parser.add_argument("--warmup", type=int, default=300, help="sequential enqueues not measured")
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput window")
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument(
        "--outstanding",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[64],
        help="comma-separated concurrent request levels (default 64)",
    )
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument(
        "--http-client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="the gateway's load generator (default raw: bench/http_raw.py, see above)",
    )
    parser.add_argument("--topic", default=TOPIC, help=argparse.SUPPRESS)  # tests: their topic
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--dir", type=Path, default=None, help="where the cluster's data goes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.warmup, args.seconds, args.warmup_seconds = 50, 10, 0.5, 0.2
        args.groups = min(args.groups, 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from phxq.net.loop import run as run_loop

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="phxq-gw-bench-") as tmp:
        cluster = start_cluster(Path(tmp) / "cluster", args.groups)
        try:
            runs = run_loop(measure(cluster, args))
        finally:
            cluster.stop()
    summary = ratios(runs)
    env = benchmark.environment()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gateway-{env.get('commit', 'unknown')[:10]}-{stamp}"
    stem.with_suffix(".json").write_text(
        json.dumps({"runs": runs, "ratios": summary, "environment": env}, indent=2)
    )
    table = benchmark.markdown_table(runs)
    stem.with_suffix(".md").write_text(table + "\n\n" + "\n".join(f"- {s}" for s in summary) + "\n")
    print(table)
    for line in summary:
        print(line)
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
