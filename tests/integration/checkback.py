"""A producer group's HTTP check handler (its ``check`` URL), served for real on 127.0.0.1.

The stores' check-back asks it about a prepared transaction whose producer went silent; it
answers the state a test put in ``answers`` (``"unknown"`` otherwise) and records every ``txn``
it was asked about in ``asked``. With ``secret`` set it also checks each request's signature
(as a consumer push is signed): a bad one is counted in ``bad_signatures`` and refused (401).
The ``check_handler`` fixture (conftest) serves one."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator

from aiohttp import web

from phxq.devcluster import free_ports
from phxq.security.signing import verify


class CheckHandler:
    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret
        self.answers: dict[str, str] = {}
        self.asked: list[str] = []
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.secret is not None and not verify(
            self.secret, dict(request.headers), body, time.time()
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        txn = json.loads(body)["txn"]
        assert request.headers["X-Phxq-Txn"] == txn
        self.asked.append(txn)
        return web.json_response({"state": self.answers.get(txn, "unknown")})


def producer_group_toml(port: int, name: str = "checkout", more: str = "") -> str:
    """A ``[[producer_group]]`` whose check-back goes to the handler on ``port`` (``max_age``
    1 minute; ``more``: further lines of the table)."""
    return (
        f'\n[[producer_group]]\nname = "{name}"\ncheck = "http://127.0.0.1:{port}/check"\n'
        f'max_age = "1m"\n{more}'
    )


@contextlib.asynccontextmanager
async def serving(handler: CheckHandler) -> AsyncIterator[int]:
    """``handler`` at ``POST /check`` on a free 127.0.0.1 port (yielded) until exit."""
    port = free_ports(1)[0]
    app = web.Application()
    app.router.add_post("/check", handler.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield port
    finally:
        await runner.cleanup()
