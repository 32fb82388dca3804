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

import asyncio
import functools
import json
import logging
import ssl
import time
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from phxq import __version__, metrics
from phxq.client import Client
from phxq.config import ClusterConfig
from phxq.errors import BadArgument, PhxqError
from phxq.gateway.auth import Authorizer, GatewaySecurity, OpenAccess
from phxq.gateway.handlers import Call
from phxq.gateway.openapi import openapi_document
from phxq.gateway.problems import PROBLEM_TYPE, Problem, problem, problem_for
from phxq.gateway.routes import build_routes
from phxq.gateway.schema import parse_param, validate
from phxq.gateway.table import Route

log = logging.getLogger("phxq.gateway")

OPERATION = "phxq_operation"  # the request's route, for the metrics

DEFAULT_LISTEN = "127.0.0.1:7301"


@functools.lru_cache(maxsize=512)
def _latency(operation: str) -> Any:
    """The operation's child of ``GATEWAY_LATENCY`` (``labels()`` costs a lock and a lookup
    per request otherwise)."""
    return metrics.GATEWAY_LATENCY.labels(operation)


@functools.lru_cache(maxsize=2048)
def _answered(operation: str, status: int) -> Any:
    return metrics.GATEWAY_REQUESTS.labels(operation, str(status))


def problem_response(p: Problem) -> web.Response:
    return web.Response(
        status=p.status,
        body=json.dumps(p.body()).encode(),
        content_type=PROBLEM_TYPE,
        headers=p.headers(),
    )


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


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
        self._runner: web.AppRunner | None = None
        self._in_flight = 0
        self._openapi: dict[str, Any] | None = None
        self._registry = metrics.registry_for("gateway")
        self.address = self.listen

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
        return {"version": __version__, "address": self.address, "in_flight": self._in_flight}

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
            middlewares=[self._measured, self._problems],
        )
        for route in self.routes:
            app.router.add_route(route.method, route.path, self._endpoint(route))
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

    # ------------------------------------------------------------------------- serving

    @web.middleware
    async def _measured(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Counts and times every answer by operation and status (``phxq_gateway_*``)."""
        started = time.perf_counter()
        status = 500
        try:
            response: web.StreamResponse = await handler(request)
            status = response.status
            return response
        finally:
            operation = request.get(OPERATION, "none")
            _latency(operation).observe(time.perf_counter() - started)
            _answered(operation, status).inc()

    @web.middleware
    async def _problems(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every failure becomes a problem answer; over ``max_in_flight`` requests, 429."""
        if self._in_flight >= self.limits.max_in_flight:
            return problem_response(
                problem("overloaded", f"more than {self.limits.max_in_flight} requests in flight")
            )
        self._in_flight += 1
        metrics.GATEWAY_IN_FLIGHT.set(self._in_flight)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except Problem as p:
            return self._answer(p)
        except PhxqError as exc:
            return self._answer(problem_for(exc))
        except web.HTTPRequestEntityTooLarge:
            limit = self.limits.max_body_bytes
            return self._answer(problem("message_too_large", f"body above {limit} bytes"))
        except web.HTTPException as exc:
            if exc.status == 404:
                answer = problem("not_found", f"no route {request.method} {request.path}")
            elif exc.status == 405:
                answer = problem("method_not_allowed", f"{request.method} is not allowed here")
            else:
                answer = Problem(exc.status, "bad_argument", exc.reason)
            response = self._answer(answer)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except (ConnectionError, asyncio.CancelledError):
            raise  # the caller hung up: there is nobody to answer
        except TimeoutError:
            return self._answer(problem("unavailable", "timed out waiting for the cluster"))
        except Exception:
            log.exception("gateway: %s %s failed", request.method, request.path)
            return self._answer(problem("internal", "internal error (see the gateway's log)"))
        finally:
            self._in_flight -= 1
            metrics.GATEWAY_IN_FLIGHT.set(self._in_flight)

    def _answer(self, p: Problem) -> web.Response:
        if p.status in (401, 403):
            metrics.AUTH_REFUSED.labels("gateway").inc()
        response = problem_response(p)
        if p.status in (408, 413):
            response.force_close()  # the rest of the body was never read
        return response

    def _endpoint(self, route: Route) -> Any:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            request[OPERATION] = route.operation_id
            principal = None
            if route.permission is not None:  # authenticate before reading anything else
                principal = self.authorizer.authenticate(request.headers.get("Authorization"))
            args = self._params(route, request)
            body = await self._body(route, request)
            if route.permission is not None:
                values = {**args, **(body if isinstance(body, dict) else {})}
                for need in route.needs_all(values):
                    self.authorizer.check(principal, need)
            result = await route.handler(Call(self, args, body, request))
            if isinstance(result, web.StreamResponse):
                return result
            if isinstance(result, bytes):
                return web.Response(body=result, content_type=route.media_type)
            return web.json_response(result)

        return endpoint

    def _params(self, route: Route, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for p in route.params:
            if p.where == "path":
                text = request.match_info.get(p.name)
            elif p.where == "query":
                text = request.query.get(p.name)
            else:
                text = request.headers.get(p.name)
            if text is None:
                if p.required:
                    raise BadArgument(f"{p.where} parameter {p.name} is required")
                continue
            args[p.key] = parse_param(p.schema, text, f"{p.where} parameter {p.name}")
        return args

    async def _body(self, route: Route, request: web.Request) -> Any:
        if route.json_body is None and not route.raw_body:
            return None
        try:
            if request.content.is_eof():  # all here already (small bodies): no timer needed
                raw = await request.read()
            else:
                async with asyncio.timeout(self.limits.body_timeout):
                    raw = await request.read()
        except TimeoutError:
            timeout = self.limits.body_timeout
            raise problem("request_timeout", f"body not received within {timeout:g}s") from None
        if route.raw_body and not _is_json(request.content_type):
            return raw
        if not raw:
            raise BadArgument("a JSON body is required")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise BadArgument(f"body is not valid JSON: {str(exc)[:100]}") from None
        assert route.json_body is not None
        validate(route.json_body, body, "body")
        return body
