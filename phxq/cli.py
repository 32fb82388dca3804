"""The ``phxq`` command line: a thin click skin over the library (STYLE.md §12).

Every command parses its arguments, builds a client or a daemon, calls one function
(:mod:`phxq.admin`, :class:`phxq.Client`, :mod:`phxq.devcluster`) and prints the result: human
text by default, ``--json`` for scripts. Any ``phxq.errors`` error prints one line and exits 1.

Where to find the cluster: ``--config FILE`` (or ``PHXQ_CONFIG``), or for the commands that only
talk to stores, ``-s/--servers HOST:PORT,...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from phxq import __version__
from phxq.client import Ack
from phxq.client.stream import TailStart
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


# ------------------------------------------------------------------------------- daemons


@cli.command()
@log_format_option
@config_option
@click.option("--node", "node_id", type=int, required=True, help="this store's id in the config")
def store(config_path: Path | None, node_id: int) -> None:
    """Run one store daemon."""
    from phxq.store.node import StoreNode

    cfg = _load(config_path)
    _setup_logging(f"store{node_id}")
    _run(_serve_until_signal(lambda: StoreNode(cfg, node_id), config_path))


@cli.command()
@config_option
@click.option("--id", "name", required=True, help="this consumer's name (unique per cluster)")
@click.option(
    "--weight", type=float, default=1.0, show_default=True, help="share of pairs vs. others"
)
@click.option(
    "--metrics-addr",
    default=None,
    help="host:port to serve Prometheus /metrics on (default: its [[consumer]] metrics_addr)",
)
@log_format_option
def consumer(config_path: Path | None, name: str, weight: float, metrics_addr: str | None) -> None:
    """Run one consumer daemon (delivers every [[consumer_group]] of the config)."""
    from phxq.consumer.daemon import ConsumerDaemon

    cfg = _load(config_path)
    metrics_addr = metrics_addr or cfg.consumer(name).metrics_addr
    _setup_logging(f"consumer-{name}")
    _run(
        _serve_until_signal(
            lambda: ConsumerDaemon(cfg, name, weight=weight, metrics_addr=metrics_addr),
            config_path,
        )
    )


@cli.command()
@log_format_option
@config_option
@click.option(
    "--node", "node_id", type=int, required=True, help="this lock node's id in the config"
)
def lock(config_path: Path | None, node_id: int) -> None:
    """Run one lock daemon (lease locks and the versioned KV)."""
    from phxq.lock.node import LockNode

    cfg = _load(config_path)
    _setup_logging(f"lock{node_id}")
    _run(_serve_until_signal(lambda: LockNode(cfg, node_id), config_path))


@cli.command()
@log_format_option
@config_option
@click.option(
    "--listen", default=None, help="host:port (default: [gateway] listen, or 127.0.0.1:7301)"
)
def gateway(config_path: Path, listen: str | None) -> None:
    """Run the HTTP gateway: the /v1 API over HTTP/JSON (docs/http-api.md)."""
    from phxq.gateway import Gateway

    cfg = _load(config_path)
    _setup_logging("gateway")
    _run(_serve_until_signal(lambda: Gateway(cfg, listen)))


def _curl_auth(config: ClusterConfig) -> str:
    """The curl options that reach a secure gateway (its CA and the [client] token)."""
    sec, client = config.security, config.client
    if sec is None:
        return ""
    token = client.token_file if client is not None else None
    auth = f'-H "Authorization: Bearer $(cat {token})" ' if token else ""
    return f"--cacert {sec.ca} {auth}"


@cli.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./phxq-data"),
    show_default=True,
    help="data directory (cluster.toml is written here)",
)
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=None,
    help="first store port (default 7101); lock nodes listen 100 above, the gateway 200",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="no TLS, no tokens (a new data dir only; default: a CA, certs and an admin token)",
)
@log_format_option
def dev(data: Path, nodes: int, base_port: int | None, insecure: bool) -> None:
    """Start a local cluster on 127.0.0.1 (Ctrl-C stops it; the next run resumes its data)."""
    from phxq.devcluster import DEV_CONSUMER, DevStarted, metrics_addresses, run_dev

    def ready(started: DevStarted) -> None:
        cluster, config_path = started.cluster, started.config_path
        if started.resumed:
            click.echo(f"resumed the cluster in {data} ({config_path})")
        stores = ",".join(cluster.store_addresses)
        click.echo(f"phxq dev: {len(cluster.store_addresses)} stores ready: {stores}")
        locks = ",".join(cluster.lock_addresses)
        click.echo(f"          {len(cluster.lock_addresses)} lock nodes ready: {locks}")
        click.echo(f"          consumer {DEV_CONSUMER!r} delivers group 'log' to its log")
        if cluster.gateway_url:
            click.echo(f"          HTTP gateway: {cluster.gateway_url}/v1 (docs/http-api.md)")
        for what, addr in metrics_addresses(cluster.config, DEV_CONSUMER):
            click.echo(f"          metrics of {what}: http://{addr}/metrics")
        click.echo(f"config: {config_path}   logs: {cluster.log_dir}")
        click.echo(f'try:  phxq enqueue --config {config_path} orders --key user-42 "hello"')
        click.echo(f"      phxq tail --config {config_path} orders --from start")
        if cluster.gateway_url:
            click.echo(
                f"      curl {_curl_auth(cluster.config)}-d hello {cluster.gateway_url}/v1/topics/orders/messages"
            )
        click.echo("Ctrl-C to stop.")

    log_format = click.get_current_context().meta.get("phxq.log_format", "text")
    run_dev(
        data,
        nodes=nodes,
        base_port=base_port,
        on_ready=ready,
        secure=not insecure,
        log_format=log_format,
    )
    click.echo("stopped.")


# ------------------------------------------------------------------------------- clients


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for h in values:
        name, sep, value = h.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{h!r} is not NAME=VALUE", param_hint="--header")
        out[name] = value
    return out


@cli.command()
@config_option
@auth_options
@servers_option
@click.argument("topic")
@click.argument("payload", required=False)
@click.option("--key", default=None, help="message key (same key, same queue)")
@click.option("--queue", type=click.IntRange(min=0), default=None, help="this queue, not by key")
@click.option("--dedup-id", default=None, help="idempotency id; a retry with it is stored once")
@click.option("--header", "headers", multiple=True, help="NAME=VALUE, repeatable")
@click.option("--lines", is_flag=True, help="one message per line of stdin")
@click.option("--delay", default=None, help="deliver after this long (10s, 10m, 2h, 40d)")
@click.option("--at", "deliver_at", default=None, help="deliver at: epoch seconds or ISO time")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="seconds to keep retrying",
)
@json_option
def enqueue(
    config_path: Path | None,
    servers: str | None,
    topic: str,
    payload: str | None,
    key: str | None,
    queue: int | None,
    dedup_id: str | None,
    headers: tuple[str, ...],
    lines: bool,
    delay: str | None,
    deliver_at: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Enqueue PAYLOAD (or stdin when PAYLOAD is - or absent; with --lines, one per line).

    With --delay or --at the message stays invisible until then; it prints the scheduled id
    that `phxq cancel-scheduled` takes."""
    from phxq.client import Client
    from phxq.client.client import parse_when

    when = parse_when(delay, deliver_at)

    addrs = _addresses(config_path, servers)
    creds = _client_options(config_path)
    hdrs = _headers(headers)
    if lines and payload not in (None, "-"):
        raise click.UsageError("--lines reads stdin: give no PAYLOAD")
    if lines and dedup_id is not None:
        raise click.UsageError("--dedup-id names one message: not with --lines")

    async def go() -> None:
        async with Client(addrs, retry_timeout=timeout, **creds) as client:
            if lines:  # streamed: each batch leaves as soon as stdin has given it
                async for batch in _stdin_lines():
                    acks = await client.enqueue_many(
                        topic, [(p, key) for p in batch], queue=queue, headers=hdrs, **when
                    )
                    _print_acks(topic, acks, as_json)
                return
            data = sys.stdin.buffer.read() if payload in (None, "-") else payload.encode()
            ack = await client.enqueue(
                topic, data, key=key, queue=queue, dedup_id=dedup_id, headers=hdrs, **when
            )
            _print_acks(topic, [ack], as_json)

    _run(go())


