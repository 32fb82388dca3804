"""One OpenTelemetry trace from the producer through the store to the handler (phxq[otel]).

Real stores, lock nodes and a consumer daemon, in this process (so the SDK's in-memory
exporter sees every span), on real sockets and files; the handler is a real HTTP server. A
message enqueued with no tracer provider set carries no ``traceparent`` and makes no span."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from phxq.client import Client
from phxq.config import load_config
from phxq.consumer.daemon import ConsumerDaemon
from phxq.devcluster import free_ports, write_dev_config
from phxq.lock.node import LockNode
from phxq.store.node import StoreNode
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def _reset_global_provider() -> None:
    # The API sets the global provider once per process; tests put it back (as the
    # OpenTelemetry test utilities do) so other tests run with tracing off.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@contextlib.contextmanager
def in_memory_tracing() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_global_provider()


@contextlib.asynccontextmanager
async def http_handler(port: int, seen: list[dict[str, str]]) -> AsyncIterator[str]:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen.append(dict(request.headers))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_one_trace_runs_from_the_producer_through_the_store_to_the_handler(
    tmp_path: Path,
) -> None:
    ports = free_ports(7)
    seen: list[dict[str, str]] = []
    group = (
        '\n[[consumer_group]]\nname = "billing"\ntopic = "orders"\n'
        f'handler = "http://127.0.0.1:{ports[6]}/hook"\n'
    )
    path = write_dev_config(
        tmp_path, groups=2, store_ports=ports[:3], lock_ports=ports[3:6], extra=group
    )
    cfg = load_config(path)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(http_handler(ports[6], seen))
        for s in cfg.stores:
            await stack.enter_async_context(StoreNode(cfg, s.id))
        for lk in cfg.locks:
            await stack.enter_async_context(LockNode(cfg, lk.id))
        # Seven daemons share this loop: on a loaded machine elections may take a while.
        client = await stack.enter_async_context(
            Client([s.addr for s in cfg.stores], retry_timeout=60)
        )
        await stack.enter_async_context(ConsumerDaemon(cfg, "c1"))

        # No tracer provider: nothing is added to the message, nothing reaches the handler.
        plain = await client.enqueue("orders", b"untraced", key="k")
        (stored,) = await client.dequeue(
            None,
            "orders",
            queue=plain.queue,
            after=plain.offset - 1 if plain.offset else None,
            limit=1,
        )
        assert "traceparent" not in stored.headers
        await wait_until(lambda: _async(len(seen) >= 1), 60, "the untraced delivery")
        assert "traceparent" not in {k.lower() for k in seen[0]}

        with in_memory_tracing() as exporter:
            ack = await client.enqueue("orders", b"traced", key="k", headers={"h": "v"})
            await wait_until(lambda: _async(len(seen) >= 2), 60, "the traced delivery")
            spans = list(exporter.get_finished_spans())

    (send,) = [s for s in spans if s.kind is SpanKind.PRODUCER]
    stores = [s for s in spans if s.kind is SpanKind.SERVER]
    processes = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert send.name == "send orders" and send.parent is None
    trace_id = send.context.trace_id
    assert stores and processes, [s.name for s in spans]
    for span in (*stores, *processes):
        assert span.context.trace_id == trace_id, span.name
        assert span.parent is not None and span.parent.span_id == send.context.span_id, span.name
    assert stores[0].name == "store orders" and stores[0].attributes["phxq.store.node"] in (1, 2, 3)
    process = processes[-1]
    assert process.name == "process orders"
    assert process.attributes["messaging.consumer.group.name"] == "billing"
    assert process.attributes["messaging.message.id"] == str(ack.offset)
    # The stored message carries the producer's context; the HTTP handler got the process
    # span's, so its own server spans would join the trace under the handler call.
    headers = {k.lower(): v for k, v in seen[1].items()}
    assert headers["x-phxq-offset"] == str(ack.offset)
    _, tid, sid, _ = headers["traceparent"].split("-")
    assert int(tid, 16) == trace_id and int(sid, 16) == process.context.span_id


async def _async(value: Any) -> Any:
    await asyncio.sleep(0)
    return value
