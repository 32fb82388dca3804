"""The cluster config: one TOML file -> frozen, validated dataclasses, for every daemon and tool.

Public API::

    load_config(path) -> ClusterConfig                  # relative `data` paths: against the file's dir
    parse_config(text, source="<string>", *, base_dir=None) -> ClusterConfig
    dump_config(cfg) -> str                             # TOML; parse_config(dump_config(c)) == c
    ClusterConfig.topic(name) -> TopicConfig            # UnknownTopic if absent
    ClusterConfig.store(id) / .lock(id) -> NodeConfig   # ConfigError if absent
    ClusterConfig.consumer_group(name) -> ConsumerGroupConfig
    ClusterConfig.consumer_groups_for(topic) -> tuple[ConsumerGroupConfig, ...]
    ClusterConfig.topics_by_name: Mapping[str, TopicConfig]
    parse_duration(value) -> float seconds;  parse_size(value) -> int bytes
    format_duration(seconds) -> str | float;  format_size(n) -> str | int
    DEFAULTS: Mapping[str, object]                      # every optional key's default, TOML form
    ConfigError(ClientError), code "config"             # "<file>: <key path>: <problem>"

Keys (``*`` = required; durations: a number of seconds or "250ms", "10s", "5m", "2h", "7d";
sizes: an int of bytes or "512KiB", "64MiB", "1GiB"):

=================  ===========================================================================
[cluster]          groups (16) Paxos groups; dedup_window ("5m") idempotent-producer window,
                   0 disables; paxos_window (8) instances in flight per group;
                   heartbeat_interval ("100ms"); lease ("600ms", at least 2 heartbeats);
                   segment_bytes ("64MiB") PLog segment size (the unit of truncation);
                   journal_bytes ("8MiB") size of each of the two journal files that make a
                   batch over many groups durable with one fdatasync, "0" for none (a node
                   with one group, like the lock service, has none);
                   retention_interval ("10s") how often stores apply retention
[[store]],         id* (int >= 1, unique per kind); addr* "host:port" (unique among every
[[lock]]           listening address); data* directory (unique); dc ("default") data center;
                   metrics_addr (none) "host:port" for the Prometheus endpoint;
                   peers (none) { "<id>" = "host:port" }, the address this node dials the
                   node <id> of its kind at instead of its addr (a proxy or NAT in between;
                   clients and master hints still use addr); [[store]] only: set (1) the
                   store set, each its own Paxos cluster (3 or 5 stores when there are several)
[[topic]]          name* ([A-Za-z0-9._-], <= 249 chars); queues* (>= 1); retention ("7d");
                   retention_bytes (none: unlimited) per queue; max_message_bytes ("1MiB",
                   at most 8 MiB); sets (every set) store sets its queues are dealt over
[[consumer_group]] name*; topic* (a declared topic); handler* "http(s)://..." or
                   "package.module:function"; rate_limit (none: unlimited) messages/s;
                   rate_limit_bytes (none) bytes/s; max_attempts (5); on_failure
                   ("dead_letter" | "block"); dead_letter ("<topic>.dlq"); ordering ("strict" |
                   "per_key"); concurrency (1; above 1 only with per_key); handler_timeout ("10s")
[gateway]          listen (none) "host:port" of ``phxq gateway`` (``--listen`` overrides);
                   max_body_bytes ("16MiB") largest request body; body_timeout ("10s") to
                   receive a body; max_wait ("60s", at most 60s) longest long poll;
                   max_in_flight (1024) requests at once, more get 429; cors_origins (none)
                   browser origins allowed (CORS), "scheme://host[:port]" or "*"
[security]         ca* the cluster CA certificate (PEM); present = every link is TLS and every
                   [[store]]/[[lock]] needs cert* and key* (its member certificate and key);
                   cert, key: the member certificate of consumers/gateways using this file
[[principal]]      name*; token_sha256* (64 hex digits: ``phxq admin token`` prints one);
                   allow* ["produce:TOPIC", "consume:TOPIC:GROUP", "admin", "*"], with "*"
                   wildcards in names; needs [security]
[[consumer]]       name* (a consumer daemon's --id); metrics_addr (none) "host:port" of its
                   Prometheus endpoint (--metrics-addr overrides)
[client]           token_file (a file holding the token the tools send), ca (the CA the tools
                   check servers against; default [security].ca)
=================  ===========================================================================

Paths (``data``, ``cert``, ``key``, ``ca``, ``token_file``) are resolved like ``data``.

Dead letters: with ``on_failure = "dead_letter"`` (the default) a group's ``dead_letter`` names
a topic; if that key is omitted it is ``"<topic>.dlq"``, and if no such topic is declared it is
added to ``ClusterConfig.topics`` with the source topic's settings. A declared dead-letter topic
must accept the source topic's largest message. ``on_failure = "block"`` forbids ``dead_letter``.

Unknown keys are errors (typos must not silently become defaults). The dataclasses trust their
inputs: build them with :func:`parse_config` / :func:`load_config`, which validate everything.
"""

from phxq.config.dump import dump_config
from phxq.config.model import (
    DEFAULTS,
    DLQ_SUFFIX,
    MESSAGE_BYTES_LIMIT,
    ClientConfig,
    ClusterConfig,
    ClusterSettings,
    ConfigError,
    ConsumerConfig,
    ConsumerGroupConfig,
    GatewayConfig,
    NodeConfig,
    PrincipalConfig,
    ProducerGroupConfig,
    SecurityConfig,
    TopicConfig,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from phxq.config.parse import load_config, parse_config

__all__ = [
    "DEFAULTS",
    "DLQ_SUFFIX",
    "MESSAGE_BYTES_LIMIT",
    "ClientConfig",
    "ClusterConfig",
    "ClusterSettings",
    "ConfigError",
    "ConsumerConfig",
    "ConsumerGroupConfig",
    "GatewayConfig",
    "NodeConfig",
    "PrincipalConfig",
    "ProducerGroupConfig",
    "SecurityConfig",
    "TopicConfig",
    "dump_config",
    "format_duration",
    "format_size",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]
