"""Who may call the gateway: the seam between HTTP requests and phxq's principals.

The gateway authenticates every request itself (``Authorization: Bearer <token>``) and checks
the route's permission (``produce:TOPIC``, ``consume:TOPIC:GROUP``, ``admin``; see
:class:`phxq.gateway.table.Route`) before it touches a store; it then talks to the stores
with its own identity. One shared client for every caller keeps the client's adaptive
batching across HTTP requests (concurrent enqueues of many callers share Paxos instances),
one connection per store, and no per-token state that a caller could grow. Like the
consumer daemon, the gateway is a member ([security] cert/key): it may take the pair locks
that the RPC leaves to members, and grants them over HTTP to holders of ``consume:T:G``.

:class:`OpenAccess` is the authorizer of a cluster without ``[security]`` (plaintext, no
auth: a trusted lab, as for the RPC).
"""

from __future__ import annotations

from typing import Protocol

from phxq.config import ClusterConfig
from phxq.errors import Unauthenticated
from phxq.security.principals import Permission, Principal, Principals, check


class Authorizer(Protocol):
    """Authenticates a request's ``Authorization`` header and checks permissions."""

    @property
    def enabled(self) -> bool:
        """True when callers must present a token (the OpenAPI document says so)."""
        ...

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of the header's bearer token; ``Unauthenticated`` when it is missing
        or unknown."""
        ...

    def check(self, principal: Principal | None, need: Permission) -> None:
        """``Forbidden`` unless ``principal`` holds ``need``."""
        ...


class OpenAccess:
    """No ``[security]``: every request is allowed, as on the RPC."""

    enabled = False

    def authenticate(self, authorization: str | None) -> Principal | None:
        return None

    def check(self, principal: Principal | None, need: Permission) -> None:
        return None


class BearerTokens:
    """``Authorization: Bearer <token>`` against the config's ``[[principal]]`` table (tokens
    compared as digests in constant time, never logged: :class:`phxq.security.Principals`)."""

    enabled = True

    def __init__(self, principals: Principals) -> None:
        self.principals = principals

    def authenticate(self, authorization: str | None) -> Principal | None:
        if not authorization:
            raise Unauthenticated("send Authorization: Bearer <token>")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be: Bearer <token>")
        return self.principals.authenticate(token.strip())

    def check(self, principal: Principal | None, need: Permission) -> None:
        if principal is None:
            raise Unauthenticated("send Authorization: Bearer <token>")
        check(principal, need)


def authorizer_for(config: ClusterConfig) -> Authorizer:
    """Bearer tokens with ``[security]``, open access without (as the stores do)."""
    if config.security is None:
        return OpenAccess()
    from phxq.security.daemon import principals_of

    return BearerTokens(principals_of(config))
