"""Security as the processes of a cluster use it, built from the config.

Public API::

    NodeSecurity.build(cluster, node, rules, name) -> NodeSecurity | None   # None: no [security]
    sec.server_ssl / sec.guard                  # for RpcServer(ssl=, guard=)
    sec.peer_credentials                         # Credentials with the member cert (peer traffic)
    sec.reload(cluster)                          # new certs (next connections) and principals (now)
    sec.cert_status() -> dict                    # the member cert's expiry (also a metric)
    member_credentials(cluster) -> Credentials   # consumers/gateways: [security] cert/key
    MemberSecurity.build(cluster) -> MemberSecurity | None   # the same, reloadable (SIGHUP)
    reload_on_hup(daemon, config_path)           # SIGHUP: daemon.security.reload(new config)
    tool_credentials(cluster, token=None) -> Credentials   # CLI tools: --token, PHXQ_TOKEN, [client]
    client_options(cluster) -> {"token", "ca"}   # phxq.Client(addrs, **client_options(cfg))
    tool_pool(cluster) -> RpcPool                # raw RPC for tools, with those credentials
    principals_of(cluster) -> Principals

Reload covers what rotation needs without a restart: a renewed member certificate and key
(and an added CA) for new connections, and the ``[[principal]]`` table, which applies to open
connections from their next request. Addresses, node ids and the presence of ``[security]``
itself need a restart.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phxq import metrics
from phxq.config import ClusterConfig, ConfigError, NodeConfig
from phxq.net.rpc import RpcPool
from phxq.security.certs import cert_not_after
from phxq.security.policy import Guard, Rule
from phxq.security.principals import Principals
from phxq.security.tls import Credentials, client_context, reload_context, server_context

TOKEN_ENV = "PHXQ_TOKEN"

log = logging.getLogger("phxq.security")


def principals_of(cluster: ClusterConfig) -> Principals:
    return Principals((p.name, p.token_sha256, p.allow) for p in cluster.principals)


def _pair(cluster: ClusterConfig, node: NodeConfig | None) -> tuple[Path, Path]:
    sec = cluster.security
    assert sec is not None
    cert, key = (node.cert, node.key) if node is not None else (sec.cert, sec.key)
    if cert is None or key is None:
        what = f"node {node.id}" if node is not None else "[security] cert/key"
        raise ConfigError(f"{cluster.source}: {what}: no member certificate configured")
    return cert, key


def _load(what: str, build: Any, *args: Any) -> ssl.SSLContext:
    try:
        ctx: ssl.SSLContext = build(*args)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the {what}: {exc}") from None
    return ctx


class NodeSecurity:
    """The TLS contexts and the guard of one daemon (see the module docstring)."""

    def __init__(
        self, cluster: ClusterConfig, node: NodeConfig | None, rules: Mapping[str, Rule], name: str
    ) -> None:
        sec = cluster.security
        assert sec is not None
        self.name = name
        self._node_id = None if node is None else node.id
        self.cert, self.key = _pair(cluster, node)
        self.ca = sec.ca
        self.server_ssl = _load("server TLS context", server_context, self.ca, self.cert, self.key)
        self.peer_ssl = _load("member TLS context", client_context, self.ca, self.cert, self.key)
        self.peer_credentials = Credentials(self.peer_ssl)
        self.guard = Guard(rules, principals_of(cluster), name=name)
        self.cert_status()

    @classmethod
    def build(
        cls, cluster: ClusterConfig, node: NodeConfig | None, rules: Mapping[str, Rule], name: str
    ) -> NodeSecurity | None:
        if cluster.security is None:
            return None
        return cls(cluster, node, rules, name)

    def reload(self, cluster: ClusterConfig) -> None:
        """Apply a re-read config (see the module docstring); ``ConfigError`` leaves the old
        state in place."""
        if cluster.security is None:
            raise ConfigError(f"{cluster.source}: [security] cannot be removed without a restart")
        node = None
        if self._node_id is not None:
            nodes = cluster.stores if self.name == "store" else cluster.locks
            node = next((n for n in nodes if n.id == self._node_id), None)
            if node is None:
                raise ConfigError(f"{cluster.source}: node {self._node_id} is gone")
        cert, key = _pair(cluster, node)
        principals = principals_of(cluster)
        ca = cluster.security.ca
        try:
            for ctx in (self.server_ssl, self.peer_ssl):
                reload_context(ctx, ca, cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot reload the certificates: {exc}") from None
        self.cert, self.key, self.ca = cert, key, ca
        self.guard.set_principals(principals)
        self.cert_status()

    def cert_status(self) -> dict[str, Any]:
        """This member certificate's file, expiry and days left (``admin status`` shows it)."""
        return _cert_status(self.cert, self.name)

    def describe(self) -> str:
        days = self.cert_status()["expires_in_days"]
        return (
            f"{len(self.guard.principals)} principals, certificate {self.cert} "
            f"(expires in {days} days)"
        )


