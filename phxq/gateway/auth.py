"""Who may call the gateway: the seam between HTTP requests and phxq's principals.

The gateway authenticates every request itself (``Authorization: Bearer <token>``) and checks
the route's permission (``produce:TOPIC``, ``consume:TOPIC:GROUP``, ``admin``; see
:class:`phxq.gateway.table.Route`) before it touches a store; it then talks to the stores
with its own identity. One shared client for every caller keeps the client's adaptive
batching across HTTP requests (concurrent enqueues of many callers share Paxos instances),
one connection per store, and no per-token state that a caller could grow.

:class:`OpenAccess` is the authorizer of a cluster without ``[security]`` (plaintext, no
auth: a trusted lab, as for the RPC).
"""

from __future__ import annotations

from typing import Any, Protocol


class Authorizer(Protocol):
    """Authenticates a request's ``Authorization`` header and checks permissions."""

    @property
    def enabled(self) -> bool:
        """True when callers must present a token (the OpenAPI document says so)."""
        ...

    def authenticate(self, authorization: str | None) -> Any:
        """The principal of the header's bearer token; raises a ``PhxqError`` with code
        ``unauthenticated`` when it is missing or unknown."""
        ...

    def check(self, principal: Any, permission: str) -> None:
        """Raise a ``PhxqError`` with code ``forbidden`` unless ``principal`` holds
        ``permission`` (``""``: any authenticated principal)."""
        ...


class OpenAccess:
    """No ``[security]``: every request is allowed, as on the RPC."""

    enabled = False

    def authenticate(self, authorization: str | None) -> Any:
        return None

    def check(self, principal: Any, permission: str) -> None:
        return None
