"""``phxq enqueue``, ``phxq cancel-scheduled`` and ``phxq tail``: the client's calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import click

from phxq.cli.common import (
    _addresses,
    _client_options,
    _run,
    auth_options,
    cli,
    config_option,
    json_option,
    servers_option,
)
from phxq.client import Ack
from phxq.client.stream import TailStart
from phxq.errors import PhxqError

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

    async def go() -> bool:
        async with Client(addrs, **_client_options(config_path)) as client:
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