LINES_BATCH = 1000  # most stdin lines per enqueue_many call


async def _stdin_lines() -> AsyncIterator[list[bytes]]:
    """Batches of stdin's lines (without their line breaks) as they arrive: a thread reads
    stdin (a pipe, a file or a terminal alike), the loop takes whatever has arrived, up to
    ``LINES_BATCH`` lines at once."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[bytes | None] = asyncio.Queue()

    def hand(line: bytes | None) -> None:
        # The loop is closed if the command failed while this thread still read stdin: there
        # is nobody left to hand lines to, and the process is exiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(arrived.put_nowait, line)

    def read() -> None:
        try:
            for line in sys.stdin.buffer:
                hand(line.rstrip(b"\r\n"))
        finally:
            hand(None)  # end of input, or a read error: the command ends either way

    # A daemon thread, not the loop's executor: a command that fails must not wait at exit
    # for a terminal's stdin to end.
    threading.Thread(target=read, name="stdin lines", daemon=True).start()
    done = False
    while not done:
        batch: list[bytes] = []
        line = await arrived.get()
        while line is not None:
            batch.append(line)
            if len(batch) >= LINES_BATCH or arrived.empty():
                break
            line = arrived.get_nowait()
        done = line is None
        if batch:
            yield batch


def _print_acks(topic: str, acks: list[Ack], as_json: bool) -> None:
    for ack in acks:
        if as_json:
            row = {"topic": ack.topic, "queue": ack.queue, "offset": ack.offset}
            if ack.scheduled_id is not None:
                row["scheduled_id"] = ack.scheduled_id
            click.echo(json.dumps({**row, "duplicate": ack.duplicate}))
        else:
            dup = " (duplicate)" if ack.duplicate else ""
            if ack.scheduled_id is not None:
                click.echo(f"scheduled {topic} queue={ack.queue} id={ack.scheduled_id}{dup}")
            else:
                click.echo(f"enqueued {topic} queue={ack.queue} offset={ack.offset}{dup}")


@cli.command("cancel-scheduled")
@config_option
@auth_options
@servers_option
@click.argument("scheduled_id")
@json_option
def cancel_scheduled(
    config_path: Path | None, servers: str | None, scheduled_id: str, as_json: bool
) -> None:
    """Cancel a delayed or scheduled message by the id `phxq enqueue --delay/--at` printed.
    Exits 1 if it was not pending (already released, or cancelled before)."""
    from phxq.client import Client

    addrs = _addresses(config_path, servers)
    creds = _client_options(config_path)  # a secure cluster (phxq dev) needs them

    async def go() -> bool:
        async with Client(addrs, **creds) as client:
            return await client.cancel_scheduled(scheduled_id)

    done = _run(go())
    if as_json:
        click.echo(json.dumps({"scheduled_id": scheduled_id, "cancelled": done}))
    else:
        click.echo(
            f"{'cancelled' if done else 'not pending (released or cancelled)'}: {scheduled_id}"
        )
    if not done:
        sys.exit(1)


def _tail_from(value: str | None, group: str | None) -> TailStart:
    from datetime import datetime

    from phxq.admin import parse_since

    if value is None:
        return "cursor" if group else "now"
    named: dict[str, TailStart] = {"now": "now", "start": "start", "cursor": "cursor"}
    if value in named:
        return named[value]
    with contextlib.suppress(ValueError):
        return int(value)  # an offset; a time is ISO 8601 or a duration ago
    try:
        return datetime.fromtimestamp(parse_since(value))
    except PhxqError:
        raise click.BadParameter(
            f"{value!r}: use now, start, cursor, an OFFSET, an ISO time or a duration ago (5m)",
            param_hint="--from",
        ) from None


@cli.command()
@config_option
@auth_options
@servers_option
@click.argument("topic")
@click.option("--group", default=None, help="consumer group whose cursor --from cursor reads")
@click.option(
    "--from",
    "from_",
    default=None,
    help="now | start | cursor | OFFSET | TIME (ISO 8601, or 10m for ten minutes ago); "
    "default: cursor with --group, else now",
)
@click.option("--queue", "queues", type=int, multiple=True, help="only these queues")
@click.option("--count", type=click.IntRange(min=1), default=None, help="exit after N messages")
@click.option(
    "--format",
    "fmt",
    default=None,
    help="a line per message, e.g. '{queue}:{offset} {key} {headers} {payload}' "
    "(default: the payload as it is)",
)
@json_option
def tail(
    config_path: Path | None,
    servers: str | None,
    topic: str,
    group: str | None,
    from_: str | None,
    queues: tuple[int, ...],
    count: int | None,
    fmt: str | None,
    as_json: bool,
) -> None:
    """Print messages as they arrive (read-only: commits nothing). Ctrl-C exits 0.

    By default each message's payload is written as it is, then a line break. --format fields:
    {topic} {queue} {offset} {key} {headers} {payload} {size} {enqueued_at} (ISO, UTC)
    {enqueued_at_epoch}; \\n and \\t are escapes. --json prints one object per line, the
    payload as base64 (binary-safe) and as text when it is UTF-8."""
    from phxq import render
    from phxq.client import Client

    addrs = _addresses(config_path, servers)
    creds = _client_options(config_path)
    start = _tail_from(from_, group)
    if fmt is not None:
        try:
            render.check_template(fmt)
        except PhxqError as exc:
            raise click.BadParameter(exc.message, param_hint="--format") from None
    out = sys.stdout.buffer

    async def go() -> None:
        seen = 0
        async with Client(addrs, **creds) as client:
            stream = client.tail(topic, from_=start, group=group, queues=list(queues) or None)
            async with stream:
                async for message in stream:
                    if as_json:
                        out.write(render.message_json(message).encode() + b"\n")
                    else:
                        out.write(render.message_bytes(message, fmt))
                    out.flush()  # a line as it arrives, also into a pipe
                    seen += 1
                    if count is not None and seen >= count:
                        return

    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):  # Ctrl-C or `| head` end it
        _run(go())


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


# --------------------------------------------------------------------------------- admin


@cli.group(cls=PhxqGroup)
def admin() -> None:
    """Operate a cluster: status, lag, replay, limits, pause, reconcile."""


@admin.command()
@config_option
@auth_options
@json_option
def status(config_path: Path | None, as_json: bool) -> None:
    """Stores, groups and masters, chosen instance per replica, disk, consumers and lag."""
    from phxq import admin as ops
    from phxq.consumer.admin import format_ownership

    result = _run(ops.status(_load(config_path)))
    if as_json:
        _echo_json(result.to_json())
        return
    for node, st in result.stores.items():
        if "error" in st:
            click.echo(f"store {node}: DOWN ({st['error']})")
            continue
        groups = st["groups"]
        masters = sum(1 for g in groups if g["is_master"])
        disk = sum(g["disk_bytes"] for g in groups)
        bad = [g["group"] for g in groups if g["failed"] or g["diverged"] or g["needs_repair"]]
        line = f"store {node} {st['address']}: master of {masters} groups, disk {_size(disk)}"
        if bad:
            line += f", UNHEALTHY groups {', '.join(map(str, bad))}"
        if st.get("membership", "member") != "member":
            line += f", {st['membership'].upper()}"
        if st.get("cert"):
            line += f", cert expires in {st['cert']['expires_in_days']} days"
        click.echo(line)
    click.echo("group  master  chosen per store")
    for g, master, chosen in result.masters():
        row = " ".join(f"{node}:{_show(c)}" for node, c in chosen.items())
        click.echo(f"{g:5d}  {_show(master):>6}  {row}")
    scheduled = _scheduled_rows(result.stores)
    if scheduled:
        click.echo("group  scheduled pending  next due  release lag")
        for g, pending, due, lag in scheduled:
            click.echo(f"{g:5d}  {pending:17d}  {_when_text(due)}  {lag:.1f}s")
    if result.lags:
        click.echo("consumer group  topic  queue  cursor  lag (messages)")
        for r in sorted(result.lags, key=lambda r: (r["group"], r["topic"], r["queue"])):
            click.echo(
                f"{r['group']}  {r['topic']}  {r['queue']}  {_show(r['cursor'])}  {r['lag']}"
            )
    if result.consumers is not None:
        for line in format_ownership(result.consumers):
            click.echo(line)


def _scheduled_rows(stores: dict[Any, Any]) -> list[tuple[int, int, float | None, float]]:
    """(group, pending, next due, release lag) of the groups with scheduled messages, as
    their masters see them."""
    rows = []
    for st in stores.values():
        for g in st.get("groups", []):
            sched = g.get("scheduled")
            if g.get("is_master") and sched and sched["pending"]:
                rows.append((g["group"], sched["pending"], sched["next_due"], sched["release_lag"]))
    return sorted(rows)


def _when_text(t: float | None) -> str:
    if t is None:
        return "-"
    import datetime

    return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def _group_option(required: bool = True) -> Callable[[Any], Any]:
    return click.option("--group", required=required, help="consumer group name")


@admin.command()
@config_option
@auth_options
@_group_option(required=False)
@json_option
def lag(config_path: Path | None, group: str | None, as_json: bool) -> None:
    """Cursor and lag (messages not yet consumed) of every consumer group and queue."""
    from phxq import admin as ops

    rows = _run(ops.lag(_load(config_path), group=group))
    if as_json:
        _echo_json([r.to_json() for r in rows])
        return
    click.echo("consumer group  topic  queue  cursor  end  lag")
    for r in rows:
        cells = (r.group, r.topic, r.queue, _show(r.cursor), _show(r.end), _show(r.lag))
        click.echo("  ".join(map(str, cells)))


@admin.command()
@config_option
@auth_options
@_group_option()
@click.option("--since", default=None, help="epoch seconds, a duration ago (5m), or ISO time")
@click.option("--offset", type=int, default=None, help="replay from this offset (needs --queue)")
@click.option("--queue", "queues", type=int, multiple=True, help="only these queues (repeatable)")
@json_option
def replay(
    config_path: Path | None,
    group: str,
    since: str | None,
    offset: int | None,
    queues: tuple[int, ...],
    as_json: bool,
) -> None:
    """Deliver a consumer group's messages again from a time or offset (once, every owner)."""
    from phxq import admin as ops

    cfg = _load(config_path)
    when = None if since is None else ops.parse_since(since)
    cursors = _run(ops.replay(cfg, group, since=when, offset=offset, queues=list(queues) or None))
    if as_json:
        _echo_json({str(q): c for q, c in cursors.items()})
        return
    for q, c in cursors.items():
        click.echo(f"{group} queue {q}: cursor now {_show(c)}")


