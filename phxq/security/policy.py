"""Who may call which RPC: the one permission table, and the guard the RPC server runs.

Every RPC method a store or lock daemon serves has an entry here; the server asks the
:class:`Guard` before the handler runs, and a method without an entry is refused (fail closed;
a unit test checks that every registered handler has one).

Store (``STORE_RULES``)                    Lock service (``LOCK_RULES``)
=========================  ==============  ==========================  ===========================
meta                       authenticated   meta                        authenticated
enqueue, cancel_scheduled  produce:T       status                      admin
txn_prepare, txn_decide,   produce:T
  txn_resolve
txn_list, txn_settle       admin
txn_peek                   member
dequeue (group G)          consume:T:G     acquire, renew, release     member (consumers are)
dequeue (no group: tail)   consume:T:any   get, kv_get, kv_list,       admin (``phxq admin lag``,
dequeue (local=true)       admin             kv_wait                     settings) or member
commit, cursor, seek       consume:T:G     kv_put, kv_delete           admin for ``settings/...``
status, reconcile,         admin                                       (limit, pause, resume),
  checksum                                                             ``cluster/...`` (the
                                                                       cluster map), member
                                                                       for anything else
rejoin_probe, rejoin_read  member
move_seal                  member
move_cancel                admin
queue_end                  consume:T:any
notify px, snap            member          notify px, snap             member
=========================  ==============  ==========================  ===========================

"authenticated": any principal or member; "member": only a peer whose TLS certificate chains
to the cluster CA and carries ``OU=phxq-member`` (tokens never make a member).

Authentication is per connection: a member is known from its certificate in the handshake; a
client sends one ``hello`` request with its token first. Why not a token per request: the
token would ride in every frame (bytes and a hash per message on the hot path, against a
+0.15 ms p50 budget), and the connection is already the unit TLS authenticates. The session
keeps only the token's digest and looks the principal up again on every request, so a token
removed by a config reload stops working on open connections at once, and a changed ``allow``
list applies at once too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from phxq import metrics, validate
from phxq.errors import BadArgument, Forbidden, Unauthenticated
from phxq.net.frames import shown
from phxq.net.server import LogLimiter
from phxq.net.transport import Transport
from phxq.security.principals import MEMBER, Permission, Principal, Principals, check
from phxq.security.tls import member_of

log = logging.getLogger("phxq.security")

Rule = Callable[[Any], Permission | None]  # None: any authenticated caller

SETTINGS_PREFIX: Final = "settings/"  # lock-service keys the admin tools write
CLUSTER_PREFIX: Final = "cluster/"  # the cluster map (phxq.mapstore): admin tools write it too


def _params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise BadArgument("params must be a map")
    return params


def _name(params: Any, key: str) -> str:
    return validate.name(_params(params).get(key), key, max_chars=None)


def anyone(params: Any) -> Permission | None:
    return None


def member(params: Any) -> Permission:
    return Permission.member()


def admin(params: Any) -> Permission:
    return Permission.admin()


def produce(params: Any) -> Permission:
    return Permission.produce(_name(params, "topic"))


def consume(params: Any) -> Permission:
    return Permission.consume(_name(params, "topic"), _name(params, "group"))


def read(params: Any) -> Permission:
    """dequeue: a group's read, a group-less tail, or a replica-local read (tools: admin)."""
    p = _params(params)
    if p.get("local"):
        return Permission.admin()
    group = p.get("group")
    return Permission.consume(_name(p, "topic"), None if group is None else _name(p, "group"))


def lock_write(params: Any) -> Permission:
    key = _name(params, "key")
    admin_keys = key.startswith((SETTINGS_PREFIX, CLUSTER_PREFIX))
    return Permission.admin() if admin_keys else Permission.member()


