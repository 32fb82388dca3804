"""phxq.gateway: the HTTP gateway (DESIGN.md §12) — the client's operations over HTTP/JSON,
so every language, and curl, is a phxq client.

- :mod:`phxq.gateway.server`: :class:`Gateway`, the aiohttp daemon (``phxq gateway``);
- :mod:`phxq.gateway.routes`: the one route table the router and the OpenAPI document share;
- :mod:`phxq.gateway.handlers` / :mod:`phxq.gateway.stream`: what each operation does;
- :mod:`phxq.gateway.problems`: errors as ``application/problem+json`` with phxq's codes;
- :mod:`phxq.gateway.schema`, :mod:`phxq.gateway.openapi`: validation and the document (pure);
- :mod:`phxq.gateway.auth`: bearer tokens and permissions.

The API itself is documented in docs/http-api.md and served at ``/v1/openapi.json``.
"""

from phxq.gateway.server import Gateway

__all__ = ["Gateway"]
