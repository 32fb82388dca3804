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
    queues = f"{row['queues']} queue{'' if row['queues'] == 1 else 's'}"
    click.echo(
        f"{row['name']}: {queues}, retention {format_duration(row['retention'])}, "
        f"max message {_size(row['max_message_bytes'])}, on {sets} "
        f"(map version {row['map_version']})"
    )
    by_set: dict[int, list[int]] = {}
    for q, number in enumerate(row["placement"]):
        by_set.setdefault(number, []).append(q)
    for number, queues in sorted(by_set.items()):
        click.echo(f"  set {number}: queues {','.join(map(str, queues))}")


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
