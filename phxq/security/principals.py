"""Tokens, principals and the permission check (pure: no I/O, no clocks).

Public API::

    new_token() -> str                          # 256 random bits, url-safe text
    token_sha256(token) -> str                  # the hex digest the config stores
    Permission.produce(topic) / .consume(topic, group | None) / .admin() / .member()
    parse_grant(text) -> Grant                  # "produce:orders", "consume:orders:*", "admin", "*"
    Principal(name, grants)                     # grants: tuple[Grant, ...]; MEMBER is the members'
    Principals(entries)                         # entries: (name, token_sha256, allow) triples
    Principals.authenticate(token) -> Principal         # Unauthenticated on an unknown token
    Principals.by_digest(digest) -> Principal | None    # a session re-resolves after a reload
    check(principal, permission) -> None        # Forbidden(data={"permission": ...}) if not allowed

Rules:

- ``produce:T`` allows enqueue to topic ``T``; ``consume:T:G`` allows reading topic ``T`` and
  moving consumer group ``G``'s cursor (dequeue, commit, cursor, seek). A read without a group
  (``tail``) needs a ``consume`` grant on the topic for any group, as Kafka's topic READ.
- ``admin`` allows every client-facing method (status, replay, limit, pause, resume,
  reconcile, produce and consume on every topic), never the members-only ones (Paxos,
  catch-up, snapshots, rejoin, locks): only a certificate from the cluster CA is a member.
- ``*`` inside a name matches any run of characters (``produce:orders.*``); the grant ``*``
  alone is every client permission, like ``admin``.
- Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest` against every
  principal (no early exit on the first match, so timing tells nothing about which one), and
  they never appear in an error, a log record or a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from phxq.errors import BadArgument, Forbidden, Unauthenticated

TOKEN_BYTES: Final = 32
_NAME_PART: Final = r"[A-Za-z0-9._*-]{1,249}"
_GRANT_RE: Final = re.compile(
    rf"(?P<all>\*)|(?P<admin>admin)|produce:(?P<ptopic>{_NAME_PART})"
    rf"|consume:(?P<ctopic>{_NAME_PART}):(?P<cgroup>{_NAME_PART})"
)
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe base64 without padding)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_sha256(token: str) -> str:
    """The hex SHA-256 of ``token``: what a ``[[principal]]`` stores as ``token_sha256``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_digest(text: object) -> bool:
    return isinstance(text, str) and _DIGEST_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Permission:
    """What one request needs. ``verb``: produce | consume | admin | member."""

    verb: str
    topic: str | None = None
    group: str | None = None

    @classmethod
    def produce(cls, topic: str) -> Permission:
        return cls("produce", topic)

    @classmethod
    def consume(cls, topic: str, group: str | None) -> Permission:
        return cls("consume", topic, group)

    @classmethod
    def admin(cls) -> Permission:
        return cls("admin")

    @classmethod
    def member(cls) -> Permission:
        return cls("member")

    def __str__(self) -> str:
        if self.verb == "produce":
            return f"produce:{self.topic}"
        if self.verb == "consume":
            return f"consume:{self.topic}:{self.group or '*'}"
        return self.verb


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``allow`` entry, parsed."""

    text: str
    verb: str  # "all" | "admin" | "produce" | "consume"
    topic: re.Pattern[str] | None = None
    group: re.Pattern[str] | None = None

    def allows(self, need: Permission) -> bool:
        if need.verb == "member":
            return False
        if self.verb in ("all", "admin"):
            return True
        if self.verb != need.verb or need.topic is None or self.topic is None:
            return False
        if not self.topic.fullmatch(need.topic):
            return False
        if self.verb == "consume" and need.group is not None:
            return self.group is not None and self.group.fullmatch(need.group) is not None
        return True


def parse_grant(text: object) -> Grant:
    """An ``allow`` entry; ``BadArgument`` naming the accepted forms when malformed."""
    m = _GRANT_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise BadArgument(
            f"bad grant {text!r}: expected produce:TOPIC, consume:TOPIC:GROUP, admin or * "
            "(names may use * as a wildcard)"
        )
    assert isinstance(text, str)
    if m["all"]:
        return Grant(text, "all")
    if m["admin"]:
        return Grant(text, "admin")
    if m["ptopic"]:
        return Grant(text, "produce", _glob(m["ptopic"]))
    return Grant(text, "consume", _glob(m["ctopic"]), _glob(m["cgroup"]))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``member``: a process holding a certificate from the cluster CA."""

    name: str
    grants: tuple[Grant, ...] = ()
    member: bool = False


MEMBER: Final = Principal("member", member=True)


def check(principal: Principal, need: Permission) -> None:
    """Return if ``principal`` may do what ``need`` describes, else raise ``Forbidden``.
    Members may do everything (they run the cluster)."""
    if principal.member:
        return
    for grant in principal.grants:
        if grant.allows(need):
            return
    what = "cluster members only" if need.verb == "member" else str(need)
    raise Forbidden(
        f"principal {principal.name!r} is not allowed: needs {what}",
        {"permission": str(need), "principal": principal.name},
    )


class Principals:
    """The ``[[principal]]`` table: token -> principal, in constant time per entry."""

    __slots__ = ("_by_digest", "_digests")

    def __init__(self, entries: Iterable[tuple[str, str, Iterable[str]]] = ()) -> None:
        by_digest: dict[str, Principal] = {}
        for name, digest, allow in entries:
            if not is_digest(digest):
                raise BadArgument(f"principal {name!r}: token_sha256 must be 64 hex digits")
            by_digest[digest] = Principal(name, tuple(parse_grant(g) for g in allow))
        self._by_digest = by_digest
        self._digests = tuple((d.encode(), d) for d in by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        return f"Principals({sorted(p.name for p in self._by_digest.values())})"

    def authenticate(self, token: object) -> Principal:
        """The principal holding ``token``; ``Unauthenticated`` otherwise (no hint why)."""
        digest = self.match(token)
        if digest is None:
            raise Unauthenticated("unknown token")
        return self._by_digest[digest]

    def match(self, token: object) -> str | None:
        """The configured digest ``token`` hashes to, or None. Every entry is compared."""
        if not isinstance(token, str) or not token or len(token) > 1024:
            return None
        wanted = token_sha256(token).encode()
        found = None
        for raw, digest in self._digests:
            if hmac.compare_digest(raw, wanted):
                found = digest
        return found

    def by_digest(self, digest: str) -> Principal | None:
        """The principal now configured for ``digest`` (None once its token was removed)."""
        return self._by_digest.get(digest)
