"""OpenTelemetry tracing, optional (``pip install phxq[otel]``): one trace from the producer
through the store to the handler.

- **Producer** (``Client.enqueue`` / ``enqueue_many``): a ``send <topic>`` span (kind
  PRODUCER) around the call, whose W3C ``traceparent`` (and ``tracestate``) is added to the
  message headers, so it is stored and replicated with the message. Headers that already carry
  a ``traceparent`` keep it (the caller propagates its own context).
- **Store** (the ``enqueue`` RPC): a ``store <topic>`` span (kind SERVER) per distinct
  ``traceparent`` in the request, parented by it, from receipt until the instance is chosen
  and applied.
- **Consumer** (each handler attempt): a ``process <topic>`` span (kind CONSUMER) whose parent
  is the stored ``traceparent``; an HTTP handler's request carries a ``traceparent`` of this
  span, so the handler's own server spans join the trace.

Cost: with the extra not installed, or installed but no tracer provider set
(``opentelemetry.trace.set_tracer_provider``, or running under ``opentelemetry-instrument``),
every hook is one call returning at once: nothing is added to messages, no span is made.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

try:  # the optional extra
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is absent
    _trace = None  # type: ignore[assignment]

__all__ = [
    "TRACEPARENT",
    "enabled",
    "inject_current",
    "process_span",
    "send_span",
    "store_spans",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_STORE_SPANS = 64  # distinct traceparents traced per enqueue request (a batch of many)
_PROPAGATOR: Any = TraceContextTextMapPropagator() if _trace is not None else None
_tracers: dict[int, Any] = {}


# opentelemetry names a provider to load in this variable; without it and without one set in
# code, get_tracer_provider() answers its no-op proxy, after an os.environ lookup per call
# (several microseconds on every enqueue of the client, the gateway and the stores).
_ENV_PROVIDER = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_UNKNOWN = object()


def enabled() -> bool:
    """True when the extra is installed and a tracer provider is set."""
    if _trace is None:
        return False
    # The fast "off" answer: no provider set yet (opentelemetry's global; if a future version
    # renames it, getattr answers _UNKNOWN and the full check below runs).
    if getattr(_trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _ENV_PROVIDER:
        return False
    provider = _trace.get_tracer_provider()
    return not isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider))


def _tracer() -> Any:
    provider = _trace.get_tracer_provider()
    tracer = _tracers.get(id(provider))
    if tracer is None:
        _tracers.clear()  # the provider changed (tests): the old tracer is stale
        from phxq import __version__

        tracer = _tracers[id(provider)] = provider.get_tracer("phxq", __version__)
    return tracer


def _attributes(topic: str, operation: str, **more: Any) -> dict[str, Any]:
    return {
        "messaging.system": "phxq",
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        **{k: v for k, v in more.items() if v is not None},
    }


@contextlib.contextmanager
def send_span(
    topic: str, headers: Mapping[str, str] | None, count: int = 1
) -> Iterator[Mapping[str, str] | None]:
    """Around one enqueue call: yields the headers to send (with this span's
    ``traceparent`` added), or ``headers`` unchanged when tracing is off or they are not a
    mapping (the client rejects those)."""
    if not enabled() or not (headers is None or isinstance(headers, Mapping)):
        yield headers
        return
    kind = _trace.SpanKind.PRODUCER
    attrs = _attributes(topic, "send", **{"messaging.batch.message_count": count})
    with _tracer().start_as_current_span(f"send {topic}", kind=kind, attributes=attrs):
        carried = dict(headers or {})
        if TRACEPARENT not in carried:
            _PROPAGATOR.inject(carried)
        yield carried


def store_spans(topic: str, node: int, messages: Iterable[Any]) -> list[Any]:
    """Started store spans for the distinct ``traceparent`` headers of ``messages`` (wire
    form ``[payload, key, headers, ...]``); end them with :func:`end_spans`. ``[]`` when off."""
    if not enabled():
        return []
    parents: dict[str, str | None] = {}
    for m in messages:
        headers = m[2] if isinstance(m, list) and len(m) > 2 else None
        if isinstance(headers, dict) and isinstance(headers.get(TRACEPARENT), str):
            parents.setdefault(headers[TRACEPARENT], headers.get(TRACESTATE))
            if len(parents) >= MAX_STORE_SPANS:
                break
    spans = []
    for traceparent, tracestate in parents.items():
        carrier = {TRACEPARENT: traceparent}
        if isinstance(tracestate, str):
            carrier[TRACESTATE] = tracestate
        parent = _PROPAGATOR.extract(carrier)
        spans.append(
            _tracer().start_span(
                f"store {topic}",
                context=parent,
                kind=_trace.SpanKind.SERVER,
                attributes=_attributes(topic, "receive", **{"phxq.store.node": node}),
            )
        )
    return spans


def end_spans(spans: list[Any], error: BaseException | None = None) -> None:
    """End :func:`store_spans`' spans, marked failed with ``error`` if given."""
    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))
        span.end()


@contextlib.contextmanager
def process_span(
    topic: str, queue: int, offset: int, group: str, headers: Mapping[str, str]
) -> Iterator[Any]:
    """Around one handler attempt at a message whose headers carry a ``traceparent``: yields
    the current span (None when tracing is off or the message has no trace)."""
    if not enabled() or TRACEPARENT not in headers:
        yield None
        return
    carrier = {k: headers[k] for k in (TRACEPARENT, TRACESTATE) if k in headers}
    attrs = _attributes(
        topic,
        "process",
        **{
            "messaging.consumer.group.name": group,
            "messaging.destination.partition.id": str(queue),
            "messaging.message.id": str(offset),
        },
    )
    with _tracer().start_as_current_span(
        f"process {topic}",
        context=_PROPAGATOR.extract(carrier),
        kind=_trace.SpanKind.CONSUMER,
        attributes=attrs,
    ) as span:
        yield span


def mark_failed(span: Any, reason: str) -> None:
    """Mark a :func:`process_span` span failed (the handler did not ack)."""
    if span is not None:
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, reason))


def inject_current(headers: dict[str, str]) -> None:
    """Set ``traceparent`` in ``headers`` (HTTP request headers) to the current span's, when
    tracing is on and a span is current; otherwise leave them as they are."""
    if not enabled():
        return
    if _trace.get_current_span().get_span_context().is_valid:
        _PROPAGATOR.inject(headers)
