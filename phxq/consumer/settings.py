"""What the consumer tier keeps in the lock service's KV, and how it reads it. Pure.

Keys (values are msgpack maps/scalars)::

    consumers/<name>                 {"weight": float, "groups": [str], "owner": str,
                                      "pairs": int, "since": float}
                                     membership heartbeat, put with a ttl (see ConsumerDaemon);
                                     "groups": the consumer groups it serves (its config's)
    settings/<group>/rate_limit      {"messages": float | None, "bytes": int | None}
                                     runtime rate limit; absent: the config's values
    settings/<group>/paused          bool; absent: False
    settings/<group>/unblock         int, bumped by ``phxq admin resume``: a pair stopped by
                                     ``on_failure = "block"`` retries its message when it changes

A malformed value (written by hand, or by a newer version) is ignored with a warning and the
config's value is used: a bad setting must not stop delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phxq import validate
from phxq.config import ConsumerGroupConfig
from phxq.errors import BadArgument

log = logging.getLogger("phxq.consumer")

MEMBERS_PREFIX = "consumers/"
SETTINGS_PREFIX = "settings/"


def member_key(name: str) -> str:
    return MEMBERS_PREFIX + name


def rate_key(group: str) -> str:
    return f"{SETTINGS_PREFIX}{group}/rate_limit"


def paused_key(group: str) -> str:
    return f"{SETTINGS_PREFIX}{group}/paused"


def unblock_key(group: str) -> str:
    return f"{SETTINGS_PREFIX}{group}/unblock"


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """The settings in force for one consumer group."""

    rate_limit: float | None
    rate_limit_bytes: int | None
    paused: bool = False
    unblock: int = 0


def _rate(value: Any) -> float | None:
    if value is None:
        return None
    return validate.number(value, "rate", above=0)


def group_settings(
    group: ConsumerGroupConfig, entries: Mapping[str, tuple[Any, int]]
) -> GroupSettings:
    """The settings of ``group`` from ``entries`` (a ``kv_list("settings/")`` answer)."""
    rate, rate_bytes = group.rate_limit, group.rate_limit_bytes
    raw = entries.get(rate_key(group.name), (None, 0))[0]
    if raw is not None:
        try:
            if not isinstance(raw, dict):
                raise ValueError(f"not a map: {raw!r}")
            rate = _rate(raw.get("messages"))
            by_bytes = _rate(raw.get("bytes"))
            rate_bytes = None if by_bytes is None else max(1, int(by_bytes))
        except (ValueError, BadArgument) as exc:
            log.warning("ignoring %s: %s", rate_key(group.name), exc)
            rate, rate_bytes = group.rate_limit, group.rate_limit_bytes
    paused = entries.get(paused_key(group.name), (False, 0))[0]
    if not isinstance(paused, bool):
        log.warning("ignoring %s: not a bool: %r", paused_key(group.name), paused)
        paused = False
    unblock = entries.get(unblock_key(group.name), (0, 0))[0]
    if isinstance(unblock, bool) or not isinstance(unblock, int):
        log.warning("ignoring %s: not an int: %r", unblock_key(group.name), unblock)
        unblock = 0
    return GroupSettings(rate, rate_bytes, paused, unblock)


def members(entries: Mapping[str, tuple[Any, int]]) -> dict[str, float]:
    """Live members and their weights from a ``kv_list("consumers/")`` answer."""
    out: dict[str, float] = {}
    for key, (value, _version) in entries.items():
        if not key.startswith(MEMBERS_PREFIX):
            continue
        name = key[len(MEMBERS_PREFIX) :]
        weight = value.get("weight") if isinstance(value, dict) else None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            log.warning("member %s reports no numeric weight (%r); counting weight 1", name, value)
            weight = 1.0
        out[name] = float(weight)
    return out


def member_groups(entries: Mapping[str, tuple[Any, int]]) -> dict[str, frozenset[str] | None]:
    """The consumer groups each member serves (``None``: it did not say, so any group)."""
    out: dict[str, frozenset[str] | None] = {}
    for key, (value, _version) in entries.items():
        if not key.startswith(MEMBERS_PREFIX):
            continue
        groups = value.get("groups") if isinstance(value, dict) else None
        valid = isinstance(groups, list) and all(isinstance(g, str) for g in groups)
        out[key[len(MEMBERS_PREFIX) :]] = frozenset(groups) if valid else None  # type: ignore[arg-type]
    return out
