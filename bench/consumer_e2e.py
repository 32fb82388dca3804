"""Consumer tier benchmark: end-to-end latency (enqueue -> handler) and delivery throughput.

    .venv/bin/python -m bench.consumer_e2e [--config C] [--count 500] [--messages 20000]
                                           [--http] [--json]

Without ``--config`` it starts 3 stores and 3 lock nodes (real processes, fsync on) on
127.0.0.1 in a temporary directory; with ``--config`` (e.g. ``phxq dev``'s
``./phxq-data/cluster.toml``) it uses that cluster. Either way it runs a consumer daemon
(:class:`phxq.consumer.daemon.ConsumerDaemon`, real lock service) *in this process* for a fresh
consumer group on topic ``orders``, whose cursors it first moves to "now", so it sees only its
own messages. Other consumers of the cluster (``phxq dev``'s own) keep running.

Reports (numbers only, nothing asserted):

- **latency**: one message at a time (keys spread over the queues): time from calling
  ``enqueue`` until the handler runs, p50 / p90 / p99 / max; also the enqueue ack alone.
  The handler is an in-process async function, or with ``--http`` an aiohttp endpoint here
  (so a POST per message);
- **throughput**: ``--messages`` are enqueued first (batched), then the daemon starts; rate
  from the first delivery to the last, with a no-op in-process handler, strict order per queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from phxq.client import Client
from phxq.config import ClusterConfig, ConsumerGroupConfig, load_config
from phxq.consumer.daemon import ConsumerDaemon
from phxq.consumer.handlers import Delivery
from phxq.consumer.pair import Ownership
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config

TOPIC = "orders"
_hook: Callable[[bytes], None] = lambda payload: None  # noqa: E731 (set by the run)


async def on_message(delivery: Delivery) -> None:
    """The benchmark's in-process handler (``bench.consumer_e2e:on_message``)."""
    _hook(delivery.payload)


def set_hook(hook: Callable[[bytes], None]) -> None:
    """Route on_message to ``hook``. Under ``python -m`` this file runs as ``__main__`` while
    the consumer imports ``bench.consumer_e2e``: two module objects, so set both."""
    global _hook
    _hook = hook
    import bench.consumer_e2e as imported

    imported._hook = hook


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 3)

    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0)}


@contextlib.asynccontextmanager
async def http_endpoint() -> AsyncIterator[str]:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        _hook(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def bench_consumer(cfg: ClusterConfig, client: Client, handler: str) -> AsyncIterator[None]:
    """A consumer daemon for a fresh group whose cursors start at "now"."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    spec = ConsumerGroupConfig(name=group, topic=TOPIC, handler=handler, dead_letter=TOPIC + ".dlq")
    now = time.time()
    for q in range(cfg.topic(TOPIC).queues):
        await client.seek(group, TOPIC, queue=q, time=now)
    bench_cfg = dataclasses.replace(cfg, consumer_groups=(spec,))
    async with ConsumerDaemon(bench_cfg, f"bench-{os.getpid()}") as daemon:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert daemon.member is not None
            workers = daemon.member.workers.values()
            if len(workers) == cfg.topic(TOPIC).queues and all(
                r.worker.state is Ownership.OWNED for r in workers
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("the bench consumer did not get its pairs")
        yield


async def latency(cfg: ClusterConfig, count: int, use_http: bool) -> dict[str, Any]:
    arrived: dict[bytes, float] = {}
    events: dict[bytes, asyncio.Event] = {}

    def record(payload: bytes) -> None:
        arrived.setdefault(payload, time.perf_counter())
        if payload in events:
            events[payload].set()

    set_hook(record)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client([s.addr for s in cfg.stores]))
        handler = "bench.consumer_e2e:on_message"
        if use_http:
            handler = await stack.enter_async_context(http_endpoint())
        await stack.enter_async_context(bench_consumer(cfg, client, handler))
        e2e, acks = [], []
        for i in range(count + 20):
            payload = b"lat-%d" % i
            events[payload] = asyncio.Event()
            t0 = time.perf_counter()
            await client.enqueue(TOPIC, payload, key=f"k{i % 64}")
            t_ack = time.perf_counter()
            await asyncio.wait_for(events[payload].wait(), 30)
            if i >= 20:  # warm-up: connections, master cache
                acks.append(t_ack - t0)
                e2e.append(arrived[payload] - t0)
    return {
        "handler": "http" if use_http else "in-process",
        "count": count,
        "enqueue_to_handler": percentiles(e2e),
        "enqueue_ack": percentiles(acks),
    }


async def throughput(cfg: ClusterConfig, messages: int) -> dict[str, Any]:
    times: list[float] = []
    done = asyncio.Event()

    def record(payload: bytes) -> None:
        times.append(time.perf_counter())
        if len(times) >= messages:
            done.set()

    set_hook(record)
    async with Client([s.addr for s in cfg.stores]) as client:
        group_start = time.time()
        batch = [(b"t" * 100, f"k{i % 512}") for i in range(1000)]
        spec_handler = "bench.consumer_e2e:on_message"
        # Enqueue first (after the group's "now"), then let the consumer drain the backlog.
        group = f"bench-{uuid.uuid4().hex[:8]}"
        spec = ConsumerGroupConfig(
            name=group, topic=TOPIC, handler=spec_handler, dead_letter=TOPIC + ".dlq"
        )
        for q in range(cfg.topic(TOPIC).queues):
            await client.seek(group, TOPIC, queue=q, time=group_start)
        for _ in range(messages // len(batch)):
            await client.enqueue_many(TOPIC, batch)
        bench_cfg = dataclasses.replace(cfg, consumer_groups=(spec,))
        async with ConsumerDaemon(bench_cfg, f"bench-{os.getpid()}"):
            await asyncio.wait_for(done.wait(), 300)
    elapsed = times[-1] - times[0]
    return {
        "handler": "in-process no-op",
        "messages": len(times),
        "seconds": round(elapsed, 3),
        "messages_per_s": round((len(times) - 1) / elapsed, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if args.config:
            cfg = load_config(args.config)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="phxq-bench-")))
            ports = free_ports(6)
            path = write_dev_config(tmp, nodes=3, store_ports=ports[:3], lock_ports=ports[3:])
            cluster = stack.enter_context(ProcessCluster(path, locks=True))
            await cluster.wait_ready_async(60)
            cfg = cluster.config
        result["latency"] = await latency(cfg, args.count, args.http)
        result["throughput"] = await throughput(cfg, args.messages)
    result["load_average"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--count", type=int, default=500, help="latency samples")
    parser.add_argument("--messages", type=int, default=20000, help="throughput backlog")
    parser.add_argument("--http", action="store_true", help="latency through an HTTP handler")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
        return
    lat, thr = result["latency"], result["throughput"]
    e2e, ack = lat["enqueue_to_handler"], lat["enqueue_ack"]
    print(
        f"enqueue -> {lat['handler']} handler ({lat['count']} sequential): "
        f"p50 {e2e['p50_ms']} ms, p90 {e2e['p90_ms']} ms, p99 {e2e['p99_ms']} ms, "
        f"max {e2e['max_ms']} ms (enqueue ack alone: p50 {ack['p50_ms']} ms, p99 {ack['p99_ms']} ms)"
    )
    print(
        f"delivery throughput ({thr['handler']}, strict order, 8 queues): "
        f"{thr['messages_per_s']} messages/s ({thr['messages']} in {thr['seconds']} s)"
    )
    print(f"load average {result['load_average']}")


if __name__ == "__main__":
    main()
