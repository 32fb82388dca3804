"""``phxq config check C``: everything a daemon would trip over later, checked now (like
``nats-server -t``).

:func:`check_config` loads the file (every key, type and cross-reference, as every daemon
does), then checks what loading leaves to start-up:

- each ``[[consumer_group]]`` handler: ``package.module:function`` is imported and must be
  callable (as the consumer daemon resolves it, so the same ``sys.path``); an
  ``http(s)://`` URL must parse, with a host and a valid port;
- each file the config names (``[security]`` ca/cert/key, node cert/key, ``[client]``
  token_file/ca, ``signing_secret_file``) must be readable; a certificate and its key must
  load together, a CA must load as one.

Returns a :class:`CheckSummary` (one line with ``str()``) or raises ``ConfigError`` whose
message is ``"<file>: <key path>: <problem>"`` and whose ``data["key"]`` is the key path.
Nothing is written and nothing listens or connects.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from phxq.config.model import ClusterConfig, ConfigError
from phxq.config.parse import load_config

__all__ = ["CheckSummary", "check_config"]


@dataclass(frozen=True, slots=True)
class CheckSummary:
    """What a valid config holds, for the one-line answer."""

    source: str
    stores: int
    locks: int
    groups: int
    topics: int
    queues: int
    consumer_groups: int
    secure: bool
    sets: int = 1

    def __str__(self) -> str:
        def n(count: int, what: str) -> str:
            return f"{count} {what}{'' if count == 1 else 's'}"

        return (
            f"{self.source}: OK: {n(self.stores, 'store')}"
            f"{f' in {self.sets} store sets' if self.sets > 1 else ''}, "
            f"{n(self.locks, 'lock node')}, "
            f"{n(self.groups, 'Paxos group')}, {n(self.topics, 'topic')} "
            f"({n(self.queues, 'queue')}), {n(self.consumer_groups, 'consumer group')}"
            f"{' (handlers resolved)' if self.consumer_groups else ''}, "
            f"{'TLS and tokens' if self.secure else 'no [security]: plaintext, no auth'}"
        )


def _fail(cfg: ClusterConfig, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{cfg.source}: {key}: {problem}", {"key": key})


def check_handler(cfg: ClusterConfig, key: str, spec: str) -> None:
    """``ConfigError`` at ``key`` if ``spec`` is a URL that does not parse or a callable that
    does not import."""
    if spec.startswith(("http://", "https://")):
        try:
            url = urlsplit(spec)
            _ = url.port  # ValueError for a port that is not a number in range
        except ValueError as exc:
            raise _fail(cfg, key, f"{spec!r} is not a valid URL: {exc}") from None
        if not url.hostname:
            raise _fail(cfg, key, f"{spec!r} has no host")
        return
    from phxq.consumer.handlers import resolve_callable

    try:
        resolve_callable(spec)
    except ConfigError as exc:
        raise _fail(cfg, key, exc.message) from None
    except Exception as exc:  # the module raised while importing: the consumer would too
        raise _fail(cfg, key, f"importing {spec!r} raised {type(exc).__name__}: {exc}") from None


def _readable(cfg: ClusterConfig, key: str, path: Path | None) -> None:
    if path is None:
        return
    if not path.is_file():
        raise _fail(cfg, key, f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise _fail(cfg, key, f"{path}: not readable")


def _cert_pair(cfg: ClusterConfig, key: str, cert: Path | None, private: Path | None) -> None:
    _readable(cfg, f"{key}.cert", cert)
    _readable(cfg, f"{key}.key", private)
    if cert is None or private is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, private)
    except (ssl.SSLError, ValueError) as exc:
        raise _fail(cfg, f"{key}.cert", f"{cert} with key {private}: {exc}") from None


def _ca(cfg: ClusterConfig, key: str, path: Path | None) -> None:
    _readable(cfg, key, path)
    if path is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise _fail(cfg, key, f"{path}: not a CA certificate: {exc}") from None


def check_config(path: str | os.PathLike[str]) -> CheckSummary:
    """Load and check ``path`` (see the module docstring)."""
    cfg = load_config(Path(path))
    for i, group in enumerate(cfg.consumer_groups):
        check_handler(cfg, f"consumer_group[{i}].handler", group.handler)
        _readable(cfg, f"consumer_group[{i}].signing_secret_file", group.signing_secret_file)
    if cfg.security is not None:
        _ca(cfg, "security.ca", cfg.security.ca)
        _cert_pair(cfg, "security", cfg.security.cert, cfg.security.key)
    for kind, nodes in (("store", cfg.stores), ("lock", cfg.locks)):
        for i, node in enumerate(nodes):
            _cert_pair(cfg, f"{kind}[{i}]", node.cert, node.key)
    if cfg.client is not None:
        _readable(cfg, "client.token_file", cfg.client.token_file)
        _ca(cfg, "client.ca", cfg.client.ca)
    return CheckSummary(
        source=cfg.source,
        stores=len(cfg.stores),
        locks=len(cfg.locks),
        groups=cfg.cluster.groups,
        topics=len(cfg.topics),
        queues=sum(t.queues for t in cfg.topics),
        consumer_groups=len(cfg.consumer_groups),
        secure=cfg.security is not None,
        sets=len(cfg.sets),
    )
