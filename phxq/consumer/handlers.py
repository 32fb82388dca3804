"""Handlers: where the consumer tier pushes each message, and what counts as an ack.

Public API::

    Delivery            # frozen: what a handler receives (one attempt at one message)
    Outcome(ok, reason) # what a handler attempt produced
    make_handler(spec, *, timeout, session=None) -> Handler      # ConfigError if unusable
    Handler             # ``await handler(delivery) -> Outcome``; never raises PhxqError/OSError
    HttpHandler(url, *, timeout, session)
    CallableHandler(function, *, timeout)
    http_headers(delivery) -> dict[str, str]

**HTTP** (``http://...`` / ``https://...``): ``POST url`` with the payload as the body
(``Content-Type: application/octet-stream``) and these headers::

    X-Phxq-Message-Id   "<paxos group>-<instance>-<index>" (DESIGN.md §1's message id)
    X-Phxq-Group        the consumer group
    X-Phxq-Topic, X-Phxq-Queue, X-Phxq-Offset, X-Phxq-Attempt (1 for the first delivery),
    X-Phxq-Enqueued-At  seconds since the epoch (the store's clock at enqueue)
    X-Phxq-Key          only when the message has a key
    X-Phxq-Consumer     the delivering consumer daemon, "<name>#<incarnation>"
    <name>: <value>     each message header as it is, except that a name HTTP reserves (Host,
                        Content-Length, Content-Type, Transfer-Encoding, Connection, Expect,
                        Te, Trailer, Upgrade) or one starting with "X-Phxq-" or that is not an
                        HTTP token is sent as "X-Phxq-Header-<percent-encoded name>"

    Phxq-Signature      with the group's ``signing_secret_file``: ``t=<unix time>,v1=<hex>``,
                        HMAC-SHA256 over the body and every X-Phxq-* header (docs/security.md)

Header values (and the key) that are not printable ASCII are percent-encoded (RFC 3986,
UTF-8), since HTTP/1.1 header values cannot carry them safely. A 2xx answer acks; any other
status (redirects are not followed), a connection error, or no answer within
``handler_timeout`` fails the attempt. The response body is ignored.

**In-process** (``package.module:function``): the function is called with one
:class:`Delivery`. An ``async def`` is awaited on the consumer's loop; a plain function runs in
a worker thread (``asyncio.to_thread``) so it cannot stall the loop. Returning anything but
``False`` acks; returning ``False`` or raising fails the attempt (what it raised is logged with
its traceback, WARNING, at most once per ``HANDLER_TRACEBACK_INTERVAL`` per handler, with a count
of those left out). After ``handler_timeout`` the
attempt fails; an async handler is cancelled, but a thread cannot be stopped: a sync handler
keeps running in its thread until it returns (its result is then ignored).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from phxq import otel
from phxq.config.model import ConfigError
from phxq.logs import RateLimitedLog
from phxq.security.signing import SIGNATURE_HEADER, sign

log = logging.getLogger("phxq.consumer")
HANDLER_TRACEBACK_INTERVAL = 10.0  # seconds between two logged tracebacks of one handler
_TRACEBACKS = RateLimitedLog(log, HANDLER_TRACEBACK_INTERVAL)

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_RESERVED = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "expect",
        "te",
        "trailer",
        "upgrade",
        "keep-alive",
        "proxy-connection",
    }
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt at delivering one message to a handler."""

    consumer_group: str
    topic: str
    queue: int
    offset: int
    message_id: str
    payload: bytes
    key: str | None
    headers: dict[str, str]
    enqueued_at: float
    attempt: int
    consumer: str = ""  # the delivering consumer daemon ("<name>#<incarnation>")
    token: int = 0  # the pair lock's fencing token this delivery was made under


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt: ``ok`` acks; otherwise ``reason`` says why (for the log and
    the dead-letter headers)."""

    ok: bool
    reason: str = ""


ACK = Outcome(True)


class Handler(Protocol):
    async def __call__(self, delivery: Delivery) -> Outcome: ...


def _header_value(value: str) -> str:
    return value if _PRINTABLE.fullmatch(value) else quote(value, safe="")


def http_headers(delivery: Delivery) -> dict[str, str]:
    """The HTTP request headers for ``delivery`` (see the module docstring)."""
    out = {
        "Content-Type": "application/octet-stream",
        "X-Phxq-Message-Id": delivery.message_id,
        "X-Phxq-Group": _header_value(delivery.consumer_group),
        "X-Phxq-Topic": delivery.topic,
        "X-Phxq-Queue": str(delivery.queue),
        "X-Phxq-Offset": str(delivery.offset),
        "X-Phxq-Attempt": str(delivery.attempt),
        "X-Phxq-Enqueued-At": repr(delivery.enqueued_at),
    }
    if delivery.consumer:
        out["X-Phxq-Consumer"] = _header_value(delivery.consumer)
    if delivery.key is not None:
        out["X-Phxq-Key"] = _header_value(delivery.key)
    for name, value in delivery.headers.items():
        lowered = name.lower()
        if (
            not _TOKEN.fullmatch(name)
            or lowered in _RESERVED
            or lowered.startswith("x-phxq-")
            or name in out
        ):
            name = "X-Phxq-Header-" + quote(name, safe="")
        out[name] = _header_value(value)
    return out


class HttpHandler:
    """POST each delivery to ``url`` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        session: aiohttp.ClientSession,
        secret: bytes | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._session = session
        self._secret = secret

    async def __call__(self, delivery: Delivery) -> Outcome:
        headers = http_headers(delivery)
        otel.inject_current(headers)  # with phxq[otel]: the handler span's traceparent
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, headers, delivery.payload, time.time())
        try:
            async with self._session.post(
                self.url,
                data=delivery.payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,  # a redirect is not an ack; following one re-POSTs
            ) as response:
                await response.read()  # drain, so the connection can be reused
                if 200 <= response.status < 300:
                    return ACK
                return Outcome(False, f"HTTP {response.status}")
        except TimeoutError:
            return Outcome(False, f"timed out after {self.timeout}s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: aiohttp rejects a header it cannot send; the attempt fails like any
            # other, the consumer keeps running.
            return Outcome(False, f"{type(exc).__name__}: {exc}")


class CallableHandler:
    """Call a Python function with each delivery (see the module docstring)."""

    def __init__(self, function: Callable[[Delivery], Any], *, timeout: float) -> None:
        self.function = function
        self.timeout = timeout
        self._name = (
            f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', function)}"
        )
        self._is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 (an async __call__ object)
        )

    async def __call__(self, delivery: Delivery) -> Outcome:
        call: Awaitable[Any]
        if self._is_async:
            call = self.function(delivery)
        else:
            call = asyncio.to_thread(self.function, delivery)
        try:
            async with asyncio.timeout(self.timeout):  # no extra task per call, unlike wait_for
                result = await call
        except TimeoutError:
            return Outcome(False, f"timed out after {self.timeout}s")
        except Exception as exc:  # the handler's own failure: it fails this attempt, no more
            # The traceback is what a handler's author needs, but a handler failing on every
            # message must not flood the log: one per handler per HANDLER_TRACEBACK_INTERVAL.
            _TRACEBACKS.log(
                self._name,
                logging.WARNING,
                "handler %s raised on %s/%d offset %d (attempt %d)",
                self._name,
                delivery.topic,
                delivery.queue,
                delivery.offset,
                delivery.attempt,
                exc_info=exc,
            )
            return Outcome(False, f"{type(exc).__name__}: {exc}")
        if result is False:
            return Outcome(False, "handler returned False")
        return ACK