@admin.command()
@config_option
@auth_options
@_group_option()
@click.option("--rate", type=float, default=None, help="messages/s for the whole group")
@click.option("--bytes", "bytes_rate", default=None, help="bytes/s for the whole group (512KiB)")
@click.option("--unlimited", is_flag=True, help="no messages/s limit")
@click.option("--reset", is_flag=True, help="back to the config's limits")
@json_option
def limit(
    config_path: Path | None,
    group: str,
    rate: float | None,
    bytes_rate: str | None,
    unlimited: bool,
    reset: bool,
    as_json: bool,
) -> None:
    """Change a consumer group's rate limit at runtime (consumers apply it within a second)."""
    from phxq import admin as ops
    from phxq.config import parse_size

    cfg = _load(config_path)
    messages: Any = ops.KEEP
    bytes_per_s: Any = ops.KEEP
    if rate is not None or unlimited:
        messages = None if unlimited else rate
    if bytes_rate is not None:
        try:
            bytes_per_s = None if bytes_rate == "none" else parse_size(bytes_rate)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--bytes") from exc
    if messages is ops.KEEP and bytes_per_s is ops.KEEP and not reset:
        raise click.UsageError("give --rate, --bytes, --unlimited or --reset")
    now = _run(ops.set_limit(cfg, group, messages=messages, bytes_per_s=bytes_per_s, reset=reset))
    if as_json:
        _echo_json(now)
        return
    per_s = "unlimited" if now["messages"] is None else f"{now['messages']:g} messages/s"
    per_b = "unlimited" if now["bytes"] is None else f"{_size(now['bytes'])}/s"
    click.echo(f"{group}: {per_s}, {per_b} ({now['source']})")


