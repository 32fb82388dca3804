"""The cluster config's data model: defaults, units, the frozen dataclasses, ConfigError.

See :mod:`phxq.config` for the keys and the public API; import from there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from phxq.errors import ClientError, UnknownTopic

DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "cluster.groups": 16,
        "cluster.dedup_window": "5m",
        "cluster.paxos_window": 8,
        "cluster.heartbeat_interval": "100ms",
        "cluster.lease": "600ms",
        "cluster.segment_bytes": "64MiB",
        "cluster.journal_bytes": "8MiB",
        "cluster.retention_interval": "10s",
        "node.dc": "default",
        "node.set": 1,
        "topic.retention": "7d",
        "topic.max_message_bytes": "1MiB",
        "consumer_group.max_attempts": 5,
        "consumer_group.on_failure": "dead_letter",
        "consumer_group.ordering": "strict",
        "consumer_group.concurrency": 1,
        "consumer_group.handler_timeout": "10s",
        "producer_group.max_age": "10m",
        "producer_group.check_timeout": "5s",
        "gateway.max_body_bytes": "16MiB",
        "gateway.body_timeout": "10s",
        "gateway.max_wait": "60s",
        "gateway.max_in_flight": 1024,
    }
)
MESSAGE_BYTES_LIMIT: Final = 8 << 20  # half the RPC frame limit: a message must fit a frame
DLQ_SUFFIX: Final = ".dlq"

OnFailure = Literal["dead_letter", "block"]
Ordering = Literal["strict", "per_key"]


class ConfigError(ClientError):
    """The config file is unreadable or invalid; the message names the file and the key."""

    code = "config"


# ------------------------------------------------------------------- durations and sizes

_DURATION_UNITS: Final[dict[str, Decimal]] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_SIZE_UNITS: Final = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB)?")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a non-negative number of seconds or "<n>ms|s|m|h|d" ("1.5h")."""
    if _is_number(value):
        seconds = float(value)  # type: ignore[arg-type]
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match is not None:
            return float(Decimal(match[1]) * _DURATION_UNITS[match[2]])
    raise ValueError('expected a duration such as "250ms", "10s", "5m", "2h" or "7d"')


def parse_size(value: object) -> int:
    """Bytes in ``value``: a non-negative int or "<n>B|KiB|MiB|GiB|TiB" (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match is not None:
            amount = Decimal(match[1]) * _SIZE_UNITS[match[2] or "B"]
            if amount == amount.to_integral_value():
                return int(amount)
    raise ValueError('expected a size in bytes such as 1048576, "512KiB", "64MiB" or "1GiB"')


def format_duration(seconds: float) -> str | float:
    """The shortest unit string that parses back to exactly ``seconds`` (else the number)."""
    for unit in ("d", "h", "m", "s", "ms"):
        count = Decimal(repr(seconds)) / Decimal(_DURATION_UNITS[unit])
        try:
            whole = int(count.to_integral_exact())
        except (InvalidOperation, OverflowError):
            continue
        if count == whole and parse_duration(f"{whole}{unit}") == seconds:
            return f"{whole}{unit}"
    return float(seconds)


def format_size(size: int) -> str | int:
    """``size`` in the largest binary unit that divides it ("64MiB"), else the int."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return size


def _default(key: str) -> Any:
    return DEFAULTS[key]


def _default_duration(key: str) -> float:
    return parse_duration(DEFAULTS[key])


def _default_size(key: str) -> int:
    return parse_size(DEFAULTS[key])


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError('expected "host:port" with a port in 1..65535')
    return host.strip("[]"), int(port)


