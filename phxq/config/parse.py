"""Reading and validating the cluster TOML file (see :mod:`phxq.config`)."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from phxq.config.model import (
    DLQ_SUFFIX,
    MESSAGE_BYTES_LIMIT,
    ClusterConfig,
    ClusterSettings,
    ConfigError,
    ConsumerConfig,
    ConsumerGroupConfig,
    GatewayConfig,
    NodeConfig,
    ProducerGroupConfig,
    TopicConfig,
    _split_addr,
    format_size,
)
from phxq.config.table import _HANDLER_RE, _NAME_RE, _show, _Table

# -------------------------------------------------------------------------------- parsing


_SECTIONS: Final = (
    "cluster",
    "store",
    "lock",
    "topic",
    "consumer_group",
    "security",
    "principal",
    "client",
    "gateway",
    "consumer",
    "producer_group",
)


def _array(source: str, doc: dict[str, Any], name: str) -> list[object]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise ConfigError(
            f"{source}: {name}: expected an array of tables ([[{name}]]), got {_show(value)}",
            {"key": name},
        )
    return value


def _node(source: str, kind: str, i: int, raw: object, base_dir: Path | None) -> NodeConfig:
    t = _Table(source, f"{kind}[{i}]", "node", raw)
    data = Path(os.path.expanduser(t.text("data", required=True)))
    if base_dir is not None and not data.is_absolute():
        data = Path(os.path.normpath(base_dir / data))
    node = NodeConfig(
        id=t.integer("id", required=True),
        addr=t.addr("addr", required=True),
        dc=t.text("dc"),
        data=data,
        metrics_addr=t.addr("metrics_addr"),
        peers=_peers(t, kind),
        cert=t.file("cert", base_dir),
        key=t.file("key", base_dir),
        set=t.integer("set") if kind == "store" else 1,
    )
    if (node.cert is None) != (node.key is None):
        t.fail("cert and key go together", "key" if node.key is None else "cert")
    t.done()
    return node


def _peers(t: _Table, kind: str) -> tuple[tuple[int, str], ...]:
    """``peers = { "2" = "host:port" }``: where this node dials the other nodes of its kind
    (ids checked against the [[store]] or [[lock]] list by :func:`parse_config`)."""
    raw = t.get("peers")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        t.fail(f'expected a table such as {{ "2" = "host:port" }}, got {_show(raw)}', "peers")
    peers = []
    for key, value in raw.items():
        if not key.isdigit() or int(key) < 1:
            t.fail(f"keys must be {kind} ids (positive integers)", f"peers.{key}")
        try:
            if not isinstance(value, str):
                raise ValueError
            _split_addr(value)
        except ValueError:
            t.fail(f'expected "host:port", got {_show(value)}', f"peers.{key}")
        peers.append((int(key), value))
    return tuple(sorted(peers))


def _topic(source: str, i: int, raw: object) -> TopicConfig:
    t = _Table(source, f"topic[{i}]", "topic", raw)
    topic = TopicConfig(
        name=t.text("name", _NAME_RE, required=True),
        queues=t.integer("queues", required=True),
        retention=t.duration("retention"),
        max_message_bytes=t.size("max_message_bytes"),
        retention_bytes=t.size("retention_bytes"),
        sets=_sets(t),
    )
    if topic.max_message_bytes > MESSAGE_BYTES_LIMIT:
        t.fail(f"must be at most {format_size(MESSAGE_BYTES_LIMIT)}", "max_message_bytes")
    t.done()
    return topic


def _sets(t: _Table) -> tuple[int, ...] | None:
    """``sets = [1, 2]``: the store sets a topic's queues are dealt over (None: every set;
    checked against the [[store]] sets by :func:`parse_config`)."""
    raw = t.get("sets")
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in raw)
    ):
        t.fail(f"expected a non-empty array of store set numbers, got {_show(raw)}", "sets")
    if len(set(raw)) != len(raw):
        t.fail("lists a store set twice", "sets")
    return tuple(sorted(raw))


def _check_sets(source: str, stores: list[NodeConfig], topics: list[TopicConfig]) -> None:
    """With more than one store set, each has 3 or 5 stores (a Paxos cluster of its own; a
    one-set cluster may have any number, e.g. a single test store); a topic's ``sets`` exist."""
    members: dict[int, list[int]] = {}
    for i, node in enumerate(stores):
        members.setdefault(node.set, []).append(i)
    if len(members) > 1:
        for number, indexes in sorted(members.items()):
            if len(indexes) not in (3, 5):
                key = f"store[{indexes[-1]}].set"
                raise ConfigError(
                    f"{source}: {key}: store set {number} has {len(indexes)} stores; with "
                    "several sets each needs 3 or 5",
                    {"key": key},
                )
    for i, topic in enumerate(topics):
        for number in topic.sets or ():
            if number not in members:
                key = f"topic[{i}].sets"
                known = ", ".join(map(str, sorted(members)))
                raise ConfigError(
                    f"{source}: {key}: no [[store]] has set = {number} (sets: {known})",
                    {"key": key},
                )


