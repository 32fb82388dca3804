"""Making a cluster's certificates and tokens: ``phxq admin certs``, ``phxq admin token`` and
the secure ``phxq dev``.

Public API::

    issue_certs(out_dir, members, *, hosts=(), days=825) -> dict[str, tuple[Path, Path]]
        # the CA (out_dir/ca.pem, ca.key; reused when present) and one (cert, key) per member
        # id in ``members`` ({member id: extra SAN hosts}); every file 0600
    token_line(token) -> str        # 'token_sha256 = "..."' for a [[principal]]
    principal_snippet(name, allow) -> (token, toml)   # `phxq admin token`
    config_members(cfg) -> {member id: hosts}         # one per [[store]]/[[lock]], plus "member"
    config_snippet(cfg, issued) -> str                # the TOML lines that use the new files
    dev_security(data, stores, locks) -> DevSecurity   # what `phxq dev` writes into its config
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from phxq.config import ClusterConfig
from phxq.security.certs import make_ca, make_member_cert, write_private
from phxq.security.principals import new_token, token_sha256

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
DEV_MEMBER = "member"  # the dev consumer's and gateway's certificate
ADMIN = "admin"


def issue_certs(
    out_dir: Path,
    members: Mapping[str, Iterable[str]],
    *,
    hosts: Iterable[str] = (),
    days: int = 825,
) -> dict[str, tuple[Path, Path]]:
    """See the module docstring. A CA already in ``out_dir`` signs the new certificates, so
    adding a node later keeps the cluster's trust."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = out_dir / "ca.pem", out_dir / "ca.key"
    if ca_cert.exists() and ca_key.exists():
        ca_pem, key_pem = ca_cert.read_bytes(), ca_key.read_bytes()
    else:
        ca_pem, key_pem = make_ca()
        write_private(ca_key, key_pem)
        write_private(ca_cert, ca_pem)
    issued: dict[str, tuple[Path, Path]] = {}
    common = tuple(hosts)
    for member, member_hosts in members.items():
        cert_pem, member_key = make_member_cert(
            ca_pem, key_pem, member, [*member_hosts, *common], days=days
        )
        cert, key = out_dir / f"{member}.pem", out_dir / f"{member}.key"
        write_private(key, member_key)
        write_private(cert, cert_pem)
        issued[member] = (cert, key)
    return issued


def token_line(token: str) -> str:
    return f'token_sha256 = "{token_sha256(token)}"'


def principal_snippet(name: str, allow: Iterable[str]) -> tuple[str, str]:
    """A new token and the ``[[principal]]`` table that grants it ``allow``."""
    from phxq.security.principals import parse_grant

    grants = [parse_grant(g).text for g in allow]  # BadArgument on a malformed grant
    token = new_token()
    quoted = ", ".join(f'"{g}"' for g in grants)
    lines = ["[[principal]]", f'name = "{name}"', token_line(token), f"allow = [{quoted}]"]
    return token, "\n".join(lines)


def config_members(cfg: ClusterConfig) -> dict[str, list[str]]:
    """The member certificates a config needs: one per node (naming its host) and one
    ``member`` certificate for consumers and gateways."""
    members = {f"store-{n.id}": [n.host] for n in cfg.stores}
    members |= {f"lock-{n.id}": [n.host] for n in cfg.locks}
    members[DEV_MEMBER] = []
    return members


def config_snippet(cfg: ClusterConfig, issued: Mapping[str, tuple[Path, Path]], ca: Path) -> str:
    """The TOML that points ``cfg`` at the issued files (paste it into the config)."""
    out = ["[security]", f'ca = "{ca}"']
    if DEV_MEMBER in issued:
        cert, key = issued[DEV_MEMBER]
        out += [f'cert = "{cert}"', f'key = "{key}"']
    for kind, nodes in (("store", cfg.stores), ("lock", cfg.locks)):
        for n in nodes:
            if f"{kind}-{n.id}" in issued:
                cert, key = issued[f"{kind}-{n.id}"]
                out += ["", f"# in the [[{kind}]] with id = {n.id}:", f'cert = "{cert}"']
                out.append(f'key = "{key}"')
    return "\n".join(out)


def _host(addr: str) -> str:
    return addr.rpartition(":")[0].strip("[]")


@dataclass(frozen=True)
class DevSecurity:
    """What the secure dev cluster adds to its config (paths relative to the data dir)."""

    node_lines: dict[tuple[str, int], str]  # (kind, id) -> 'cert = ...\\nkey = ...'
    tables: str  # [security], [[principal]] admin, [client]
    token_file: Path


def dev_security(data: Path, stores: Mapping[int, str], locks: Mapping[int, str]) -> DevSecurity:
    """Create ``data/certs`` (CA, a certificate per node and one for the consumer/gateway) and
    an admin token in ``data/certs/admin.token``, all 0600; reuse them when present so that a
    restarted ``phxq dev`` keeps its credentials."""
    certs = data / "certs"
    members: dict[str, list[str]] = {}
    for kind, nodes in (("store", stores), ("lock", locks)):
        for node, addr in nodes.items():
            members[f"{kind}-{node}"] = [_host(addr)]
    members[DEV_MEMBER] = []
    missing = {m: h for m, h in members.items() if not (certs / f"{m}.pem").exists()}
    if missing:
        issue_certs(certs, missing, hosts=DEFAULT_HOSTS)
    token_file = certs / f"{ADMIN}.token"
    if token_file.exists():
        token = token_file.read_text("utf-8").strip()
    else:
        token = new_token()
        write_private(token_file, (token + "\n").encode())
    node_lines = {
        (kind, node): f'cert = "certs/{kind}-{node}.pem"\nkey = "certs/{kind}-{node}.key"'
        for kind, nodes in (("store", stores), ("lock", locks))
        for node in nodes
    }
    tables = "\n".join(
        [
            "[security]",
            'ca = "certs/ca.pem"',
            f'cert = "certs/{DEV_MEMBER}.pem"',
            f'key = "certs/{DEV_MEMBER}.key"',
            "",
            "[[principal]]",
            f'name = "{ADMIN}"',
            token_line(token),
            'allow = ["admin"]',
            "",
            "[client]",
            f'token_file = "certs/{ADMIN}.token"',
            'ca = "certs/ca.pem"',
            "",
        ]
    )
    return DevSecurity(node_lines, tables, token_file)
