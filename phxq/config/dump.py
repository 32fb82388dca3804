"""Writing a cluster config back as TOML (see :mod:`phxq.config`)."""

from __future__ import annotations

from typing import Any

import tomli_w

from phxq.config.model import ClusterConfig, GatewayConfig, format_duration, format_size


def _compact(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if v is not None}


def _opt(value: Any, fmt: Any) -> Any:
    return None if value is None else fmt(value)


def _rate(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def dump_config(cfg: ClusterConfig) -> str:
    """``cfg`` as TOML, every key explicit (unset optional keys are left out); parsing it
    back gives an equal config."""
    c = cfg.cluster
    doc: dict[str, Any] = {
        "cluster": {
            "groups": c.groups,
            "dedup_window": format_duration(c.dedup_window),
            "paxos_window": c.paxos_window,
            "heartbeat_interval": format_duration(c.heartbeat_interval),
            "lease": format_duration(c.lease),
            "segment_bytes": format_size(c.segment_bytes),
            "journal_bytes": format_size(c.journal_bytes),
            "retention_interval": format_duration(c.retention_interval),
        }
    }
    for kind, nodes in (("store", cfg.stores), ("lock", cfg.locks)):
        if nodes:
            doc[kind] = [
                _compact(
                    {
                        "id": n.id,
                        "addr": n.addr,
                        "dc": n.dc,
                        "data": str(n.data),
                        "metrics_addr": n.metrics_addr,
                        "peers": {str(k): v for k, v in n.peers} if n.peers else None,
                        "cert": _opt(n.cert, str),
                        "key": _opt(n.key, str),
                        "set": n.set if kind == "store" and n.set != 1 else None,
                    }
                )
                for n in nodes
            ]
    if cfg.topics:
        doc["topic"] = [
            _compact(
                {
                    "name": t.name,
                    "queues": t.queues,
                    "retention": format_duration(t.retention),
                    "retention_bytes": _opt(t.retention_bytes, format_size),
                    "max_message_bytes": format_size(t.max_message_bytes),
                    "sets": _opt(t.sets, list),
                }
            )
            for t in cfg.topics
        ]
    if cfg.consumer_groups:
        doc["consumer_group"] = [
            _compact(
                {
                    "name": g.name,
                    "topic": g.topic,
                    "handler": g.handler,
                    "rate_limit": _rate(g.rate_limit),
                    "rate_limit_bytes": _opt(g.rate_limit_bytes, format_size),
                    "max_attempts": g.max_attempts,
                    "on_failure": g.on_failure,
                    "dead_letter": g.dead_letter,
                    "ordering": g.ordering,
                    "concurrency": g.concurrency,
                    "handler_timeout": format_duration(g.handler_timeout),
                    "signing_secret_file": _opt(g.signing_secret_file, str),
                }
            )
            for g in cfg.consumer_groups
        ]
    if cfg.security is not None:
        sec = cfg.security
        doc["security"] = _compact(
            {"ca": str(sec.ca), "cert": _opt(sec.cert, str), "key": _opt(sec.key, str)}
        )
    if cfg.principals:
        doc["principal"] = [
            {"name": p.name, "token_sha256": p.token_sha256, "allow": list(p.allow)}
            for p in cfg.principals
        ]
    if cfg.client is not None:
        cl = cfg.client
        doc["client"] = _compact({"token_file": _opt(cl.token_file, str), "ca": _opt(cl.ca, str)})
    gw = cfg.gateway
    if gw != GatewayConfig():
        doc["gateway"] = _compact(
            {
                "listen": gw.listen,
                "max_body_bytes": format_size(gw.max_body_bytes),
                "body_timeout": format_duration(gw.body_timeout),
                "max_wait": format_duration(gw.max_wait),
                "max_in_flight": gw.max_in_flight,
                "cors_origins": list(gw.cors_origins) or None,
            }
        )
    if cfg.consumers:
        doc["consumer"] = [
            _compact({"name": c.name, "metrics_addr": c.metrics_addr}) for c in cfg.consumers
        ]
    return _render(doc)


def _render(doc: dict[str, Any]) -> str:
    """Block-style TOML: ``[cluster]`` then one ``[[kind]]`` header per table, in order."""
    out: list[str] = []
    for section, body in doc.items():
        tables = body if isinstance(body, list) else [body]
        header = f"[[{section}]]" if isinstance(body, list) else f"[{section}]"
        for table in tables:
            out.append(header)
            out.extend(_line(key, value) for key, value in table.items())
            out.append("")
    return "\n".join(out)


def _line(key: str, value: Any) -> str:
    """``key = value``; a table value (``peers``) inline, since a sub-table header here would
    end the ``[[kind]]`` table it belongs to."""
    if isinstance(value, dict):
        pairs = (_line(k, v) for k, v in value.items())
        return f"{tomli_w.dumps({key: 0}).split('=')[0].strip()} = {{ {', '.join(pairs)} }}"
    return tomli_w.dumps({key: value}).strip()
