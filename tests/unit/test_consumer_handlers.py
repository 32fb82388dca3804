"""Handler adapters: HTTP POST to a real aiohttp server on 127.0.0.1, and in-process callables."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from phxq.config import ConfigError
from phxq.consumer.handlers import (
    CallableHandler,
    Delivery,
    HttpHandler,
    TracedHandler,
    http_headers,
    make_handler,
    resolve_callable,
)


def delivery(**changes: Any) -> Delivery:
    fields: dict[str, Any] = {
        "consumer_group": "billing",
        "topic": "orders",
        "queue": 3,
        "offset": (7 << 20) | 2,
        "message_id": "3-7-2",
        "payload": b"\x00payload\xff",
        "key": "user-42",
        "headers": {"trace": "abc"},
        "enqueued_at": 1700000000.25,
        "attempt": 1,
    }
    fields.update(changes)
    return Delivery(**fields)


class Recorder:
    """A real HTTP endpoint that records requests and answers with a scripted status."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, Recorder, aiohttp.ClientSession]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/hook", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{port}/hook", recorder, session
    await runner.cleanup()


async def test_http_post_carries_payload_and_message_headers(
    endpoint: tuple[str, Recorder, aiohttp.ClientSession],
) -> None:
    url, recorder, session = endpoint
    handler = HttpHandler(url, timeout=5.0, session=session)
    outcome = await handler(delivery(attempt=2))
    assert outcome.ok
    (headers, body), *_ = recorder.requests
    assert body == b"\x00payload\xff"
    assert headers["X-Phxq-Message-Id"] == "3-7-2"
    assert headers["X-Phxq-Topic"] == "orders"
    assert headers["X-Phxq-Queue"] == "3"
    assert headers["X-Phxq-Offset"] == str((7 << 20) | 2)
    assert headers["X-Phxq-Key"] == "user-42"
    assert headers["X-Phxq-Attempt"] == "2"
    assert headers["X-Phxq-Group"] == "billing"
    assert float(headers["X-Phxq-Enqueued-At"]) == 1700000000.25
    assert headers["trace"] == "abc"
    assert headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("status", [302, 404, 500, 503])
async def test_http_non_2xx_fails(
    endpoint: tuple[str, Recorder, aiohttp.ClientSession], status: int
) -> None:
    url, recorder, session = endpoint
    recorder.status = status
    outcome = await HttpHandler(url, timeout=5.0, session=session)(delivery())
    assert not outcome.ok and str(status) in outcome.reason


async def test_http_2xx_variants_ack(endpoint: tuple[str, Recorder, aiohttp.ClientSession]) -> None:
    url, recorder, session = endpoint
    for status in (201, 204, 299):
        recorder.status = status
        assert (await HttpHandler(url, timeout=5.0, session=session)(delivery())).ok


async def test_http_timeout_fails(endpoint: tuple[str, Recorder, aiohttp.ClientSession]) -> None:
    url, recorder, session = endpoint
    recorder.delay = 2.0
    outcome = await HttpHandler(url, timeout=0.2, session=session)(delivery())
    assert not outcome.ok and "timed out" in outcome.reason


async def test_http_connection_refused_fails() -> None:
    from phxq.devcluster import free_ports

    (port,) = free_ports(1)
    async with aiohttp.ClientSession() as session:
        outcome = await HttpHandler(f"http://127.0.0.1:{port}/x", timeout=2.0, session=session)(
            delivery()
        )
    assert not outcome.ok


async def test_http_odd_headers_and_keys_are_sent_safely(
    endpoint: tuple[str, Recorder, aiohttp.ClientSession],
) -> None:
    url, recorder, session = endpoint
    odd = delivery(
        key="ключ\r\nX: y",
        headers={"Content-Length": "999", "X-Phxq-Topic": "spoof", "bad name": "v", "ok": "é"},
    )
    assert (await HttpHandler(url, timeout=5.0, session=session)(odd)).ok
    headers, body = recorder.requests[-1]
    assert headers["X-Phxq-Topic"] == "orders"
    assert headers["X-Phxq-Header-Content-Length"] == "999"
    assert headers["X-Phxq-Header-X-Phxq-Topic"] == "spoof"
    assert headers["X-Phxq-Header-bad%20name"] == "v"
    assert headers["ok"] == "%C3%A9"
    assert "\n" not in headers["X-Phxq-Key"] and headers["X-Phxq-Key"].startswith("%D0")
    assert body == odd.payload


def test_http_headers_without_key() -> None:
    assert "X-Phxq-Key" not in http_headers(delivery(key=None))


async def test_async_callable_acks_and_sees_the_delivery() -> None:
    seen: list[Delivery] = []

    async def handle(d: Delivery) -> None:
        seen.append(d)

    assert (await CallableHandler(handle, timeout=1.0)(delivery())).ok
    assert seen == [delivery()]


async def test_sync_callable_runs_in_a_thread() -> None:
    threads: list[int] = []

    def handle(d: Delivery) -> str:
        threads.append(threading.get_ident())
        return "anything but False acks"

    assert (await CallableHandler(handle, timeout=1.0)(delivery())).ok
    assert threads and threads[0] != threading.get_ident()


async def test_callable_failures() -> None:
    def boom(d: Delivery) -> None:
        raise ValueError("bad payload")

    async def nack(d: Delivery) -> bool:
        return False

    async def slow(d: Delivery) -> None:
        await asyncio.sleep(5)

    outcome = await CallableHandler(boom, timeout=1.0)(delivery())
    assert not outcome.ok and "ValueError: bad payload" in outcome.reason
    assert not (await CallableHandler(nack, timeout=1.0)(delivery())).ok
    outcome = await CallableHandler(slow, timeout=0.05)(delivery())
    assert not outcome.ok and "timed out" in outcome.reason


async def test_async_callable_object_is_awaited() -> None:
    class Handler:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self, d: Delivery) -> None:
            self.calls += 1

    h = Handler()
    assert (await CallableHandler(h, timeout=1.0)(delivery())).ok
    assert h.calls == 1


def test_resolve_module_function(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("phxq_test_handlers")
    module.ns = types.SimpleNamespace(handle=lambda d: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "phxq_test_handlers", module)
    assert resolve_callable("phxq_test_handlers:ns.handle") is module.ns.handle  # type: ignore[attr-defined]
    for bad in ("nomodule_xyz:f", "phxq_test_handlers:missing", "phxq_test_handlers", ":f"):
        with pytest.raises(ConfigError):
            resolve_callable(bad)
    module.not_callable = 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        resolve_callable("phxq_test_handlers:not_callable")


def test_make_handler_picks_the_adapter() -> None:
    handler = make_handler("json:dumps", timeout=1.0)
    assert isinstance(handler, TracedHandler) and isinstance(handler.inner, CallableHandler)
    with pytest.raises(ConfigError):
        make_handler("http://127.0.0.1:1/x", timeout=1.0)  # no session
