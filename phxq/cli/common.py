"""What every ``phxq`` command shares: the root group, the options that find a cluster
(``--config``/``PHXQ_CONFIG``, ``-s/--servers``, ``--token``/``--ca``, ``--json``), one-line
errors, and small printing helpers."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from phxq import __version__
from phxq.config import ClusterConfig, load_config
from phxq.errors import PhxqError

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PHXQ_CONFIG",
    show_envvar=True,
    help="cluster TOML file",
)
servers_option = click.option(
    "-s",
    "--servers",
    default=None,
    help="store addresses HOST:PORT,... (instead of --config)",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta[key] = value

    return store


def auth_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--token`` (or PHXQ_TOKEN) and ``--ca``, read by :func:`_load` and
    :func:`_client_options` (never printed: a token is a password)."""
    f = click.option(
        "--ca",
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember("phxq.ca"),
        help="CA file to check the servers with (default: [client] ca or [security] ca)",
    )(f)
    return click.option(
        "--token",
        envvar="PHXQ_TOKEN",
        show_envvar=True,
        expose_value=False,
        callback=_remember("phxq.token"),
        help="bearer token (default: the [client] token_file of --config)",
    )(f)


_AUTH_HINTS = {
    "unauthenticated": " (give --token, PHXQ_TOKEN or a [client] token_file in --config)",
    "forbidden": " (the token's [[principal]] allow list lacks it)",
}


class PhxqGroup(click.Group):
    """Turns every ``phxq.errors`` error (and an unreadable file) into one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PhxqError as exc:
            hint = _AUTH_HINTS.get(exc.code, "")
            raise click.ClickException(f"{type(exc).__name__}: {exc.message}{hint}") from exc
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from exc


def _load(path: Path | None) -> ClusterConfig:
    if path is None:
        raise click.UsageError("give --config FILE (or set PHXQ_CONFIG)")
    cfg = load_config(path)
    meta = click.get_current_context().meta
    token, ca = meta.get("phxq.token"), meta.get("phxq.ca")
    if token is None and ca is None:
        return cfg
    from dataclasses import replace

    from phxq.config import ClientConfig

    client = cfg.client or ClientConfig()
    client = replace(client, token=token or client.token, ca=ca or client.ca)
    return replace(cfg, client=client)


def _client_options(config_path: Path | None) -> dict[str, Any]:
    """``phxq.Client`` credentials: from ``--config`` (see phxq.security.daemon), else
    ``--token``/``--ca`` alone."""
    from phxq.security.daemon import client_options

    if config_path is not None:
        return client_options(_load(config_path))
    meta = click.get_current_context().meta
    token, ca = meta.get("phxq.token"), meta.get("phxq.ca")
    return {"token": token, "ca": ca} if token or ca else {}


def _addresses(config_path: Path | None, servers: str | None) -> list[str]:
    if servers:
        return [s.strip() for s in servers.split(",") if s.strip()]
    if config_path is None:
        raise click.UsageError("give --config FILE, PHXQ_CONFIG or -s/--servers HOST:PORT,...")
    return [s.addr for s in _load(config_path).stores]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from phxq.net.loop import run

    return run(coro)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _size(n: int) -> str:
    from phxq.render import size

    return size(n)


def _show(value: Any) -> str:
    from phxq.render import cell

    return cell(value)


def _setup_logging(prefix: str) -> None:
    from phxq.logs import setup_logging

    setup_logging(prefix, click.get_current_context().meta.get("phxq.log_format", "text"))


def _remember_log_format(ctx: click.Context, _: click.Parameter, value: str) -> str:
    ctx.meta["phxq.log_format"] = value
    return value


log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="PHXQ_LOG_FORMAT",
    show_envvar=True,
    expose_value=False,
    is_eager=True,
    callback=_remember_log_format,
    help="log lines as text or one JSON object per line",
)


async def _serve_until_signal(start: Callable[[], Any], config_path: Path | None = None) -> None:
    """Run the async context manager ``start()`` until SIGINT or SIGTERM. With
    ``config_path``, SIGHUP re-reads it and applies its certificates and principals
    (``phxq.security.daemon.reload_on_hup``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with start() as daemon:
        if config_path is not None:
            from phxq.security.daemon import reload_on_hup

            loop.add_signal_handler(signal.SIGHUP, reload_on_hup, daemon, config_path)
        await stop.wait()


@click.group(cls=PhxqGroup)
@click.version_option(__version__, prog_name="phxq")
def cli() -> None:
    """phxq: a strongly consistent distributed queue on Multi-Paxos."""
