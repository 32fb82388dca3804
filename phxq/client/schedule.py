"""Delayed and scheduled enqueues on the client side: ``delay=`` / ``deliver_at=`` checked and
put in wire form, scheduled ids parsed, and the CLI's ``--delay`` / ``--at`` text read."""

from __future__ import annotations

import time
from typing import Any

from phxq import validate
from phxq.errors import BadArgument

__all__ = ["MAX_SCHEDULE_SECONDS", "_parse_scheduled_id", "_when", "parse_when"]

MAX_SCHEDULE_SECONDS = 366 * 86400.0  # the store's limit (phxq.store.scheduler)


def _when(delay: float | None, deliver_at: float | None) -> list[Any] | None:
    """The wire form of ``delay=`` / ``deliver_at=`` (``BadArgument`` if invalid)."""
    if delay is None and deliver_at is None:
        return None
    if delay is not None and deliver_at is not None:
        raise BadArgument("give delay or deliver_at, not both")
    kind, value = ("delay", delay) if delay is not None else ("at", deliver_at)
    value = validate.number(value, kind, unit="seconds")
    if kind == "delay" and not 0 <= value <= MAX_SCHEDULE_SECONDS:
        raise BadArgument(f"delay must be in [0, {MAX_SCHEDULE_SECONDS:.0f}] seconds, got {value}")
    if kind == "at" and not value <= time.time() + MAX_SCHEDULE_SECONDS:
        raise BadArgument(f"deliver_at must be at most {MAX_SCHEDULE_SECONDS:.0f} s ahead")
    return [kind, value]


def _parse_scheduled_id(scheduled_id: Any) -> tuple[str, int, int]:
    """``topic/queue/id`` (an ``Ack.scheduled_id``) -> its parts; ``BadArgument`` if not one."""
    parts = scheduled_id.rsplit("/", 2) if isinstance(scheduled_id, str) else []
    if len(parts) == 3 and parts[0] and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    raise BadArgument(f"not a scheduled id (topic/queue/number): {scheduled_id!r}")


def parse_when(delay: str | None, deliver_at: str | None) -> dict[str, float]:
    """``delay=``/``deliver_at=`` keyword arguments from text (the CLI's ``--delay``: a
    duration such as "90s", "10m", "40d"; ``--at``: epoch seconds or an ISO 8601 time, local
    unless it has an offset). ``BadArgument`` if malformed or both are given."""
    from datetime import datetime

    from phxq.config.model import parse_duration

    if delay is not None and deliver_at is not None:
        raise BadArgument("give --delay or --at, not both")
    if delay is not None:
        try:
            return {"delay": parse_duration(delay)}
        except ValueError as exc:
            raise BadArgument(f"--delay {delay!r}: {exc}") from None
    if deliver_at is not None:
        try:
            return {"deliver_at": float(deliver_at)}
        except ValueError:
            pass
        try:
            return {"deliver_at": datetime.fromisoformat(deliver_at).timestamp()}
        except ValueError:
            raise BadArgument(f"--at {deliver_at!r}: not epoch seconds or an ISO time") from None
    return {}
