"""Errors as HTTP problems (RFC 9457 ``application/problem+json``).

Every error the gateway answers is a :class:`Problem`: an HTTP status, phxq's error ``code``
(the same stable code the RPC carries, see :mod:`phxq.errors`), a one-line ``detail`` and, for
statuses a client should retry (429, 503), ``Retry-After`` seconds. :func:`problem_for` maps any
:class:`phxq.errors.PhxqError` to one by walking its class tree, so a subclass added later gets
its parent's status until it is given its own. Nothing here knows about aiohttp: the body is a
plain dict (:meth:`Problem.body`), the server turns it into a response.

Statuses by code (the first match walking up the error's class tree)::

    bad_argument, client, protocol, config     400  (retrying the same request fails the same way)
    unauthenticated                            401  (WWW-Authenticate: Bearer)
    forbidden                                  403
    unknown_topic, not_found                   404
    method_not_allowed                         405
    request_timeout                            408  (the client sent its body too slowly)
    stale_token, lock_held, version_mismatch,  409
      txn_aborted, txn_committed
    message_too_large                          413
    overloaded                                 429  Retry-After
    not_master, stale_map, queue_moved,        503  Retry-After (safe to retry with the same
      unavailable, storage                          dedup id)
    internal                                   500  (a gateway bug; details only in its log)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from phxq.errors import PhxqError

PROBLEM_TYPE: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:phxq:problem:"
RETRY_AFTER_SECONDS: Final = 1

STATUS_BY_CODE: Final[dict[str, int]] = {
    "error": 500,
    "internal": 500,
    "client": 400,
    "bad_argument": 400,
    "protocol": 400,
    "config": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "unknown_topic": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "stale_token": 409,
    "lock_held": 409,
    "version_mismatch": 409,
    "txn_aborted": 409,
    "txn_committed": 409,
    "message_too_large": 413,
    "overloaded": 429,
    "not_master": 503,
    "stale_map": 503,
    "queue_moved": 503,  # a StaleMap: the client follows it; only seen if it ran out of time
    "unavailable": 503,
    "storage": 503,
}
TITLES: Final[dict[int, str]] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# Every status a route may answer with a problem, documented in the OpenAPI document.
PROBLEM_STATUSES: Final = tuple(sorted(TITLES))

# Fields copied from an error's ``data`` into the problem (small, safe to show a caller).
_SHOWN_DATA: Final = ("holder", "hint", "version", "topic", "key", "txn", "reason")


@dataclass(eq=False)
class Problem(Exception):
    """An error answer: raise it from a handler, or get one from :func:`problem_for`. (Not a
    frozen dataclass: ``contextlib`` assigns ``__traceback__`` on exceptions it re-raises.)"""

    status: int
    code: str
    detail: str
    retry_after: int | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def body(self) -> dict[str, Any]:
        """The JSON object sent as ``application/problem+json``."""
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.code,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="phxq"'
        return headers


def problem(code: str, detail: str, **extra: Any) -> Problem:
    """The problem for an error ``code`` of this table (status and Retry-After from it)."""
    status = STATUS_BY_CODE.get(code, 500)
    retry = RETRY_AFTER_SECONDS if status in (429, 503) else None
    return Problem(status, code, detail, retry, tuple(extra.items()))


def problem_for(exc: PhxqError) -> Problem:
    """The problem for a phxq error: the status of the nearest class in its tree that has one,
    its own code and message, and the few ``data`` fields a caller may act on (``holder`` of
    a held lock, ``hint``, ``version``)."""
    status = 500
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if isinstance(code, str) and code in STATUS_BY_CODE:
            status = STATUS_BY_CODE[code]
            break
    extra = tuple(
        (k, exc.data[k])
        for k in _SHOWN_DATA
        if k in exc.data and isinstance(exc.data[k], str | int | float | bool)
    )
    retry = RETRY_AFTER_SECONDS if status in (429, 503) else None
    detail = exc.message or type(exc).__name__
    return Problem(status, exc.code, detail, retry, extra)
