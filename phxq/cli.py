"""The ``phxq`` command line: a thin click skin over the library (STYLE.md §12).

Every command parses its arguments, builds a client or a daemon, calls one function and prints
the result (human text by default, ``--json`` for scripts). Errors print one line and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from phxq import __version__
from phxq.config import ClusterConfig, load_config
from phxq.errors import PhxqError

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="cluster TOML file",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


def _load(path: Path) -> ClusterConfig:
    try:
        return load_config(path)
    except PhxqError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from exc


def _run(coro: Awaitable[Any]) -> Any:
    from phxq.net.loop import run

    try:
        return run(coro)
    except PhxqError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc.message}") from exc


def _setup_logging(prefix: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {prefix} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _serve_until_signal(start: Callable[[], Any]) -> None:
    """Run the async context manager ``start()`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with start():
        await stop.wait()


@click.group()
@click.version_option(__version__, prog_name="phxq")
def cli() -> None:
    """phxq: a strongly consistent distributed queue on Multi-Paxos."""


# ------------------------------------------------------------------------------- daemons


@cli.command()
@config_option
@click.option("--node", "node_id", type=int, required=True, help="this store's id in the config")
def store(config_path: Path, node_id: int) -> None:
    """Run one store daemon."""
    from phxq.store.node import StoreNode

    cfg = _load(config_path)
    _setup_logging(f"store{node_id}")
    _run(_serve_until_signal(lambda: StoreNode(cfg, node_id)))


@cli.command()
@config_option
@click.option("--id", "name", required=True, help="this consumer's name (unique per cluster)")
@click.option(
    "--weight",
    type=float,
    default=1.0,
    show_default=True,
    help="share of pairs vs. other consumers",
)
@click.option("--metrics-addr", default=None, help="host:port to serve Prometheus /metrics on")
def consumer(config_path: Path, name: str, weight: float, metrics_addr: str | None) -> None:
    """Run one consumer daemon (delivers every [[consumer_group]] of the config)."""
    from phxq.consumer.daemon import ConsumerDaemon

    cfg = _load(config_path)
    _setup_logging(f"consumer-{name}")
    _run(
        _serve_until_signal(
            lambda: ConsumerDaemon(cfg, name, weight=weight, metrics_addr=metrics_addr)
        )
    )


@cli.command()
@config_option
@click.option(
    "--node", "node_id", type=int, required=True, help="this lock node's id in the config"
)
def lock(config_path: Path, node_id: int) -> None:
    """Run one lock daemon (lease locks and the versioned KV)."""
    from phxq.lock.node import LockNode

    cfg = _load(config_path)
    _setup_logging(f"lock{node_id}")
    _run(_serve_until_signal(lambda: LockNode(cfg, node_id)))


@cli.command()
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


@cli.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./phxq-data"),
    show_default=True,
    help="data directory (cluster.toml is written here)",
)
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
def dev(data: Path, nodes: int) -> None:
    """Start a local cluster on 127.0.0.1 (Ctrl-C stops it; the next run resumes its data)."""
    from phxq.devcluster import (
        DEV_CONSUMER,
        DEV_CONSUMER_GROUPS,
        ProcessCluster,
        write_dev_config,
    )

    config_path = data / "cluster.toml"
    if config_path.exists():
        click.echo(f"resuming the cluster in {data} ({config_path})")
    else:
        write_dev_config(data, nodes=nodes, extra=DEV_CONSUMER_GROUPS, gateway_port=7301)
    cluster = ProcessCluster(
        config_path.resolve(), locks=True, consumers=(DEV_CONSUMER,), gateway=True
    )
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        cluster.start()
        cluster.wait_ready(timeout=60)
        stores = ",".join(cluster.store_addresses)
        click.echo(f"phxq dev: {len(cluster.store_addresses)} stores ready: {stores}")
        locks = ",".join(cluster.lock_addresses)
        click.echo(f"          {len(cluster.lock_addresses)} lock nodes ready: {locks}")
        click.echo(f"          consumer {DEV_CONSUMER!r} delivers group 'log' to its log")
        if cluster.gateway_url:
            click.echo(f"          HTTP gateway: {cluster.gateway_url}/v1 (docs/http-api.md)")
        click.echo(f"config: {config_path}   logs: {cluster.log_dir}")
        click.echo(f'try:  phxq enqueue --config {config_path} orders --key user-42 "hello"')
        click.echo(f"      phxq tail --config {config_path} orders --group demo")
        if cluster.gateway_url:
            click.echo(f"      curl -d hello {cluster.gateway_url}/v1/topics/orders/messages")
        click.echo("Ctrl-C to stop.")
        while not stop:
            for proc in cluster.procs.values():
                if proc.popen is not None and proc.popen.poll() is not None:
                    raise click.ClickException(
                        f"{proc.role} {proc.node} exited ({proc.popen.returncode}); see {cluster.log_dir}"
                    )
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        click.echo("stopping...")
        cluster.stop()


# ------------------------------------------------------------------------------- clients


@cli.command()
@config_option
@click.argument("topic")
@click.argument("payload", required=False)
@click.option("--key", default=None, help="message key (same key, same queue)")
@click.option("--dedup-id", default=None, help="idempotency id; a retry with it is stored once")
@click.option("--header", "headers", multiple=True, help="NAME=VALUE, repeatable")
@json_option
def enqueue(
    config_path: Path,
    topic: str,
    payload: str | None,
    key: str | None,
    dedup_id: str | None,
    headers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Enqueue one message (PAYLOAD, or stdin when PAYLOAD is - or absent)."""
    from phxq.client import Client

    cfg = _load(config_path)
    data = sys.stdin.buffer.read() if payload in (None, "-") else payload.encode()
    hdrs = {}
    for h in headers:
        name, sep, value = h.partition("=")
        if not sep:
            raise click.BadParameter(f"header {h!r} is not NAME=VALUE")
        hdrs[name] = value

    async def go() -> Any:
        async with Client([s.addr for s in cfg.stores]) as client:
            return await client.enqueue(topic, data, key=key, dedup_id=dedup_id, headers=hdrs)

    ack = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "topic": ack.topic,
                    "queue": ack.queue,
                    "offset": ack.offset,
                    "duplicate": ack.duplicate,
                }
            )
        )
    else:
        click.echo(
            f"enqueued {topic} queue={ack.queue} offset={ack.offset}"
            + (" (duplicate)" if ack.duplicate else "")
        )


@cli.command()
@config_option
@click.argument("topic")
@click.option("--group", required=True, help="consumer group whose cursor to start from")
@click.option("--from-start", is_flag=True, help="start at the beginning instead of the cursor")
@click.option("--count", type=int, default=None, help="exit after this many messages")
@click.option("--poll", type=float, default=0.2, show_default=True, help="seconds between polls")
@json_option
def tail(
    config_path: Path,
    topic: str,
    group: str,
    from_start: bool,
    count: int | None,
    poll: float,
    as_json: bool,
) -> None:
    """Print messages as they arrive (read-only: commits nothing)."""
    from phxq.client import Client

    cfg = _load(config_path)
    spec = cfg.topics_by_name.get(topic)
    if spec is None:
        raise click.ClickException(f"unknown topic {topic!r}")

    async def go() -> None:
        seen = 0
        async with Client([s.addr for s in cfg.stores]) as client:
            after: dict[int, int | None] = {}
            for q in range(spec.queues):
                after[q] = None if from_start else await client.cursor(group, topic, queue=q)
            while count is None or seen < count:
                got = 0
                for q in range(spec.queues):
                    for m in await client.dequeue(None, topic, queue=q, after=after[q], limit=100):
                        after[q] = m.offset
                        got += 1
                        seen += 1
                        if as_json:
                            click.echo(
                                json.dumps(
                                    {
                                        "queue": q,
                                        "offset": m.offset,
                                        "key": m.key,
                                        "payload": m.payload.decode(errors="replace"),
                                        "headers": m.headers,
                                        "enqueued_at": m.enqueued_at,
                                    }
                                )
                            )
                        else:
                            click.echo(f"q{q} @{m.offset} key={m.key} {m.payload!r}")
                        if count is not None and seen >= count:
                            return
                if not got:
                    await asyncio.sleep(poll)

    _run(go())


# --------------------------------------------------------------------------------- admin


@cli.group()
def admin() -> None:
    """Operate a cluster: status, lag, replay, limits."""


@admin.command()
@config_option
@json_option
def status(config_path: Path, as_json: bool) -> None:
    """Groups, the master of each, chosen instance per replica, disk, consumer lag."""
    from phxq.net.rpc import RpcPool

    cfg = _load(config_path)

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with RpcPool() as pool:
            for s in cfg.stores:
                try:
                    out[str(s.id)] = await pool.call(s.addr, "status", {}, timeout=2.0)
                except PhxqError as exc:
                    out[str(s.id)] = {"error": f"{type(exc).__name__}: {exc.message}"}
        return out

    result = _run(go())
    from phxq.consumer import admin as consumer_admin

    ownership = _run(consumer_admin.consumer_status(cfg))  # None without consumer groups
    if as_json:
        shown = result if ownership is None else {**result, "ownership": ownership}
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    for node, st in result.items():
        if "error" in st:
            click.echo(f"store {node}: DOWN ({st['error']})")
            continue
        masters = sum(1 for g in st["groups"] if g["is_master"])
        disk = sum(g["disk_bytes"] for g in st["groups"])
        bad = [
            g["group"] for g in st["groups"] if g["failed"] or g["diverged"] or g["needs_repair"]
        ]
        click.echo(
            f"store {node} {st['address']}: masters of {masters} groups, disk {disk} B"
            + (f", UNHEALTHY groups {bad}" if bad else "")
            + (
                f", {st['membership'].upper()}"
                if st.get("membership", "member") != "member"
                else ""
            )
        )
    click.echo("group  master  chosen per store")
    groups = cfg.cluster.groups
    for g in range(groups):
        row = []
        master = None
        for node, st in result.items():
            if "error" in st:
                row.append(f"{node}:-")
                continue
            info = st["groups"][g]
            master = master or info["master"]
            row.append(f"{node}:{info['chosen_up_to']}")
        click.echo(f"{g:5d}  {master!s:>6}  " + " ".join(row))
    lags = [row for st in result.values() for row in st.get("consumers", [])]
    if lags:
        click.echo("consumer group  topic  queue  cursor  lag (messages)")
        for row in sorted(lags, key=lambda r: (r["group"], r["topic"], r["queue"])):
            click.echo(
                f"{row['group']}  {row['topic']}  {row['queue']}  {row['cursor']}  {row['lag']}"
            )
    for line in consumer_admin.format_ownership(ownership) if ownership is not None else []:
        click.echo(line)


def _group_option(required: bool = True) -> Callable[[Any], Any]:
    return click.option("--group", required=required, help="consumer group name")


def _print_json_or(as_json: bool, data: Any, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)


@admin.command()
@config_option
@_group_option(required=False)
@json_option
def lag(config_path: Path, group: str | None, as_json: bool) -> None:
    """Cursor and lag (messages not yet consumed) of every consumer group and queue."""
    from phxq.client import Client
    from phxq.consumer import admin as consumer_admin

    cfg = _load(config_path)

    async def go() -> Any:
        async with Client([s.addr for s in cfg.stores]) as client:
            return await consumer_admin.lag(cfg, client, group=group)

    rows = _run(go())
    lines = ["consumer group  topic  queue  cursor  end  lag"]
    lines += [f"{r.group}  {r.topic}  {r.queue}  {r.cursor}  {r.end}  {r.lag}" for r in rows]
    _print_json_or(as_json, [r.to_json() for r in rows], lines)


@admin.command()
@config_option
@_group_option()
@click.option("--since", default=None, help="epoch seconds, a duration ago (5m), or ISO time")
@click.option("--offset", type=int, default=None, help="replay from this offset (needs --queue)")
@click.option("--queue", "queues", type=int, multiple=True, help="only these queues (repeatable)")
@json_option
def replay(
    config_path: Path,
    group: str,
    since: str | None,
    offset: int | None,
    queues: tuple[int, ...],
    as_json: bool,
) -> None:
    """Deliver a consumer group's messages again from a time or offset (once, every owner)."""
    from phxq.client import Client
    from phxq.consumer import admin as consumer_admin

    cfg = _load(config_path)

    async def go() -> Any:
        when = None if since is None else consumer_admin.parse_since(since)
        async with Client([s.addr for s in cfg.stores]) as client:
            return await consumer_admin.replay(
                cfg, client, group, since=when, offset=offset, queues=list(queues) or None
            )

    cursors = _run(go())
    lines = [f"{group} queue {q}: cursor now {c}" for q, c in cursors.items()]
    _print_json_or(as_json, {str(q): c for q, c in cursors.items()}, lines)


@admin.command()
@config_option
@_group_option()
@click.option("--rate", type=float, default=None, help="messages/s for the whole group")
@click.option("--bytes", "bytes_rate", default=None, help="bytes/s for the whole group (512KiB)")
@click.option("--unlimited", is_flag=True, help="no messages/s limit")
@click.option("--reset", is_flag=True, help="back to the config's limits")
@json_option
def limit(
    config_path: Path,
    group: str,
    rate: float | None,
    bytes_rate: str | None,
    unlimited: bool,
    reset: bool,
    as_json: bool,
) -> None:
    """Change a consumer group's rate limit at runtime (consumers apply it within a second)."""
    from phxq.config import parse_size
    from phxq.consumer import admin as consumer_admin

    cfg = _load(config_path)
    changes: dict[str, Any] = {}
    if rate is not None or unlimited:
        changes["messages"] = None if unlimited else rate
    if bytes_rate is not None:
        try:
            changes["bytes_per_s"] = None if bytes_rate == "none" else parse_size(bytes_rate)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--bytes") from exc
    if not changes and not reset:
        raise click.UsageError("give --rate, --bytes, --unlimited or --reset")

    async def go() -> Any:
        async with consumer_admin.open_locks(cfg) as locks:
            return await consumer_admin.set_limit(locks, cfg, group, reset=reset, **changes)

    now = _run(go())
    lines = [f"{group}: {now['messages']} messages/s, {now['bytes']} bytes/s ({now['source']})"]
    _print_json_or(as_json, now, lines)


@admin.command()
@config_option
@_group_option()
def pause(config_path: Path, group: str) -> None:
    """Stop delivering a consumer group's messages (in-flight ones finish)."""
    from phxq.consumer import admin as consumer_admin

    cfg = _load(config_path)

    async def go() -> None:
        async with consumer_admin.open_locks(cfg) as locks:
            await consumer_admin.pause(locks, cfg, group)

    _run(go())
    click.echo(f"{group}: paused")


@admin.command()
@config_option
@_group_option()
def resume(config_path: Path, group: str) -> None:
    """Resume a paused consumer group; also retries queues stopped by on_failure=block."""
    from phxq.consumer import admin as consumer_admin

    cfg = _load(config_path)

    async def go() -> None:
        async with consumer_admin.open_locks(cfg) as locks:
            await consumer_admin.resume(locks, cfg, group)

    _run(go())
    click.echo(f"{group}: resumed")


@admin.command()
@config_option
@click.option("--topic", required=True, help="topic to reconcile")
@click.option("--group", default=None, help="only this consumer group (default: all of the topic)")
@click.option("--since", default=None, help="window start: epoch seconds, a duration ago, or ISO")
@click.option("--until", default=None, help="window end: epoch seconds, a duration ago, or ISO")
@json_option
def reconcile(
    config_path: Path,
    topic: str,
    group: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Per queue and window: messages stored vs consumed per consumer group, and whether the
    replicas' chain checksums agree. Exits 1 on any mismatch."""
    from phxq.consumer.admin import parse_since
    from phxq.store.reconcile import reconcile as run_reconcile

    cfg = _load(config_path)
    if group is not None:
        cfg.consumer_group(group)  # ConfigError names it if unknown
    start = None if since is None else parse_since(since)
    end = None if until is None else parse_since(until)
    report = _run(run_reconcile(cfg, topic, consumer_group=group, since=start, until=end))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
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
@click.argument("mode", type=click.Choice(["latency", "throughput"]), default="latency")
@click.option("--topic", default="orders", show_default=True)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="latency: measured enqueues",
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
    config_path: Path,
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

    cfg = _load(config_path)
    try:
        cfg.topic(topic)  # UnknownTopic before any load is sent
    except PhxqError as exc:
        raise click.ClickException(str(exc)) from exc
    addrs = [s.addr for s in cfg.stores]
    meter = benchmark.CpuMeter()  # this process only: the stores may be on other hosts
    if mode == "latency":
        result = _run(benchmark.latency(addrs, topic=topic, count=count, size=size, cpu=meter))
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
            )
        )
    if as_json:
        click.echo(json.dumps({**result.to_json(), "environment": benchmark.environment()}))
    else:
        click.echo(result.line())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
