"""The configuration reference: every key the cluster TOML accepts, as data.

``docs/configuration.md`` is generated from :data:`REFERENCE` and :data:`~phxq.config.DEFAULTS`
(``python -m phxq.config.reference > docs/configuration.md``), and a test checks that the file
is current, that every key with a default is documented here, and that a config setting every
documented key parses. So the reference cannot drift from the parser: a new key needs a row
here, or the tests fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from phxq.config.model import DEFAULTS


@dataclass(frozen=True, slots=True)
class Key:
    """One config key: its table, name, an example TOML value and what it means."""

    table: str  # "cluster", "store", "lock", "topic", "consumer_group", ...
    name: str
    example: str  # a TOML value that parses, e.g. '"5m"' or '16'
    meaning: str
    required: bool = False
    defaults_kind: str | None = None  # the DEFAULTS prefix when not the table name

    @property
    def default(self) -> object | None:
        return DEFAULTS.get(f"{self.defaults_kind or self.table}.{self.name}")


_NODE = "node"

REFERENCE: Final[tuple[Key, ...]] = (
    Key(
        "cluster",
        "groups",
        "16",
        "Paxos groups per store set; queue q lives in group q % groups. Fixed for the life of a "
        "cluster (it maps queues to groups). Fewer groups batch more messages per Paxos instance "
        "(cheaper per message on few cores: bench.curves); more spread masters over more nodes.",
    ),
    Key(
        "cluster",
        "dedup_window",
        '"5m"',
        "How long an idempotent producer's dedup id is remembered; 0 disables dedup.",
    ),
    Key("cluster", "paxos_window", "8", "Paxos instances in flight per group (pipelining)."),
    Key("cluster", "heartbeat_interval", '"100ms"', "How often a master heartbeats its group."),
    Key(
        "cluster",
        "lease",
        '"600ms"',
        "The master lease; at least two heartbeats. A silent master is replaced about a lease "
        "plus a heartbeat after it was last heard (clients follow within ~0.1 s); a master "
        "stalled that long (a loaded machine) is replaced too. Safety never depends on it.",
    ),
    Key(
        "cluster",
        "segment_bytes",
        '"64MiB"',
        "PLog segment size: the unit of truncation (retention deletes whole segments).",
    ),
    Key(
        "cluster",
        "journal_bytes",
        '"8MiB"',
        "Size of each of the two journal files that make a write batch over many groups durable "
        'with one fdatasync; "0" for none (a node with one group has none).',
    ),
    Key("cluster", "retention_interval", '"10s"', "How often stores apply retention."),
    *(
        k
        for table in ("store", "lock")
        for k in (
            Key(table, "id", "1", "Node id, an integer >= 1, unique per kind.", required=True),
            Key(
                table,
                "addr",
                '"127.0.0.1:7101"',
                "host:port it listens on; unique among every listening address.",
                required=True,
            ),
            Key(
                table,
                "data",
                '"./phxq-data/node1"',
                "Data directory (unique); relative paths are against the config file's folder.",
                required=True,
            ),
            Key(table, "dc", '"dc1"', "Data center name.", defaults_kind=_NODE),
            Key(
                table,
                "metrics_addr",
                '"127.0.0.1:9101"',
                "host:port of its Prometheus endpoint (none: no endpoint).",
            ),
            Key(
                table,
                "peers",
                '{ "2" = "127.0.0.1:17102" }',
                "The address this node dials node <id> of its kind at instead of that node's addr "
                "(a proxy or NAT in between; clients and master hints still use addr).",
            ),
            Key(
                table,
                "cert",
                '"certs/store-1.pem"',
                "With [security], required: this member's certificate from the cluster CA "
                "(`phxq admin certs` makes them).",
            ),
            Key(table, "key", '"certs/store-1.key"', "The private key of cert."),
        )
    ),
    Key(
        "store",
        "set",
        "1",
        "The store set this store belongs to (default 1): each set is its own Paxos cluster "
        "running every group, with masters g % N among its own stores; with several sets each "
        "has 3 or 5 stores. A queue lives on one set (see [[topic]] sets).",
        defaults_kind=_NODE,
    ),
    Key(
        "topic",
        "name",
        '"orders"',
        "Topic name: letters, digits, '.', '_', '-'; at most 249 characters.",
        required=True,
    ),
    Key(
        "topic",
        "queues",
        "8",
        "Number of queues; a key always maps to the same queue (hash of the key mod queues).",
        required=True,
    ),
    Key(
        "topic",
        "sets",
        "[1]",
        "The store sets its queues are dealt over at first start, e.g. [1, 2]: queue q on "
        "sets[q % len] "
        "(default: every set). Later placement lives in the cluster map (phxq admin topic).",
    ),
    Key("topic", "retention", '"7d"', "How long messages are kept (by their enqueue time)."),
    Key("topic", "retention_bytes", '"10GiB"', "Per-queue size limit (none: unlimited)."),
    Key(
        "topic",
        "max_message_bytes",
        '"1MiB"',
        "Largest payload accepted (at most 8 MiB: a message must fit a frame).",
    ),
    Key("consumer_group", "name", '"billing"', "Consumer group name.", required=True),
    Key("consumer_group", "topic", '"orders"', "The topic it consumes (declared).", required=True),
    Key(
        "consumer_group",
        "handler",
        '"http://127.0.0.1:8080/hook"',
        'Where messages go: "http(s)://..." (POST; 2xx acks) or "package.module:function".',
        required=True,
    ),
    Key("consumer_group", "rate_limit", "500", "Messages/s (none: unlimited); runtime-adjustable."),
    Key("consumer_group", "rate_limit_bytes", "1048576", "Bytes/s (none: unlimited)."),
    Key("consumer_group", "max_attempts", "5", "Deliveries of one message before it fails."),
    Key(
        "consumer_group",
        "on_failure",
        '"dead_letter"',
        '"dead_letter" (to the dead-letter topic) or "block" (the queue stops and alerts).',
    ),
    Key(
        "consumer_group",
        "dead_letter",
        '"orders.dlq"',
        'Dead-letter topic (default "<topic>.dlq", added with the source topic\'s settings '
        'if not declared); not allowed with on_failure = "block".',
    ),
    Key(
        "consumer_group",
        "ordering",
        '"strict"',
        '"strict" (one message of a queue at a time) or "per_key" (keys in parallel).',
    ),
    Key("consumer_group", "concurrency", "1", "Messages in flight per queue; > 1 needs per_key."),
    Key("consumer_group", "handler_timeout", '"10s"', "How long one handler call may take."),
    Key(
        "consumer_group",
        "signing_secret_file",
        '"certs/billing.secret"',
        "A file holding this group's push secret: every HTTP push then carries a "
        "Phxq-Signature header (HMAC-SHA256, see docs/security.md).",
    ),
    Key(
        "producer_group", "name", '"checkout"', "Producer group name (transactions).", required=True
    ),
    Key(
        "producer_group",
        "check",
        '"http://127.0.0.1:8081/txn-check"',
        "Check-back handler asked about a transaction left undecided past its timeout: "
        '"http(s)://..." (POST; answers committed / rolled_back / unknown) or '
        '"package.module:function". None: such a transaction is rolled back at its timeout.',
    ),
    Key(
        "producer_group",
        "max_age",
        '"10m"',
        "A transaction still undecided this long after its prepare is rolled back (logged, "
        "phxq_txn_rolled_back_total{reason=max_age}).",
    ),
    Key("producer_group", "check_timeout", '"5s"', "How long one check-back call may take."),
    Key(
        "producer_group",
        "signing_secret_file",
        '"certs/checkout.secret"',
        "A file holding this group's secret: every HTTP check then carries a Phxq-Signature "
        "header (HMAC-SHA256, as consumer pushes).",
    ),
    Key(
        "security",
        "ca",
        '"certs/ca.pem"',
        "The cluster CA. With [security] every link is TLS and members must present a "
        "certificate it signed; without it: plaintext, no auth (a trusted lab only).",
        required=True,
    ),
    Key(
        "security",
        "cert",
        '"certs/member.pem"',
        "The member certificate of consumers and gateways started with this file.",
    ),
    Key("security", "key", '"certs/member.key"', "The private key of cert."),
    Key("principal", "name", '"billing-service"', "Who holds the token (logs).", required=True),
    Key(
        "principal",
        "token_sha256",
        '"' + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" + '"',
        "Hex SHA-256 of the token (`phxq admin token` prints a token and this line).",
        required=True,
    ),
    Key(
        "principal",
        "allow",
        '["produce:orders", "consume:orders:billing"]',
        '"produce:TOPIC", "consume:TOPIC:GROUP" (dequeue, commit, tail), "admin" or "*"; '
        '"*" in a name matches anything.',
        required=True,
    ),
    Key("client", "token_file", '"certs/admin.token"', "The token the CLI sends (with --config)."),
    Key("client", "ca", '"certs/ca.pem"', "The CA the CLI checks servers with ([security] ca)."),
    Key(
        "gateway",
        "listen",
        '"127.0.0.1:7301"',
        "Where `phxq gateway` serves HTTP (`--listen` overrides; default 127.0.0.1:7301).",
    ),
    Key("gateway", "max_body_bytes", '"16MiB"', "Largest request body; larger ones get 413."),
    Key(
        "gateway",
        "body_timeout",
        '"10s"',
        "How long a client may take to send a request body; slower ones get 408.",
    ),
    Key("gateway", "max_wait", '"60s"', "Longest long poll (`wait`) a caller may ask; <= 60s."),
    Key(
        "gateway",
        "max_in_flight",
        "1024",
        "Requests served at once (long polls and streams included); more get 429.",
    ),
    Key(
        "gateway",
        "cors_origins",
        '["https://app.example.com"]',
        'Browser origins (CORS) allowed to call the gateway, "scheme://host[:port]" or "*"; '
        "preflights from others get 403. Tokens are still required. Default: none.",
    ),
    Key(
        "consumer",
        "name",
        '"c1"',
        "The consumer daemon these settings are for (`phxq consumer --id NAME`).",
        required=True,
    ),
    Key(
        "consumer",
        "metrics_addr",
        '"127.0.0.1:9300"',
        "host:port of its Prometheus /metrics (`--metrics-addr` overrides); none: off.",
    ),
)

_SINGLE_TABLES: Final = ("cluster", "security", "client", "gateway")


def _default_text(key: Key) -> str:
    if key.required:
        return "required"
    default = key.default
    if default is None:
        return "none"
    return f'"{default}"' if isinstance(default, str) else str(default)


def render_markdown() -> str:
    """docs/configuration.md: one section per table, one row per key."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m phxq.config.reference`; do not edit by hand -->",
        "",
        "One TOML file configures every daemon and tool (`--config FILE`). Durations are a",
        'number of seconds or "250ms", "10s", "5m", "2h", "7d"; sizes are bytes or "512KiB",',
        '"64MiB", "1GiB". Unknown keys are errors, so a typo never silently becomes a default.',
        "`phxq` validates the whole file at start and names the file and key path of a problem.",
    ]
    tables: dict[str, list[Key]] = {}
    for key in REFERENCE:
        tables.setdefault(key.table, []).append(key)
    for table, keys in tables.items():
        header = f"[{table}]" if table in _SINGLE_TABLES else f"[[{table}]]"
        lines += ["", f"## `{header}`", "", "| key | default | example | meaning |"]
        lines.append("|---|---|---|---|")
        for key in keys:
            example = key.example.replace("|", "\\|")
            lines.append(f"| `{key.name}` | {_default_text(key)} | `{example}` | {key.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
