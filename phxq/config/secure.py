"""The security tables of the cluster config: ``[security]``, ``[[principal]]``, ``[client]``
(see :mod:`phxq.config` for the keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phxq.config.model import ClientConfig, ConfigError, NodeConfig, PrincipalConfig, SecurityConfig
from phxq.config.parse import _array, _claim
from phxq.config.table import _DIGEST_RE, _show, _Table
from phxq.errors import BadArgument
from phxq.security.principals import parse_grant


def parse_security(
    source: str,
    doc: dict[str, Any],
    base_dir: Path | None,
    stores: list[NodeConfig],
    locks: list[NodeConfig],
) -> tuple[SecurityConfig | None, tuple[PrincipalConfig, ...], ClientConfig | None]:
    """``[security]``, ``[[principal]]`` and ``[client]`` (see :mod:`phxq.config`)."""
    security = None
    if "security" in doc:
        t = _Table(source, "security", "security", doc["security"])
        security = SecurityConfig(
            ca=t.file("ca", base_dir, required=True),  # type: ignore[arg-type]
            cert=t.file("cert", base_dir),
            key=t.file("key", base_dir),
        )
        if (security.cert is None) != (security.key is None):
            t.fail("cert and key go together", "key" if security.key is None else "cert")
        t.done()
        for kind, nodes in (("store", stores), ("lock", locks)):
            for i, node in enumerate(nodes):
                if node.cert is None:
                    raise ConfigError(
                        f"{source}: {kind}[{i}].cert: required with [security] (this member's "
                        "certificate; `phxq admin certs` makes them)",
                        {"key": f"{kind}[{i}].cert"},
                    )
    principals: list[PrincipalConfig] = []
    names: dict[object, str] = {}
    digests: dict[object, str] = {}
    for i, raw in enumerate(_array(source, doc, "principal")):
        t = _Table(source, f"principal[{i}]", "principal", raw)
        name = t.text("name", required=True)
        digest = t.text("token_sha256", _DIGEST_RE, required=True)
        allow = t.get("allow", required=True)
        if not isinstance(allow, list):
            t.fail(f"expected an array of grants, got {_show(allow)}", "allow")
        for grant in allow:
            try:
                parse_grant(grant)
            except BadArgument as exc:
                t.fail(exc.message, "allow")
        t.done()
        if security is None:
            t.fail("needs a [security] table (without it nothing checks tokens)")
        _claim(source, names, name, f"principal[{i}].name")
        _claim(source, digests, digest, f"principal[{i}].token_sha256")
        principals.append(PrincipalConfig(name, digest, tuple(allow)))
    client = None
    if "client" in doc:
        t = _Table(source, "client", "client", doc["client"])
        client = ClientConfig(token_file=t.file("token_file", base_dir), ca=t.file("ca", base_dir))
        t.done()
    return security, tuple(principals), client
