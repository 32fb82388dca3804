"""Consumer groups in the cluster map: their wire form (DESIGN.md §5.1, §7)::

    group_to_wire(spec) -> dict        # the [[consumer_group]] table's keys (None: left out)
    group_from_wire(data) -> ConsumerGroupConfig   # ProtocolError if it is not one
    group_from_table(raw, source) -> ConsumerGroupConfig   # ConfigError: as the TOML would

A group is stored as the table a ``[[consumer_group]]`` would be (durations in seconds, sizes
in bytes), and read back through the config's own checks, so a group in the map obeys exactly
the rules of one in the TOML. Topics and dead-letter topics are checked against the map by its
callers (:meth:`phxq.topology.Topology.with_group`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from phxq.config import ConfigError, ConsumerGroupConfig
from phxq.config.parse import consumer_group_table
from phxq.errors import ProtocolError

__all__ = ["group_from_table", "group_from_wire", "group_to_wire"]


def group_to_wire(spec: ConsumerGroupConfig) -> dict[str, Any]:
    """``spec`` as a ``[[consumer_group]]`` table (JSON/msgpack-able)."""
    out: dict[str, Any] = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        if value is None:
            continue
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def group_from_table(raw: Any, source: str = "cluster map") -> ConsumerGroupConfig:
    """A group from a ``[[consumer_group]]``-like table (``ConfigError`` naming the key)."""
    return consumer_group_table(raw, source)


def group_from_wire(data: Any) -> ConsumerGroupConfig:
    """What :func:`group_to_wire` made (``ProtocolError`` if ``data`` is not one)."""
    try:
        return group_from_table(data)
    except ConfigError as exc:
        raise ProtocolError(f"malformed consumer group in the cluster map: {exc}") from None