def _consumer_group(
    source: str, i: int, raw: object, base_dir: Path | None = None
) -> tuple[ConsumerGroupConfig, _Table]:
    t = _Table(source, f"consumer_group[{i}]", "consumer_group", raw)
    group = ConsumerGroupConfig(
        name=t.text("name", _NAME_RE, required=True),
        topic=t.text("topic", required=True),
        handler=t.text("handler", _HANDLER_RE, required=True),
        rate_limit=t.rate("rate_limit"),
        rate_limit_bytes=t.size("rate_limit_bytes"),
        max_attempts=t.integer("max_attempts"),
        on_failure=t.choice("on_failure", ("dead_letter", "block")),
        dead_letter=t.text("dead_letter", _NAME_RE),
        ordering=t.choice("ordering", ("strict", "per_key")),
        concurrency=t.integer("concurrency"),
        handler_timeout=t.duration("handler_timeout"),
        signing_secret_file=t.file("signing_secret_file", base_dir),
    )
    if group.concurrency > 1 and group.ordering != "per_key":
        t.fail('above 1 needs ordering = "per_key" (strict order is one at a time)', "concurrency")
    if group.on_failure == "block" and group.dead_letter is not None:
        t.fail('is set but on_failure = "block" never dead-letters', "dead_letter")
    t.done()
    return group, t


def consumer_group_table(raw: object, source: str) -> ConsumerGroupConfig:
    """One ``[[consumer_group]]``-like table checked as the TOML's are (``ConfigError``);
    its topic and dead-letter topic are the caller's to check (the cluster map's groups)."""
    return _consumer_group(source, 0, raw)[0]


def _producer_group(source: str, i: int, raw: object, base_dir: Path | None) -> Any:
    t = _Table(source, f"producer_group[{i}]", "producer_group", raw)
    group = ProducerGroupConfig(
        name=t.text("name", _NAME_RE, required=True),
        check=t.text("check", _HANDLER_RE),
        max_age=t.duration("max_age"),
        check_timeout=t.duration("check_timeout"),
        signing_secret_file=t.file("signing_secret_file", base_dir),
    )
    t.done()
    return group


def _consumer(source: str, i: int, raw: object) -> ConsumerConfig:
    t = _Table(source, f"consumer[{i}]", "consumer", raw)
    consumer = ConsumerConfig(
        name=t.text("name", _NAME_RE, required=True), metrics_addr=t.addr("metrics_addr")
    )
    t.done()
    return consumer


_ORIGIN_RE = re.compile(r"https?://([^/:\s\[\]]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?")


def _origins(value: object) -> tuple[str, ...]:
    """``[gateway] cors_origins``: a list of ``"scheme://host[:port]"`` (as browsers send
    ``Origin``, compared case-insensitively) or ``"*"`` (any origin)."""
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise ValueError('expected a list of origins such as ["https://app.example.com"]')
    for origin in value:
        if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
            raise ValueError(f'expected "*" or "http(s)://host[:port]" (no path), got {origin!r}')
    return tuple(o.lower() for o in value)


def _gateway(source: str, raw: object) -> GatewayConfig:
    t = _Table(source, "gateway", "gateway", raw)
    gateway = GatewayConfig(
        listen=t.addr("listen"),
        max_body_bytes=t.size("max_body_bytes"),
        body_timeout=t.duration("body_timeout"),
        max_wait=t.duration("max_wait", positive=False),
        max_in_flight=t.integer("max_in_flight"),
        cors_origins=t.convert("cors_origins", "", _origins) or (),
    )
    if gateway.max_wait > 60:
        t.fail("must be at most 60s (the stores' longest long poll)", "max_wait")
    t.done()
    return gateway


def _claim(source: str, seen: dict[object, str], value: object, path: str) -> None:
    if value in seen:
        raise ConfigError(
            f"{source}: {path}: {_show(value)} is already used by {seen[value]}", {"key": path}
        )
    seen[value] = path


