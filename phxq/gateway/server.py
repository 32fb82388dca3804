"""The gateway daemon: an aiohttp server that dispatches the route table to the clients.

::

    async with Gateway(cfg, listen="127.0.0.1:0") as gw:   # limits: cfg.gateway ([gateway])
        gw.address            # "127.0.0.1:<port>" actually bound
        gw.url                # "http://127.0.0.1:<port>"

What it promises:

- **Stateless.** Every request is served from the cluster; run as many gateways as you like
  behind any HTTP load balancer. Its clients (one store client, one lock client) are shared
  by every request.
- **Every error is a problem.** Whatever goes wrong — an unknown route, a wrong method, bad
  JSON, a body above ``max_body_bytes``, a body not received within ``body_timeout``, more
  than ``max_in_flight`` requests, a phxq error, a bug — the answer is
  ``application/problem+json`` with phxq's error code and the right status
  (:mod:`phxq.gateway.problems`), never a stack trace; nothing stored changes on a rejected
  request, and the gateway keeps serving everyone else.
- **Validated before it acts.** Parameters and bodies are checked against the route table's
  schemas, the caller is authenticated and its permission checked before any store is asked.
"""

from __future__ import annotations

import logging
import ssl
import weakref
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from phxq import __version__, metrics
from phxq.client import Client
from phxq.config import ClusterConfig
from phxq.errors import BadArgument
from phxq.gateway.auth import Authorizer, GatewaySecurity, OpenAccess
from phxq.gateway.cors import Cors
from phxq.gateway.dispatch import endpoint, unrouted
from phxq.gateway.groups import KnownGroups
from phxq.gateway.openapi import openapi_document
from phxq.gateway.problems import problem
from phxq.gateway.routes import build_routes

log = logging.getLogger("phxq.gateway")

DEFAULT_LISTEN = "127.0.0.1:7301"

# The gateways of this process: phxq_gateway_in_flight is read from them when scraped, not
# set twice per request.
_LIVE: weakref.WeakSet[Gateway] = weakref.WeakSet()


def _in_flight() -> int:
    return sum(gw.in_flight for gw in list(_LIVE))


metrics.GATEWAY_IN_FLIGHT.set_function(_in_flight)


def _split(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise BadArgument(f'listen address must be "host:port", got {listen!r}')
    return host.strip("[]") or "0.0.0.0", int(port)


class Gateway:
    """The HTTP gateway (see the module docstring). An async context manager."""

    def __init__(
        self,
        config: ClusterConfig,
        listen: str | None = None,
        *,
        authorizer: Authorizer | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``listen`` overrides ``[gateway] listen``. With ``[security]`` the gateway serves
        HTTPS with the ``[security]`` member certificate (or ``ssl_context``), requires bearer
        tokens (or ``authorizer``) and dials the stores and lock nodes as a member;
        ``self.security.reload(config)`` (SIGHUP) applies renewed certificates and
        principals."""
        self.config = config
        self.limits = config.gateway
        self.listen = listen or self.limits.listen or DEFAULT_LISTEN
        self.max_wait = self.limits.max_wait
        # With [security]: HTTPS, bearer tokens, and the member certificate to dial the cluster.
        self.security = GatewaySecurity(config) if config.security is not None else None
        default_auth: Authorizer = OpenAccess() if self.security is None else self.security.tokens
        self.authorizer = authorizer or default_auth
        if ssl_context is None and self.security is not None:
            ssl_context = self.security.server_ssl
        self.ssl_context = ssl_context
        self.routes = build_routes(self.limits.max_wait)
        self._member = None if self.security is None else self.security.dial_ssl
        self.client = Client([s.addr for s in config.stores], ca=self._member)
        self._locks: Any = None
        self.groups = KnownGroups(config, self.lock_client)  # the map's groups too (online)
        self._runner: web.AppRunner | None = None
        self.in_flight: int = 0  # requests being served (the max_in_flight limit)
        self._openapi: dict[str, Any] | None = None
        self._registry = metrics.registry_for("gateway")
        self.address = self.listen
        _LIVE.add(self)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.address}"

    # ------------------------------------------------------------------------- Backend

    def lock_client(self) -> Any:
        if not self.config.locks:
            raise problem("unavailable", "this cluster has no lock service ([[lock]] nodes)")
        if self._locks is None:
            from phxq.lock.client import LockClient

            self._locks = LockClient([lk.addr for lk in self.config.locks], ca=self._member)
        return self._locks

    def describe(self) -> dict[str, Any]:
        return {"version": __version__, "address": self.address, "in_flight": self.in_flight}

    def metrics_text(self) -> bytes:
        """The gateway's Prometheus series (``GET /metrics``)."""
        return generate_latest(self._registry)

    def openapi(self) -> dict[str, Any]:
        if self._openapi is None:
            self._openapi = openapi_document(
                self.routes, version=__version__, secured=self.authorizer.enabled
            )
        return self._openapi

    # ----------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Gateway:
        app = web.Application(
            client_max_size=self.limits.max_body_bytes,
        )
        for route in self.routes:
            app.router.add_route(route.method, route.path, endpoint(self, route))
        cors = Cors(self.limits.cors_origins) if self.limits.cors_origins else None
        if cors is not None:  # only then: a signal per answer costs CPU
            app.on_response_prepare.append(cors.on_prepare)
        # Last: whatever no route matched (preflights, 404, 405 with Allow), answered as well.
        app.router.add_route("*", "/{tail:.*}", unrouted(self.routes, cors))
        # handler_cancellation: a caller that hangs up stops its long poll or stream at once.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        host, port = _split(self.listen)
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise BadArgument(f"cannot listen on {self.listen}: {exc.strerror}") from exc
        bound = self._runner.addresses
        if bound:
            self.address = f"{bound[0][0]}:{bound[0][1]}"
        log.info("gateway listening on %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.client.close()
        if self._locks is not None:
            await self._locks.close()
