"""Signed pushes: a real aiohttp handler running docs/security.md's verification example
accepts phxq's pushes and refuses forged or tampered ones."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from phxq.consumer.handlers import Delivery, HttpHandler, http_headers
from phxq.security.signing import SIGNATURE_HEADER, sign, verify

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
SECRET = b"0123456789abcdef-billing"


def _doc_example() -> Callable[..., bool]:
    text = DOC.read_text()
    block = re.search(r"<!-- signature-example -->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/security.md lost its signature example"
    code = block.group(1)
    code_lines = [line for line in code.splitlines() if line.strip()]
    assert len(code_lines) <= 10, "the example promises ten lines (blank lines aside)"
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    verifier: Callable[..., bool] = namespace["phxq_signed"]
    return verifier


DELIVERY = Delivery(
    consumer_group="billing",
    topic="orders",
    queue=3,
    offset=1 << 20,
    message_id="3-1-0",
    payload=b"pay me",
    key="user-42",
    headers={"trace": "abc", "Content-Type": "x"},
    enqueued_at=1700000000.25,
    attempt=1,
    consumer="c1#ab",
)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[int]]]:
    """An HTTP handler that answers 200 only to correctly signed pushes (the doc's code)."""
    check = _doc_example()
    statuses: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        status = 200 if check(SECRET, request.headers, body) else 401
        statuses.append(status)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", statuses
    finally:
        await runner.cleanup()


async def test_signed_pushes_pass_the_documented_check(hook: tuple[str, list[int]]) -> None:
    url, statuses = hook
    async with aiohttp.ClientSession() as session:
        signed = HttpHandler(url, timeout=5, session=session, secret=SECRET)
        assert (await signed(DELIVERY)).ok
        forged = HttpHandler(url, timeout=5, session=session, secret=b"not-the-secret-xxxxx")
        assert not (await forged(DELIVERY)).ok
        unsigned = HttpHandler(url, timeout=5, session=session)
        assert not (await unsigned(DELIVERY)).ok
        # A captured signature does not carry over to another message or body.
        headers = http_headers(DELIVERY)
        headers[SIGNATURE_HEADER] = sign(SECRET, headers, DELIVERY.payload, time.time())
        for tampered_body, tampered in (
            (b"pay me more", headers),
            (DELIVERY.payload, {**headers, "X-Phxq-Offset": "1"}),
        ):
            async with session.post(url, data=tampered_body, headers=tampered) as resp:
                assert resp.status == 401
    assert statuses == [200, 401, 401, 401, 401]


def test_verify_refuses_stale_and_malformed_signatures() -> None:
    headers = http_headers(DELIVERY)
    now = 1_800_000_000.0
    headers[SIGNATURE_HEADER] = sign(SECRET, headers, b"x", now)
    assert verify(SECRET, headers, b"x", now + 10)
    assert not verify(SECRET, headers, b"x", now + 301)  # replayed too late
    assert not verify(SECRET, {**headers, SIGNATURE_HEADER: "garbage"}, b"x", now)
    assert not verify(SECRET, {**headers, SIGNATURE_HEADER: "t=abc,v1=00"}, b"x", now)
    lowercase = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    assert verify(SECRET, lowercase, b"x", now)