@admin.command()
@config_option
@auth_options
@_group_option()
def pause(config_path: Path | None, group: str) -> None:
    """Stop delivering a consumer group's messages (in-flight ones finish)."""
    from phxq import admin as ops

    _run(ops.pause(_load(config_path), group))
    click.echo(f"{group}: paused")


@admin.command()
@config_option
@auth_options
@_group_option()
def resume(config_path: Path | None, group: str) -> None:
    """Resume a paused consumer group; also retries queues stopped by on_failure=block."""
    from phxq import admin as ops

    _run(ops.resume(_load(config_path), group))
    click.echo(f"{group}: resumed")


@admin.command()
@config_option
@auth_options
@click.option("--topic", required=True, help="topic to reconcile")
@click.option("--group", default=None, help="only this consumer group (default: all of the topic)")
@click.option("--since", default=None, help="window start: epoch seconds, a duration ago, or ISO")
@click.option("--until", default=None, help="window end: epoch seconds, a duration ago, or ISO")
@json_option
def reconcile(
    config_path: Path | None,
    topic: str,
    group: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Per queue and window: messages stored vs consumed per consumer group, and whether the
    replicas' chain checksums agree. Exits 1 on any mismatch."""
    from phxq import admin as ops

    cfg = _load(config_path)
    start = None if since is None else ops.parse_since(since)
    end = None if until is None else ops.parse_since(until)
    report = _run(ops.reconcile(cfg, topic, group=group, since=start, until=end))
    if as_json:
        _echo_json(report.as_dict())
    else:
        for row in report.queues:
            consumed = " ".join(f"{g}={n}" for g, n in row.get("consumed", {}).items())
            click.echo(f"queue {row['queue']}: stored {row.get('enqueued', '-')} {consumed}")
        for c in report.checksums:
            agree = "agree" if len(set(c["checksums"].values())) <= 1 else "DIFFER"
            click.echo(f"group {c['group']} @ {c['instance']}: checksums {agree}")
        for node in report.unreachable:
            click.echo(f"store {node}: unreachable (not compared)")
        for line in report.mismatches:
            click.echo(f"MISMATCH {line}")
        click.echo(f"{len(report.mismatches)} mismatches")
    if report.mismatches:
        sys.exit(1)


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


@admin.command()
@config_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="directory for ca.pem/ca.key and the member certificates (a CA there is reused)",
)
@click.option("--member", "members", multiple=True, help="a member id to certify (repeatable)")
@click.option("--host", "hosts", multiple=True, help="an extra name or IP for every cert")
@click.option("--days", type=click.IntRange(min=1), default=825, show_default=True)
def certs(
    config_path: Path | None,
    out: Path,
    members: tuple[str, ...],
    hosts: tuple[str, ...],
    days: int,
) -> None:
    """Make a cluster CA and member certificates (files 0600): one per [[store]]/[[lock]] of
    --config plus one for consumers and gateways, or the --member ids given."""
    from phxq.security import setup

    cfg = _load(config_path) if config_path is not None else None
    wanted: dict[str, list[str]] = {m: [] for m in members}
    if cfg is not None and not members:
        wanted = setup.config_members(cfg)
    if not wanted:
        raise click.UsageError("give --config FILE or --member ID")
    issued = setup.issue_certs(out, wanted, hosts=hosts, days=days)
    for member, (cert, key) in issued.items():
        click.echo(f"{member}: {cert} {key}")
    if cfg is not None:
        click.echo("\n# add to the config:")
        click.echo(setup.config_snippet(cfg, issued, out / "ca.pem"))


@admin.command()
@click.option("--name", default="client", show_default=True, help="the principal's name")
@click.option(
    "--allow",
    "grants",
    multiple=True,
    help="produce:TOPIC, consume:TOPIC:GROUP, admin or * (repeatable)",
)
@json_option
def token(name: str, grants: tuple[str, ...], as_json: bool) -> None:
    """Make a random token and the [[principal]] table (its sha256) for the config. The token
    is shown once; the config keeps only its hash."""
    from phxq.security import setup, token_sha256

    secret, snippet = setup.principal_snippet(name, grants)
    if as_json:
        _echo_json({"name": name, "token": secret, "token_sha256": token_sha256(secret)})
        return
    click.echo(f"token: {secret}")
    click.echo("\n# add to the config (the token itself is never stored there):")
    click.echo(snippet)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
