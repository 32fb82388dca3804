"""phxq.security — TLS on every link, member certificates, tokens and permissions (DESIGN §11).

The model: with a ``[security]`` table every phxq port speaks TLS only. Members (stores, lock
nodes, consumers, gateways) present certificates signed by the cluster CA and may do
everything, including the members-only traffic (Paxos, catch-up, snapshots, rejoin, locks).
Clients present a bearer token once per connection; its ``[[principal]]`` grants
``produce:TOPIC``, ``consume:TOPIC:GROUP`` and ``admin``. The server checks every request
against one table (:mod:`phxq.security.policy`) before the handler runs.

Stable API (the HTTP gateway and the daemons build on it)::

    from phxq.security import (
        Principals, Principal, Permission, check, new_token, token_sha256,   # principals.py
        server_context, client_context, member_of, Credentials,              # tls.py
        make_ca, make_member_cert, write_private, cert_not_after,            # certs.py
        Guard, STORE_RULES, LOCK_RULES,                                      # policy.py
        NodeSecurity, member_credentials, tool_credentials, principals_of,   # daemon.py
    )

    principals = principals_of(cluster)            # or Principals([(name, sha256, allow), ...])
    who = principals.authenticate(token)           # Unauthenticated on an unknown token
    check(who, Permission.produce("orders"))       # Forbidden if not allowed

See docs/security.md for the operator's view (config, rotation, the handler signature).
"""

from phxq.security.certs import cert_not_after, make_ca, make_member_cert, write_private
from phxq.security.daemon import (
    NodeSecurity,
    member_credentials,
    principals_of,
    tool_credentials,
)
from phxq.security.policy import LOCK_RULES, STORE_RULES, Guard
from phxq.security.principals import (
    MEMBER,
    Permission,
    Principal,
    Principals,
    check,
    new_token,
    token_sha256,
)
from phxq.security.tls import Credentials, client_context, member_of, server_context

__all__ = [
    "LOCK_RULES",
    "MEMBER",
    "STORE_RULES",
    "Credentials",
    "Guard",
    "NodeSecurity",
    "Permission",
    "Principal",
    "Principals",
    "cert_not_after",
    "check",
    "client_context",
    "make_ca",
    "make_member_cert",
    "member_credentials",
    "member_of",
    "new_token",
    "principals_of",
    "server_context",
    "token_sha256",
    "tool_credentials",
    "write_private",
]