STORE_RULES: Final[Mapping[str, Rule]] = {
    "meta": anyone,
    "enqueue": produce,
    "cancel_scheduled": produce,
    "txn_prepare": produce,  # per (group, topic) request: produce:T for every topic touched
    "txn_decide": produce,  # the home's topic
    "txn_resolve": produce,  # each participant's topic
    "txn_list": admin,
    "txn_settle": admin,
    "txn_peek": member,  # a store asks another set's store about a transaction (txn_remote)
    "dequeue": read,
    "commit": consume,
    "cursor": consume,
    "seek": consume,
    "status": admin,
    "reconcile": admin,
    "checksum": admin,
    "rejoin_probe": member,
    "rejoin_read": member,
    "move_seal": member,  # the target set's group master drives a queue move (store.mover)
    "move_cancel": admin,  # phxq admin queue move --cancel
    "queue_end": read,  # a tail "from now" of a moved queue (no group: consume:T:any)
}
LOCK_RULES: Final[Mapping[str, Rule]] = {
    "meta": anyone,
    "status": admin,
    "acquire": member,
    "renew": member,
    "release": member,
    "get": admin,
    "kv_get": admin,
    "kv_list": admin,
    "kv_wait": admin,
    "kv_put": lock_write,
    "kv_delete": lock_write,
    "rejoin_probe": member,
    "rejoin_read": member,
}
MEMBER_NOTIFIES: Final = frozenset({"px", "snap"})  # Paxos messages and snapshots


class Session:
    """One connection's identity: a member id from its certificate, or a token digest."""

    __slots__ = ("digest", "member", "peer")

    def __init__(self, peer: str, member: str | None) -> None:
        self.peer = peer
        self.member = member
        self.digest: str | None = None

    def __repr__(self) -> str:
        who = f"member {self.member}" if self.member else "token" if self.digest else "anonymous"
        return f"Session({self.peer}, {who})"


class Guard:
    """The RPC server's guard (``phxq.net.server.Guard``) for one daemon."""

    def __init__(
        self,
        rules: Mapping[str, Rule],
        principals: Principals,
        *,
        notifies: frozenset[str] = MEMBER_NOTIFIES,
        name: str = "phxq",
    ) -> None:
        self.rules = rules
        self.principals = principals
        self.notifies = notifies
        self.name = name
        self._log = LogLimiter()

    def set_principals(self, principals: Principals) -> None:
        """A reloaded ``[[principal]]`` table; open sessions use it from their next request."""
        self.principals = principals

    def open(self, transport: Transport) -> Session:
        return Session(transport.peer, member_of(getattr(transport, "peer_cert", None)))

    def hello(self, session: Session, params: Any) -> dict[str, Any]:
        token = params.get("token") if isinstance(params, dict) else None
        digest = self.principals.match(token)
        if digest is None:
            self._refused(session, "hello", "unknown token")
            raise Unauthenticated("unknown token")
        session.digest = digest
        principal = self.principals.by_digest(digest)
        assert principal is not None
        return {"principal": principal.name}

    def principal(self, session: Session) -> Principal:
        """Who ``session`` is now; ``Unauthenticated`` when nobody (or a revoked token)."""
        if session.member is not None:
            return MEMBER
        if session.digest is not None:
            principal = self.principals.by_digest(session.digest)
            if principal is not None:
                return principal
            raise Unauthenticated("the token of this connection is no longer valid")
        raise Unauthenticated(
            "authentication required: a token (hello) or a member certificate from the cluster CA"
        )

    def authorize(self, session: Session, method: str, params: Any) -> None:
        try:
            principal = self.principal(session)
            rule = self.rules.get(method)
            if rule is None:
                raise Forbidden(f"method {shown(method)} is not allowed", {"method": method})
            need = rule(params)
            if need is not None:
                check(principal, need)
        except (Unauthenticated, Forbidden) as exc:
            self._refused(session, method, exc.message)
            raise

    def admit_notify(self, session: Session, method: str) -> bool:
        if session.member is not None and method in self.notifies:
            return True
        self._refused(session, method, "notification from a non-member")
        return False

    def _refused(self, session: Session, method: str, why: str) -> None:
        metrics.AUTH_REFUSED.labels(self.name).inc()
        suppressed = self._log.allow()
        if suppressed is not None:
            more = f" ({suppressed} more suppressed)" if suppressed else ""
            log.warning(
                "%s: refused %s from %r: %s%s", self.name, shown(method), session, why, more
            )