def resolve_callable(spec: str) -> Callable[[Delivery], Any]:
    """Import ``package.module:function`` (the function may be a dotted attribute path)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ConfigError(f"handler {spec!r}: expected 'package.module:function' or a URL")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"handler {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"handler {spec!r}: {module_name} has no {attr_path!r}") from exc
    if not callable(target):
        raise ConfigError(f"handler {spec!r}: {attr_path!r} is not callable")
    function: Callable[[Delivery], Any] = target
    return function


def make_handler(
    spec: str,
    *,
    timeout: float,
    session: aiohttp.ClientSession | None = None,
    secret: bytes | None = None,
) -> Handler:
    """The handler for a consumer group's ``handler`` setting. HTTP handlers need ``session``;
    with ``secret`` each push is signed (``Phxq-Signature``, :mod:`phxq.security.signing`)."""
    if spec.startswith(("http://", "https://")):
        if session is None:
            raise ConfigError(f"handler {spec!r}: an HTTP handler needs an aiohttp session")
        return TracedHandler(HttpHandler(spec, timeout=timeout, session=session, secret=secret))
    return TracedHandler(CallableHandler(resolve_callable(spec), timeout=timeout))


class TracedHandler:
    """Runs each attempt inside an OpenTelemetry ``process`` span continuing the message's
    stored ``traceparent`` (:mod:`phxq.otel`); without phxq[otel], a tracer provider or a
    ``traceparent`` in the message, it only calls the handler it wraps."""

    def __init__(self, inner: Handler) -> None:
        self.inner = inner

    async def __call__(self, delivery: Delivery) -> Outcome:
        d = delivery
        with otel.process_span(d.topic, d.queue, d.offset, d.consumer_group, d.headers) as span:
            outcome = await self.inner(delivery)
            if not outcome.ok:
                otel.mark_failed(span, outcome.reason)
            return outcome
