"""``phxq config check`` and ``phxq bench``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from phxq.cli.common import (
    PhxqGroup,
    _addresses,
    _client_options,
    _load,
    _run,
    auth_options,
    cli,
    config_option,
    json_option,
    servers_option,
)


@cli.group(cls=PhxqGroup, name="config")
def config_group() -> None:
    """Work with a cluster config file."""


@config_group.command("check")
@click.argument(
    "path",
    required=False,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PHXQ_CONFIG",
)
def config_check(path: Path | None) -> None:
    """Check config PATH (or PHXQ_CONFIG) as every daemon would, and more: handlers import,
    handler URLs parse, certificates and keys load. Exit 1 naming the key, or one line: OK."""
    from phxq.config.check import check_config

    if path is None:
        raise click.UsageError("give the config file (or set PHXQ_CONFIG)")
    click.echo(str(check_config(path)))


@cli.command()
@config_option
@auth_options
@servers_option
@click.argument("mode", type=click.Choice(["latency", "throughput"]), default="latency")
@click.option("--topic", default="orders", show_default=True)
@click.option(
    "--count", type=click.IntRange(min=1), default=5000, show_default=True, help="latency: enqueues"
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="throughput: duration",
)
@click.option(
    "--outstanding",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="throughput: concurrency",
)
@click.option(
    "--size", type=click.IntRange(min=0), default=100, show_default=True, help="payload bytes"
)
@click.option("--no-batching", is_flag=True, help="throughput: one request per message")
@json_option
def bench(
    config_path: Path | None,
    servers: str | None,
    mode: str,
    topic: str,
    count: int,
    seconds: float,
    outstanding: int,
    size: int,
    no_batching: bool,
    as_json: bool,
) -> None:
    """Measure enqueue latency (sequential) or throughput (concurrent) against a cluster."""
    from phxq import benchmark

    if not servers:
        _load(config_path).topic(topic)  # UnknownTopic before any load is sent
    addrs = _addresses(config_path, servers)
    creds = _client_options(config_path)
    meter = benchmark.CpuMeter()  # this process only: the stores may be on other hosts
    if mode == "latency":
        result = _run(
            benchmark.latency(
                addrs, topic=topic, count=count, size=size, cpu=meter, credentials=creds
            )
        )
    else:
        result = _run(
            benchmark.throughput(
                addrs,
                topic=topic,
                outstanding=outstanding,
                seconds=seconds,
                size=size,
                batching=not no_batching,
                cpu=meter,
                credentials=creds,
            )
        )
    if as_json:
        click.echo(json.dumps({**result.to_json(), "environment": benchmark.environment()}))
    else:
        click.echo(result.line())