def reload_on_hup(daemon: Any, config_path: Path) -> None:
    """SIGHUP in a store or lock daemon: re-read ``config_path`` and apply its security
    (:meth:`NodeSecurity.reload`) to ``daemon.security``. A config that does not load or
    apply is logged and changes nothing: the daemon keeps serving with what it had."""
    from phxq.config import load_config

    security = getattr(daemon, "security", None)
    if security is None:
        log.info("SIGHUP: no [security] in force, nothing to reload")
        return
    try:
        security.reload(load_config(config_path))
    except ConfigError as exc:
        log.error("SIGHUP: keeping the current certificates and principals: %s", exc.message)
        return
    log.info("SIGHUP: reloaded %s: %s", config_path, security.describe())


class MemberSecurity:
    """A consumer's (or gateway's) outgoing member certificate, reloadable in place: the
    context given to its clients loads the renewed certificate for their next connections."""

    def __init__(self, cluster: ClusterConfig) -> None:
        sec = cluster.security
        assert sec is not None
        self.cert, self.key = _pair(cluster, None)
        self.ssl = _load("member TLS context", client_context, sec.ca, self.cert, self.key)
        self.cert_status()

    @classmethod
    def build(cls, cluster: ClusterConfig) -> MemberSecurity | None:
        return None if cluster.security is None else cls(cluster)

    def reload(self, cluster: ClusterConfig) -> None:
        if cluster.security is None:
            raise ConfigError(f"{cluster.source}: [security] cannot be removed without a restart")
        cert, key = _pair(cluster, None)
        try:
            reload_context(self.ssl, cluster.security.ca, cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot reload the certificates: {exc}") from None
        self.cert, self.key = cert, key
        self.cert_status()

    def cert_status(self) -> dict[str, Any]:
        return _cert_status(self.cert, "member")

    def describe(self) -> str:
        return f"certificate {self.cert} (expires in {self.cert_status()['expires_in_days']} days)"


def _cert_status(cert: Path, label: str) -> dict[str, Any]:
    not_after = cert_not_after(cert)
    metrics.CERT_EXPIRES.labels(label).set(not_after)
    return {
        "cert": str(cert),
        "not_after": not_after,
        "expires_in_days": round((not_after - time.time()) / 86400, 1),
    }


def member_credentials(cluster: ClusterConfig) -> Credentials:
    """A consumer's or gateway's outgoing credentials: the ``[security]`` member certificate
    (plaintext without ``[security]``)."""
    sec = cluster.security
    if sec is None:
        return Credentials()
    cert, key = _pair(cluster, None)
    ctx = _load("member TLS context", client_context, sec.ca, cert, key)
    metrics.CERT_EXPIRES.labels("member").set(cert_not_after(cert))
    return Credentials(ctx)


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the token file: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"{path}: the token file is empty")
    return token


def tool_credentials(cluster: ClusterConfig | None, token: str | None = None) -> Credentials:
    """What a command-line tool presents: the token from ``token`` (``--token``), else
    ``$PHXQ_TOKEN``, else ``[client] token_file``; TLS checked against ``[client] ca`` or
    ``[security] ca``. A cluster without either is plaintext and gets no token."""
    client = None if cluster is None else cluster.client
    sec = None if cluster is None else cluster.security
    ca = (client.ca if client is not None else None) or (sec.ca if sec is not None else None)
    token = token or (client.token if client is not None else None)
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and client is not None and client.token_file is not None:
        token = read_token_file(client.token_file)
    if ca is None and cluster is not None:
        return Credentials()  # an open cluster: nothing to present, and no token in plaintext
    return Credentials.for_client(token, ca)


def client_options(cluster: ClusterConfig | None, token: str | None = None) -> dict[str, Any]:
    """``phxq.Client``/``LockClient`` keyword arguments for a tool (:func:`tool_credentials`)."""
    creds = tool_credentials(cluster, token)
    return {"token": creds.token, "ca": creds.ssl}


def tool_pool(cluster: ClusterConfig | None) -> RpcPool:
    """An ``RpcPool`` dialing with a tool's credentials (:func:`tool_credentials`)."""
    return RpcPool(transport_factory=tool_credentials(cluster).transport_factory())