def parse_config(
    text: str, source: str = "<string>", *, base_dir: Path | None = None
) -> ClusterConfig:
    """Parse and validate a cluster config. Relative ``data`` paths are resolved against
    ``base_dir`` when given (kept as written otherwise). Raises :class:`ConfigError`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    for key in doc:
        if key not in _SECTIONS:
            near = difflib.get_close_matches(key, _SECTIONS, n=1)
            hint = f' (did you mean "{near[0]}"?)' if near else ""
            raise ConfigError(f"{source}: {key}: unknown section{hint}", {"key": key})

    t = _Table(source, "cluster", "cluster", doc.get("cluster", {}))
    settings = ClusterSettings(
        groups=t.integer("groups"),
        dedup_window=t.duration("dedup_window", positive=False),
        paxos_window=t.integer("paxos_window"),
        heartbeat_interval=t.duration("heartbeat_interval"),
        lease=t.duration("lease"),
        segment_bytes=t.size("segment_bytes"),
        journal_bytes=t.size("journal_bytes", zero=True),
        retention_interval=t.duration("retention_interval"),
    )
    if settings.segment_bytes < 4096:
        t.fail("must be at least 4KiB", "segment_bytes")
    if 0 < settings.journal_bytes < 64 << 10:
        t.fail("must be 0 (no journal) or at least 64KiB", "journal_bytes")
    if settings.lease < 2 * settings.heartbeat_interval:
        t.fail("must be at least 2 heartbeat_intervals", "lease")
    t.done()

    stores = [
        _node(source, "store", i, r, base_dir) for i, r in enumerate(_array(source, doc, "store"))
    ]
    locks = [
        _node(source, "lock", i, r, base_dir) for i, r in enumerate(_array(source, doc, "lock"))
    ]
    if not stores:
        raise ConfigError(f"{source}: store: at least one [[store]] is required", {"key": "store"})
    addresses: dict[object, str] = {}
    data_dirs: dict[object, str] = {}
    for kind, nodes in (("store", stores), ("lock", locks)):
        ids: dict[object, str] = {}
        for i, node in enumerate(nodes):
            _claim(source, ids, node.id, f"{kind}[{i}].id")
            _claim(source, addresses, node.addr, f"{kind}[{i}].addr")
            _claim(source, data_dirs, str(node.data), f"{kind}[{i}].data")
            if node.metrics_addr is not None:
                _claim(source, addresses, node.metrics_addr, f"{kind}[{i}].metrics_addr")
    for kind, nodes in (("store", stores), ("lock", locks)):
        same_kind = {n.id for n in nodes}
        for i, node in enumerate(nodes):
            for peer, _ in node.peers:
                if peer == node.id or peer not in same_kind:
                    what = (
                        f"this {kind} itself" if peer == node.id else f"no [[{kind}]] has this id"
                    )
                    raise ConfigError(
                        f"{source}: {kind}[{i}].peers.{peer}: {what}", {"key": f"{kind}[{i}].peers"}
                    )

    topics = [_topic(source, i, r) for i, r in enumerate(_array(source, doc, "topic"))]
    names: dict[object, str] = {}
    for i, topic in enumerate(topics):
        _claim(source, names, topic.name, f"topic[{i}].name")
    _check_sets(source, stores, topics)
    by_name = {topic.name: topic for topic in topics}

    groups: list[ConsumerGroupConfig] = []
    group_names: dict[object, str] = {}
    for i, raw in enumerate(_array(source, doc, "consumer_group")):
        group, t = _consumer_group(source, i, raw, base_dir)
        _claim(source, group_names, group.name, f"consumer_group[{i}].name")
        spec = by_name.get(group.topic)
        if spec is None:
            t.fail(f"no [[topic]] named {_show(group.topic)}", "topic")
        assert spec is not None
        if group.on_failure == "dead_letter":
            if group.dead_letter is None:
                group = replace(group, dead_letter=group.topic + DLQ_SUFFIX)
                if group.dead_letter not in by_name:  # declared implicitly, like the source
                    dlq = replace(spec, name=group.topic + DLQ_SUFFIX)
                    topics.append(dlq)
                    by_name[dlq.name] = dlq
            dlq_spec = by_name.get(group.dead_letter or "")
            if dlq_spec is None:
                t.fail(f"no [[topic]] named {_show(group.dead_letter)}", "dead_letter")
            elif dlq_spec.name == group.topic:
                t.fail("must differ from the topic it serves", "dead_letter")
            elif dlq_spec.max_message_bytes < spec.max_message_bytes:
                t.fail(
                    f"topic {_show(dlq_spec.name)} has max_message_bytes "
                    f"{dlq_spec.max_message_bytes} < {spec.max_message_bytes} of "
                    f"{_show(spec.name)}: dead letters would not fit",
                    "dead_letter",
                )
        groups.append(group)
    from phxq.config.secure import parse_security  # it builds on this module's _Table

    security, principals, client = parse_security(source, doc, base_dir, stores, locks)
    gateway = _gateway(source, doc.get("gateway", {}))
    if gateway.listen is not None:
        _claim(source, addresses, gateway.listen, "gateway.listen")
    consumers = [_consumer(source, i, r) for i, r in enumerate(_array(source, doc, "consumer"))]
    consumer_names: dict[object, str] = {}
    for i, consumer in enumerate(consumers):
        _claim(source, consumer_names, consumer.name, f"consumer[{i}].name")
        if consumer.metrics_addr is not None:
            _claim(source, addresses, consumer.metrics_addr, f"consumer[{i}].metrics_addr")
    producers = [
        _producer_group(source, i, r, base_dir)
        for i, r in enumerate(_array(source, doc, "producer_group"))
    ]
    producer_names: dict[object, str] = {}
    for i, producer in enumerate(producers):
        _claim(source, producer_names, producer.name, f"producer_group[{i}].name")
    return ClusterConfig(
        cluster=settings,
        stores=tuple(stores),
        locks=tuple(locks),
        topics=tuple(topics),
        consumer_groups=tuple(groups),
        security=security,
        principals=principals,
        client=client,
        gateway=gateway,
        consumers=tuple(consumers),
        producer_groups=tuple(producers),
        source=source,
    )


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate the config file at ``path`` (relative ``data`` paths are resolved
    against its directory). Raises :class:`ConfigError` (unreadable files included)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from None
    return parse_config(text, str(path), base_dir=path.absolute().parent)
