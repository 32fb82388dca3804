"""``phxq admin group create|list|delete``: :mod:`phxq.groupadmin`, parsed and printed."""

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
    auth_options,
    config_option,
    json_option,
)


@admin.group(cls=PhxqGroup)
def group() -> None:
    """Create, list and delete consumer groups online (the cluster map; no restart)."""


def _print(row: dict[str, Any]) -> None:
    extra = ", ".join(
        f"{key} {row[key]}"
        for key in ("rate_limit", "max_attempts", "on_failure", "dead_letter", "ordering")
        if key in row
    )
    click.echo(
        f"{row['name']}: topic {row['topic']} -> {row['handler']} ({extra}) "
        f"(map version {row['map_version']})"
    )


@group.command()
@config_option
@auth_options
@click.argument("name")
@click.option("--topic", required=True, help="the topic it consumes")
@click.option("--handler", required=True, help='"http(s)://host/path" or "package.module:func"')
@click.option("--rate-limit", type=float, default=None, help="messages/s (default: unlimited)")
@click.option("--max-attempts", type=click.IntRange(1), default=None)
@click.option("--on-failure", type=click.Choice(["dead_letter", "block"]), default=None)
@click.option("--dead-letter", default=None, help="dead-letter topic (default: TOPIC.dlq)")
@click.option("--ordering", type=click.Choice(["strict", "per_key"]), default=None)
@click.option("--concurrency", type=click.IntRange(1), default=None)
@click.option("--handler-timeout", default=None, help='per delivery ("30s")')
@json_option
def create(config_path: Path | None, name: str, as_json: bool, **settings: Any) -> None:
    """Create consumer group NAME; running consumer daemons start serving it."""
    from phxq import admin as ops

    cfg = _load(config_path)
    row = _run(ops.group_create(cfg, name, **settings))
    _echo_json(row) if as_json else _print(row)


@group.command(name="list")
@config_option
@auth_options
@json_option
def list_(config_path: Path | None, as_json: bool) -> None:
    """Every consumer group of the cluster map."""
    from phxq import admin as ops

    rows = _run(ops.group_list(_load(config_path)))
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        _print(row)


@group.command()
@config_option
@auth_options
@click.argument("name")
@json_option
def delete(config_path: Path | None, name: str, as_json: bool) -> None:
    """Delete consumer group NAME (one created online); running consumer daemons stop serving
    it and release its queues.

    \b
    Its runtime settings (limit, pause) go with it. Its committed cursors stay in the
    stores: a group created again under NAME resumes at them (phxq admin replay moves them).
    A group of the config file is refused: remove its [[consumer_group]] table first (every
    start re-seeds the config's groups). Its topics stay."""
    from phxq import admin as ops

    row = _run(ops.group_delete(_load(config_path), name))
    if as_json:
        _echo_json(row)
        return
    click.echo(
        f"{row['name']}: deleted (topic {row['topic']}; map version {row['map_version']}; "
        "its cursors are kept)"
    )
