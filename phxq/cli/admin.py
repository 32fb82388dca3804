"""``phxq admin ...``: :mod:`phxq.admin`'s operations, and certificates and tokens."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from phxq.cli.common import (
    PhxqGroup,
    _echo_json,
    _load,
    _run,
    _show,
    _size,
    auth_options,
    cli,
    config_option,
    json_option,
)

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
        where = f"store {node} (set {st.get('set', 1)}, map v{st.get('map_version', 0)})"
        where += f" {st['address']}"
        line = f"{where}: master of {masters} groups, disk {_size(disk)}"
        if bad:
            line += f", UNHEALTHY groups {', '.join(map(str, bad))}"
        if st.get("membership", "member") != "member":
            line += f", {st['membership'].upper()}"
        if st.get("cert"):
            line += f", cert expires in {st['cert']['expires_in_days']} days"
        click.echo(line)
    click.echo("set  group  master  chosen per store")
    for number, g, master, chosen in result.masters():
        row = " ".join(f"{node}:{_show(c)}" for node, c in chosen.items())
        click.echo(f"{number:3d}  {g:5d}  {_show(master):>6}  {row}")
    scheduled = _scheduled_rows(result.stores)
    if scheduled:
        click.echo("group  scheduled pending  next due  release lag")
        for g, pending, due, lag in scheduled:
            click.echo(f"{g:5d}  {pending:17d}  {_when_text(due)}  {lag:.1f}s")
    open_txns = _txn_rows(result.stores)
    if open_txns:
        click.echo("group  open transactions  oldest age")
        for g, count, age in open_txns:
            click.echo(f"{g:5d}  {count:17d}  {age:.1f}s")
    if result.lags:
        click.echo("consumer group  topic  queue  cursor  lag (messages)")
        for r in sorted(result.lags, key=lambda r: (r["group"], r["topic"], r["queue"])):
            click.echo(
                f"{r['group']}  {r['topic']}  {r['queue']}  {_show(r['cursor'])}  {r['lag']}"
            )
    moves = result.moves()
    if moves:
        click.echo("queue moves in progress")
        for m in moves:
            age = time.time() - m["started_at"]
            click.echo(
                f"  {m['topic']}/{m['queue']}: set {m['from']} -> set {m['to']} "
                f"(move {m['id']}, {age:.0f}s)"
            )
            if m.get("waiting"):
                click.echo(f"    waiting: {m['waiting']}")
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


def _txn_rows(stores: dict[Any, Any]) -> list[tuple[int, int, float]]:
    """(group, open transactions, oldest age) of the groups with open transactions, as their
    masters see them."""
    rows = []
    for st in stores.values():
        for g in st.get("groups", []):
            txns = g.get("transactions")
            if g.get("is_master") and txns and txns["open"]:
                rows.append((g["group"], txns["open"], txns["oldest_age"]))
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
            consumed = ", ".join(f"{g} {n}" for g, n in row.get("consumed", {}).items())
            consumed = f", consumed: {consumed}" if consumed else ""
            click.echo(f"queue {row['queue']}: stored {_show(row.get('enqueued'))}{consumed}")
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


@admin.group(cls=PhxqGroup)
def txn() -> None:
    """Transactions: list the open ones, resolve one by hand."""


@txn.command("list")
@config_option
@auth_options
@json_option
def txn_list(config_path: Path | None, as_json: bool) -> None:
    """Open transactions (one row per group holding half messages), oldest first."""
    from phxq import admin as ops

    rows = _run(ops.txn_list(_load(config_path)))
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no open transactions")
        return
    click.echo("txn                               group  home  age      half  producer  decision")
    # With several store sets, groups are shown as set/group (group numbers repeat per set).
    sets = {r.get("set", 1) for r in rows} | {r.get("home_set", 1) for r in rows}
    for r in rows:
        group, home = f"{r['group']}", f"{r['home']}"
        if len(sets) > 1:
            group, home = f"{r.get('set', 1)}/{group}", f"{r.get('home_set', 1)}/{home}"
        click.echo(
            f"{r['txn']}  {group:>5}  {home:>4}  {r['age']:7.1f}s  "
            f"{r['half_messages']:4d}  {_show(r['producer_group'])}  {_show(r['decision'])}"
        )


@txn.command("resolve")
@config_option
@auth_options
@json_option
@click.argument("txn_id")
@click.option("--commit/--rollback", "commit", required=True, help="the decision to write")
def txn_resolve(config_path: Path | None, as_json: bool, txn_id: str, commit: bool) -> None:
    """Decide an open transaction by hand (its home group's first decision wins: if one was
    already written, that one is shown)."""
    from phxq import admin as ops

    result = _run(ops.txn_resolve(_load(config_path), txn_id, commit=commit))
    if as_json:
        _echo_json(result)
        return
    decided = "committed" if result["commit"] else "rolled back"
    click.echo(f"{txn_id}: {decided} ({result['reason']})")