# ------------------------------------------------------------------------------ dataclasses


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """The ``[cluster]`` table; durations in seconds."""

    groups: int = _default("cluster.groups")
    dedup_window: float = _default_duration("cluster.dedup_window")
    paxos_window: int = _default("cluster.paxos_window")
    heartbeat_interval: float = _default_duration("cluster.heartbeat_interval")
    lease: float = _default_duration("cluster.lease")
    segment_bytes: int = _default_size("cluster.segment_bytes")
    journal_bytes: int = _default_size("cluster.journal_bytes")  # per file; 0: no journal
    retention_interval: float = _default_duration("cluster.retention_interval")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One ``[[store]]`` or ``[[lock]]`` node."""

    id: int
    addr: str
    dc: str
    data: Path
    metrics_addr: str | None = None
    # (peer id, address this node dials it at), sorted; same kind of node. Empty: their addr.
    peers: tuple[tuple[int, str], ...] = ()
    cert: Path | None = None  # with [security]: this member's certificate (PEM) and key
    key: Path | None = None
    set: int = 1  # [[store]] only: the store set (its own Paxos cluster) this node belongs to

    @property
    def host(self) -> str:
        return _split_addr(self.addr)[0]

    @property
    def port(self) -> int:
        return _split_addr(self.addr)[1]


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """One ``[[topic]]``; ``retention`` in seconds, sizes in bytes (``None``: unlimited)."""

    name: str
    queues: int
    retention: float = _default_duration("topic.retention")
    max_message_bytes: int = _default_size("topic.max_message_bytes")
    retention_bytes: int | None = None
    # The store sets its queues are dealt over (queue q on sets[q % len(sets)]); None: every set.
    sets: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ConsumerGroupConfig:
    """One ``[[consumer_group]]``; rates per second (``None``: unlimited), timeout in seconds."""

    name: str
    topic: str
    handler: str
    rate_limit: float | None = None
    rate_limit_bytes: int | None = None
    max_attempts: int = _default("consumer_group.max_attempts")
    on_failure: OnFailure = _default("consumer_group.on_failure")  # noqa: RUF009 (a str)
    dead_letter: str | None = None
    ordering: Ordering = _default("consumer_group.ordering")  # noqa: RUF009 (a str)
    concurrency: int = _default("consumer_group.concurrency")
    handler_timeout: float = _default_duration("consumer_group.handler_timeout")
    signing_secret_file: Path | None = None  # HTTP pushes carry Phxq-Signature keyed by it


@dataclass(frozen=True, slots=True)
class ProducerGroupConfig:
    """One ``[[producer_group]]``: who the store asks about a transaction its producer left
    undecided (``check``: ``http(s)://...`` or ``package.module:function``); durations in s."""

    name: str
    check: str | None = None
    max_age: float = _default_duration("producer_group.max_age")
    check_timeout: float = _default_duration("producer_group.check_timeout")
    signing_secret_file: Path | None = None  # HTTP checks carry Phxq-Signature keyed by it


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """One ``[[consumer]]``: settings of the consumer daemon ``phxq consumer --id NAME``."""

    name: str
    metrics_addr: str | None = None  # "host:port" of its Prometheus endpoint


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The ``[gateway]`` table (``phxq gateway``); durations in seconds."""

    listen: str | None = None  # "host:port"; None: --listen or the gateway's default
    max_body_bytes: int = _default_size("gateway.max_body_bytes")
    body_timeout: float = _default_duration("gateway.body_timeout")
    max_wait: float = _default_duration("gateway.max_wait")
    max_in_flight: int = _default("gateway.max_in_flight")
    # Browser origins allowed to call it (CORS): "scheme://host[:port]" or "*"; none: no CORS.
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The ``[security]`` table: every link is TLS, members present certificates from ``ca``.
    ``cert``/``key``: the member certificate of processes without a node table (consumers,
    gateways) started from this file."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class PrincipalConfig:
    """One ``[[principal]]``: a token's SHA-256 (hex) and what its holder may do."""

    name: str
    token_sha256: str = field(repr=False)
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The ``[client]`` table: credentials the command-line tools use with ``--config``."""

    token_file: Path | None = None
    ca: Path | None = None
    # Not a config key: the token a tool was given (--token, PHXQ_TOKEN); wins over token_file.
    token: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The whole validated file. ``source`` (the file name) is not part of equality."""

    cluster: ClusterSettings
    stores: tuple[NodeConfig, ...]
    locks: tuple[NodeConfig, ...] = ()
    topics: tuple[TopicConfig, ...] = ()
    consumer_groups: tuple[ConsumerGroupConfig, ...] = ()
    security: SecurityConfig | None = None
    principals: tuple[PrincipalConfig, ...] = ()
    client: ClientConfig | None = None
    gateway: GatewayConfig = GatewayConfig()
    consumers: tuple[ConsumerConfig, ...] = ()
    producer_groups: tuple[ProducerGroupConfig, ...] = ()
    source: str = field(default="<string>", compare=False)
    topics_by_name: Mapping[str, TopicConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = MappingProxyType({t.name: t for t in self.topics})
        object.__setattr__(self, "topics_by_name", by_name)

    def topic(self, name: str) -> TopicConfig:
        """The topic called ``name``; :class:`UnknownTopic` if there is none."""
        spec = self.topics_by_name.get(name)
        if spec is None:
            raise UnknownTopic(f"unknown topic {name!r}", {"topic": name})
        return spec

    @property
    def sets(self) -> tuple[int, ...]:
        """Every store set's number, ascending."""
        return tuple(sorted({s.set for s in self.stores}))

    def set_stores(self, number: int) -> tuple[NodeConfig, ...]:
        """The ``[[store]]`` nodes of set ``number`` (empty if it has none)."""
        return tuple(s for s in self.stores if s.set == number)

    def store(self, node_id: int) -> NodeConfig:
        """The ``[[store]]`` with ``id = node_id``; :class:`ConfigError` if there is none."""
        return self._node(self.stores, "store", node_id)

    def lock(self, node_id: int) -> NodeConfig:
        """The ``[[lock]]`` with ``id = node_id``; :class:`ConfigError` if there is none."""
        return self._node(self.locks, "lock", node_id)

    def _node(self, nodes: tuple[NodeConfig, ...], kind: str, node_id: int) -> NodeConfig:
        for node in nodes:
            if node.id == node_id:
                return node
        known = ", ".join(str(n.id) for n in nodes) or "none"
        raise ConfigError(f"{self.source}: no [[{kind}]] with id {node_id} (ids: {known})")

    def consumer_group(self, name: str) -> ConsumerGroupConfig:
        """The consumer group called ``name``; :class:`ConfigError` if there is none."""
        for group in self.consumer_groups:
            if group.name == name:
                return group
        raise ConfigError(f"{self.source}: no [[consumer_group]] named {name!r}")

    def consumer(self, name: str) -> ConsumerConfig:
        """The ``[[consumer]]`` called ``name``, or its defaults if the file has none."""
        for consumer in self.consumers:
            if consumer.name == name:
                return consumer
        return ConsumerConfig(name)

    def consumer_groups_for(self, topic: str) -> tuple[ConsumerGroupConfig, ...]:
        """Every consumer group reading ``topic``, in file order."""
        return tuple(g for g in self.consumer_groups if g.topic == topic)
