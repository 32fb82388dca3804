"""``phxq admin topic create|alter|list|describe``: :mod:`phxq.topics`, parsed and printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from phxq.cli.admin import admin
from phxq.cli.common import (
    PhxqGroup,
    _echo_json,
    _load,
    _run,
    _size,
    auth_options,
    config_option,
    json_option,
)


@admin.group(cls=PhxqGroup)
def topic() -> None:
    """Create, alter, list and describe topics online (the cluster map; no restart)."""


def _sets(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sets = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected store set numbers such as 1,2") from None
    if not sets or min(sets) < 1:
        raise click.BadParameter(f"{text!r}: expected store set numbers such as 1,2")
    return sets


def _duration(text: str | None) -> float | None:
    from phxq.config import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None


def _bytes(text: str | None) -> int | None:
    from phxq.config import parse_size

    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None


def _print(row: dict[str, Any]) -> None:
    from phxq.config import format_duration

    sets = "every set" if row["sets"] is None else "sets " + ",".join(map(str, row["sets"]))
    count = f"{row['queues']} queue{'' if row['queues'] == 1 else 's'}"
    click.echo(
        f"{row['name']}: {count}, retention {format_duration(row['retention'])}, "
        f"max message {_size(row['max_message_bytes'])}, on {sets} "
        f"(map version {row['map_version']})"
    )
    by_set: dict[int, list[int]] = {}
    for q, number in enumerate(row["placement"]):
        by_set.setdefault(number, []).append(q)
    for number, queues in sorted(by_set.items()):
        click.echo(f"  set {number}: queues {','.join(map(str, queues))}")
    for q, segments in row.get("segments", {}).items():
        parts = [f"set {n} up to offset {last}" for n, last in segments[:-1]]
        click.echo(f"  queue {q} moved: {', then '.join(parts)}, then set {segments[-1][0]}")
    for m in row.get("moves", []):
        click.echo(
            f"  queue {m['queue']} moving: set {m['from']} -> set {m['to']} (move {m['id']})"
        )


_SETTINGS = [
    click.option("--retention", default=None, help='how long messages are kept ("7d", "12h")'),
    click.option("--max-message-bytes", default=None, help='largest message ("1MiB")'),
    click.option("--sets", "sets_text", default=None, help="store sets its queues may use (1,2)"),
]


def _settings(f: Any) -> Any:
    for option in reversed(_SETTINGS):
        f = option(f)
    return f


@topic.command()
@config_option
@auth_options
@click.argument("name")
@click.option("--queues", type=click.IntRange(1, 65536), required=True)
@_settings
@json_option
def create(
    config_path: Path | None,
    name: str,
    queues: int,
    retention: str | None,
    max_message_bytes: str | None,
    sets_text: str | None,
    as_json: bool,
) -> None:
    """Create topic NAME; its queues go to the least-loaded store sets."""
    from phxq import admin as ops

    row = _run(
        ops.topic_create(
            _load(config_path),
            name,
            queues=queues,
            retention=_duration(retention),
            max_message_bytes=_bytes(max_message_bytes),
            sets=_sets(sets_text),
        )
    )
    _echo_json(row) if as_json else _print(row)


@topic.command()
@config_option
@auth_options
@click.argument("name")
@click.option("--queues", type=click.IntRange(1, 65536), default=None, help="more queues")
@_settings
@json_option
def alter(
    config_path: Path | None,
    name: str,
    queues: int | None,
    retention: str | None,
    max_message_bytes: str | None,
    sets_text: str | None,
    as_json: bool,
) -> None:
    """Change topic NAME: more queues (keys move to new queues: docs/faq.md), retention..."""
    from phxq import admin as ops
    from phxq.topics import KEEP

    row = _run(
        ops.topic_alter(
            _load(config_path),
            name,
            queues=queues,
            retention=_duration(retention),
            max_message_bytes=_bytes(max_message_bytes),
            sets=KEEP if sets_text is None else _sets(sets_text),
        )
    )
    _echo_json(row) if as_json else _print(row)


@topic.command(name="list")
@config_option
@auth_options
@json_option
def list_(config_path: Path | None, as_json: bool) -> None:
    """Every topic of the cluster map."""
    from phxq import admin as ops

    rows = _run(ops.topic_list(_load(config_path)))
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        _print(row)


@topic.command()
@config_option
@auth_options
@click.argument("name")
@json_option
def describe(config_path: Path | None, name: str, as_json: bool) -> None:
    """Topic NAME: settings and the store set of each queue."""
    from phxq import admin as ops

    row = _run(ops.topic_describe(_load(config_path), name))
    _echo_json(row) if as_json else _print(row)


@admin.group(cls=PhxqGroup)
def queue() -> None:
    """Move a queue to another store set, online (ordered, nothing lost)."""


@queue.command()
@config_option
@auth_options
@click.option("--topic", required=True)
@click.option("--queue", "queue_", type=click.IntRange(0), required=True)
@click.option("--to-set", type=click.IntRange(1), default=None, help="the store set to move to")
@click.option("--cancel", is_flag=True, help="withdraw the move in progress (before its seal)")
@click.option("--no-wait", is_flag=True, help="record the move and return at once")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds to wait")
@json_option
def move(
    config_path: Path | None,
    topic: str,
    queue_: int,
    to_set: int | None,
    cancel: bool,
    no_wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Move queue --queue of --topic to store set --to-set: the old set seals it at an offset,
    the new one continues above it with the cursors and dedup ids (docs/operations.md)."""
    from phxq import admin as ops

    cfg = _load(config_path)
    if cancel:
        row = _run(ops.queue_move_cancel(cfg, topic, queue_))
    else:
        if to_set is None:
            raise click.UsageError("give --to-set (or --cancel)")
        row = _run(ops.queue_move(cfg, topic, queue_, to_set, wait=not no_wait, timeout=timeout))
    if as_json:
        _echo_json(row)
        return
    where = f"{row['topic']}/{row['queue']}"
    if row["state"] == "done":
        click.echo(
            f"{where}: moved from set {row['from']} to set {row['to']} (sealed at offset "
            f"{row['sealed']}, map version {row['map_version']})"
        )
    else:
        click.echo(f"{where}: move {row['move']} to set {row['to']} is {row['state']}")
