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

import ssl
from typing import Protocol

from phxq.config import ClusterConfig, ConfigError
from phxq.errors import Unauthenticated
from phxq.security.daemon import MemberSecurity, principals_of
from phxq.security.principals import Permission, Principal, Principals, check
from phxq.security.tls import reload_context, server_context


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


class GatewaySecurity:
    """``[security]`` as a gateway uses it: HTTPS with the ``[security]`` member certificate,
    the same certificate to dial the stores and lock nodes, and the ``[[principal]]`` tokens.
    :meth:`reload` (SIGHUP, ``phxq.security.daemon.reload_on_hup``) applies a renewed
    certificate to new connections and a changed principal table to the next request."""

    def __init__(self, config: ClusterConfig) -> None:
        sec = config.security
        assert sec is not None
        self.member = MemberSecurity(config)  # ConfigError without [security] cert/key
        try:
            self.server_ssl = server_context(sec.ca, self.member.cert, self.member.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the gateway's TLS context: {exc}") from None
        self.tokens = BearerTokens(principals_of(config))

    @property
    def dial_ssl(self) -> ssl.SSLContext:
        return self.member.ssl

    def reload(self, config: ClusterConfig) -> None:
        """Apply a re-read config; ``ConfigError`` leaves everything as it was."""
        principals = principals_of(config)
        self.member.reload(config)
        assert config.security is not None
        try:
            reload_context(self.server_ssl, config.security.ca, self.member.cert, self.member.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot reload the certificates: {exc}") from None
        self.tokens.principals = principals

    def describe(self) -> str:
        return f"{len(self.tokens.principals)} principals, {self.member.describe()}"
