"""Cross-origin requests from browsers (CORS), for the origins ``[gateway] cors_origins`` names.

::

    [gateway]
    cors_origins = ["https://app.example.com", "http://localhost:5173"]   # or ["*"]

What it promises:

- **Nothing without the key.** With no ``cors_origins`` (the default) the gateway sends no
  CORS headers and a preflight (``OPTIONS``) is answered 405 like any unknown method.
- **Allowed origins.** An answer to a request whose ``Origin`` is allowed carries
  ``Access-Control-Allow-Origin`` (that origin), ``Vary: Origin`` and
  ``Access-Control-Expose-Headers`` (``Retry-After``, ``WWW-Authenticate``), problems and
  event streams included. A preflight for a route's path and method answers 204 with the
  path's methods, the requested headers (``Authorization``, ``Content-Type``, ``Phxq-*``...)
  and ``Access-Control-Max-Age``.
- **Refused origins.** A preflight from any other origin answers 403 (``forbidden``) without
  CORS headers, and other answers to it carry none, so a browser does not let the page read
  them. (CORS only guides browsers: a non-browser client can send any ``Origin``.)
- **Still authenticated.** CORS never grants anything: every route still needs its bearer
  token and permission (browsers send no credentials on a preflight, which touches no data).
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from phxq.gateway.problems import problem

MAX_AGE_SECONDS: Final = 600
EXPOSED: Final = "Retry-After, WWW-Authenticate"
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")


class Cors:
    """The CORS policy of one gateway: ``origins`` as ``[gateway] cors_origins`` (lowercase
    ``scheme://host[:port]`` or ``"*"``)."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any or origin.lower() in self.origins)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: the CORS headers of an answer to an allowed origin."""
        origin = request.headers.get("Origin")
        if self.allows(origin):
            assert origin is not None
            headers = response.headers
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = EXPOSED
            headers.add("Vary", "Origin")

    def preflight(self, request: web.Request, methods: list[str]) -> web.Response | None:
        """The answer to ``OPTIONS`` with ``Access-Control-Request-Method`` on a path whose
        routes take ``methods``; None when it is not a preflight (or the method is not one of
        them: the caller answers 404/405 as for any request)."""
        wanted = request.headers.get("Access-Control-Request-Method")
        if request.method != "OPTIONS" or wanted is None or wanted not in methods:
            return None
        origin = request.headers.get("Origin")
        if not self.allows(origin):
            detail = f"origin {origin!r} is not allowed ([gateway] cors_origins)"
            raise problem("forbidden", detail)
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        asked = request.headers.get("Access-Control-Request-Headers", "").strip()
        if asked and _HEADER_LIST.fullmatch(asked):
            response.headers["Access-Control-Allow-Headers"] = asked
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
        response.headers.add("Vary", "Access-Control-Request-Method")
        response.headers.add("Vary", "Access-Control-Request-Headers")
        return response
