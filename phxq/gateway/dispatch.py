"""One route's request path, compiled once: from an aiohttp request to the answer.

:func:`endpoint` turns a :class:`~phxq.gateway.table.Route` into the aiohttp handler that
serves it, in this order: the in-flight limit (429), authentication (before anything else is
read), the parameters and body checked against the route's schemas, the permission check,
the route's handler, and the answer encoded (JSON unless the handler gave bytes or a stream).
Every failure becomes a problem answer (:func:`failure`); every answer is counted and timed by
operation and status (``phxq_gateway_*``). :func:`unrouted` answers what no route matches
(a CORS preflight, 404, or 405 with ``Allow``) the same way.

Why a compiled closure rather than aiohttp middlewares: the gateway is CPU-bound, and each
middleware layer costs a coroutine frame and a wrapper per request (three with aiohttp's own);
the work per route (the metric children, the parameter parsers, which permission applies) is
done here once instead of on every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from phxq import metrics
from phxq.errors import BadArgument, PhxqError
from phxq.gateway.cors import Cors
from phxq.gateway.handlers import Call
from phxq.gateway.problems import PROBLEM_TYPE, Problem, problem, problem_for
from phxq.gateway.schema import parse_param, validate
from phxq.gateway.table import Param, Route

if TYPE_CHECKING:
    from phxq.gateway.server import Gateway

log = logging.getLogger("phxq.gateway")

Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]
MEMO_MAX: Final = 4096  # parsed path parameters remembered per parameter (topic names...)
UNROUTED: Final = "none"  # the operation label of requests no route matched


class _Counted:
    """The ``phxq_gateway_*`` children of one operation, looked up once (``labels()`` costs a
    lock and a lookup per call)."""

    __slots__ = ("_by_status", "latency", "operation")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.latency = metrics.GATEWAY_LATENCY.labels(operation)
        self._by_status: dict[int, Any] = {}

    def record(self, status: int, seconds: float) -> None:
        self.latency.observe(seconds)
        counter = self._by_status.get(status)
        if counter is None:
            counter = metrics.GATEWAY_REQUESTS.labels(self.operation, str(status))
            self._by_status[status] = counter
        counter.inc()


def problem_response(p: Problem) -> web.Response:
    return web.Response(
        status=p.status,
        body=json.dumps(p.body()).encode(),
        content_type=PROBLEM_TYPE,
        headers=p.headers(),
    )


def answer(p: Problem) -> web.Response:
    """The response for a problem (counted as refused auth for 401/403)."""
    if p.status in (401, 403):
        metrics.AUTH_REFUSED.labels("gateway").inc()
    response = problem_response(p)
    if p.status in (408, 413):
        response.force_close()  # the rest of the body was never read
    return response


def failure(gateway: Gateway, request: web.Request, exc: Exception) -> web.Response:
    """The problem answer for whatever a request raised (never a stack trace)."""
    if isinstance(exc, Problem):
        return answer(exc)
    if isinstance(exc, PhxqError):
        return answer(problem_for(exc))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = gateway.limits.max_body_bytes
        return answer(problem("message_too_large", f"body above {limit} bytes"))
    if isinstance(exc, web.HTTPException):
        return answer(Problem(exc.status, "bad_argument", exc.reason))
    if isinstance(exc, TimeoutError):
        return answer(problem("unavailable", "timed out waiting for the cluster"))
    log.error("gateway: %s %s failed", request.method, request.path, exc_info=exc)
    return answer(problem("internal", "internal error (see the gateway's log)"))


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


class _ParamParser:
    """One parameter: where to find its text and its parsed value (path values memoised)."""

    __slots__ = ("key", "label", "memo", "name", "required", "schema", "where")

    def __init__(self, p: Param) -> None:
        self.name, self.where, self.schema, self.required = p.name, p.where, p.schema, p.required
        self.key = p.key
        self.label = f"{p.where} parameter {p.name}"
        # Path values (topic names, queue numbers) repeat request after request; headers such
        # as Phxq-Key do not, so only path values are remembered.
        self.memo: dict[str, Any] | None = {} if p.where == "path" else None

    def parse(self, text: str) -> Any:
        memo = self.memo
        if memo is None:
            return parse_param(self.schema, text, self.label)
        value = memo.get(text, memo)
        if value is memo:  # not seen yet (memo itself is the "absent" marker)
            value = parse_param(self.schema, text, self.label)  # raises before remembering
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[text] = value
        return value


def _params(parsers: tuple[_ParamParser, ...], request: web.Request) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for p in parsers:
        if p.where == "path":
            text = request.match_info.get(p.name)
        elif p.where == "query":
            text = request.query.get(p.name)
        else:
            text = request.headers.get(p.name)
        if text is None:
            if p.required:
                raise BadArgument(f"{p.label} is required")
            continue
        args[p.key] = p.parse(text)
    return args


async def _body(gateway: Gateway, route: Route, request: web.Request) -> Any:
    try:
        if request.content.is_eof():  # all here already (small bodies): no timer needed
            raw = await request.read()
        else:
            async with asyncio.timeout(gateway.limits.body_timeout):
                raw = await request.read()
    except TimeoutError:
        timeout = gateway.limits.body_timeout
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


def endpoint(gateway: Gateway, route: Route) -> Endpoint:
    """The aiohttp handler of ``route`` on ``gateway`` (see the module docstring)."""
    counted = _Counted(route.operation_id)
    parsers = tuple(_ParamParser(p) for p in route.params)
    secured = route.permission is not None
    has_body = route.json_body is not None or route.raw_body
    handler = route.handler
    media_type = route.media_type
    charset = "utf-8" if media_type == "application/json" else None  # as for a JSON answer

    async def run(request: web.Request) -> web.StreamResponse:
        authorizer = gateway.authorizer
        principal = None
        if secured:  # authenticate before reading anything else
            principal = authorizer.authenticate(request.headers.get("Authorization"))
        args = _params(parsers, request) if parsers else {}
        body = await _body(gateway, route, request) if has_body else None
        if secured:
            values = {**args, **body} if isinstance(body, dict) else args
            for need in route.needs_all(values):
                authorizer.check(principal, need)
        result = await handler(Call(gateway, args, body, request))
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, bytes):
            return web.Response(body=result, content_type=media_type, charset=charset)
        return web.Response(
            body=json.dumps(result).encode(), content_type="application/json", charset="utf-8"
        )

    async def serve(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500  # unless an answer is given: the caller hung up, or the gateway stops
        try:
            if gateway.in_flight >= gateway.limits.max_in_flight:
                limit = gateway.limits.max_in_flight
                response: web.StreamResponse = answer(
                    problem("overloaded", f"more than {limit} requests in flight")
                )
            else:
                gateway.in_flight += 1
                try:
                    response = await run(request)
                except ConnectionError:
                    raise  # the caller hung up: there is nobody to answer
                except Exception as exc:  # every failure is answered as a problem
                    response = failure(gateway, request, exc)
                finally:
                    gateway.in_flight -= 1
            status = response.status
            return response
        finally:
            counted.record(status, time.perf_counter() - started)

    return serve


def _path_pattern(path: str) -> re.Pattern[str]:
    """``/v1/topics/{topic}`` as a regex matching what aiohttp's router would."""
    parts = re.split(r"(\{[^{}]+\})", path)
    return re.compile(
        "".join("[^{}/]+" if p.startswith("{") else re.escape(p) for p in parts if p) + "$"
    )


def unrouted(routes: tuple[Route, ...], cors: Cors | None = None) -> Endpoint:
    """The handler of every request no route matched: a CORS preflight (with ``cors``),
    else 405 with ``Allow`` when the path is a route's with another method, else 404; a
    problem either way."""
    patterns = [(_path_pattern(r.path), r.method) for r in routes]
    counted = _Counted(UNROUTED)

    def respond(request: web.Request) -> web.Response:
        path = request.path
        allowed = sorted({method for pattern, method in patterns if pattern.match(path)})
        if allowed and cors is not None:
            try:
                preflight = cors.preflight(request, allowed)
            except Problem as p:  # a refused origin (not an auth refusal: no token was due)
                return problem_response(p)
            if preflight is not None:
                return preflight
        if allowed:
            response = answer(
                problem("method_not_allowed", f"{request.method} is not allowed here")
            )
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return answer(problem("not_found", f"no route {request.method} {path}"))

    async def serve(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        response = respond(request)
        counted.record(response.status, time.perf_counter() - started)
        return response

    return serve
