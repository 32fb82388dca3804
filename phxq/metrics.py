"""Every Prometheus metric phxq exports, in one place (STYLE.md §13).

:func:`serve` exposes one daemon role's registry over HTTP at ``metrics_addr`` (``GET
/metrics``): a store serves the replication and store series, a lock node the replication
series, a consumer the consumer series, each with the security series. So a daemon exports only
its own series, also when several roles share a process (tests, embedding). :data:`REGISTRY`
holds every metric (for tests reading sample values). Metric names are part of the operator
surface: keep them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from phxq.errors import BadArgument

REGISTRY = CollectorRegistry()

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

ENQUEUE_LATENCY = Histogram(
    "phxq_enqueue_latency_seconds",
    "Time from receiving an enqueue request to its instance being chosen and applied (master)",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENQUEUED = Counter(
    "phxq_enqueued_messages_total", "Messages acked to producers", ["topic"], registry=REGISTRY
)
BATCH_ITEMS = Histogram(
    "phxq_batch_items",
    "Items per chosen Paxos instance",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
FSYNC_LATENCY = Histogram(
    "phxq_fsync_latency_seconds",
    "fdatasync latency of the PLog writer",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CATCHUP_LAG = Gauge(
    "phxq_catchup_lag_instances",
    "Known chosen minus learned instances per group",
    ["group"],
    registry=REGISTRY,
)
STORE_INFO = Gauge(
    "phxq_store_info",
    "1 per store process, labelled with its node id and store set (join on it for per-set views)",
    ["node", "set"],
    registry=REGISTRY,
)
MASTERS_HELD = Gauge("phxq_masters_held", "Groups this node is master of", registry=REGISTRY)
DIVERGENCE = Counter(
    "phxq_divergence_total", "Chain checksum mismatches detected", ["group"], registry=REGISTRY
)
REPLICA_NOT_VOTING = Gauge(
    "phxq_replica_not_voting",
    "1 while this node's replica of a group rebuilds from its peers (joining or repairing)",
    ["group"],
    registry=REGISTRY,
)
STORAGE_FAILURES = Counter(
    "phxq_storage_failures_total",
    "Groups that stopped serving on a storage error",
    ["group"],
    registry=REGISTRY,
)
RETENTION_FORCED = Counter(
    "phxq_retention_forced_total",
    "Truncations by retention that dropped messages a consumer group had not consumed",
    ["group"],
    registry=REGISTRY,
)
FIRST_INSTANCE = Gauge(
    "phxq_first_instance",
    "First instance retained in the group's log",
    ["group"],
    registry=REGISTRY,
)
BAD_PEER_MESSAGES = Counter(
    "phxq_bad_peer_messages_total",
    "Peer notifications dropped (malformed, or for no group or member here), by kind",
    ["kind"],
    registry=REGISTRY,
)


# --------------------------------------------------------------------- consumer tier

CONSUMER_DELIVERED = Counter(
    "phxq_consumer_delivered_total",
    "Handler attempts started (every retry counts)",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_ACKED = Counter(
    "phxq_consumer_acked_total", "Messages a handler acked", ["group"], registry=REGISTRY
)
CONSUMER_FAILED = Counter(
    "phxq_consumer_failed_total",
    "Handler attempts that failed (error, non-2xx, timeout)",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_DEAD_LETTERED = Counter(
    "phxq_consumer_dead_lettered_total",
    "Messages moved to the dead-letter topic after max_attempts",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_HANDLER_LATENCY = Histogram(
    "phxq_consumer_handler_latency_seconds",
    "Duration of one handler attempt",
    ["group"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "phxq_consumer_lag_messages",
    "Messages after the committed cursor of each pair this consumer owns (refreshed every 5 s "
    "from the queue's master)",
    ["group", "topic", "queue"],
    registry=REGISTRY,
)
CONSUMER_PAIRS_OWNED = Gauge(
    "phxq_consumer_pairs_owned",
    "Pairs whose lock this consumer holds",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_BLOCKED = Gauge(
    "phxq_consumer_blocked",
    "1 while a pair is stopped on a message that exhausted max_attempts (on_failure=block)",
    ["group", "topic", "queue"],
    registry=REGISTRY,
)
CONSUMER_LEASES_LOST = Counter(
    "phxq_consumer_leases_lost_total",
    "Pair locks lost while owned (the pair stopped at once)",
    ["group"],
    registry=REGISTRY,
)

AUTH_REFUSED = Counter(
    "phxq_auth_refused_total",
    "Requests and notifications refused as unauthenticated or forbidden",
    ["service"],
    registry=REGISTRY,
)
CERT_EXPIRES = Gauge(
    "phxq_cert_expiry_timestamp_seconds",
    "When this process's member certificate expires (seconds since the epoch)",
    ["cert"],
    registry=REGISTRY,
)


SCHEDULED_PENDING = Gauge(
    "phxq_scheduled_pending",
    "Scheduled messages not yet released, per group this node masters (0 elsewhere)",
    ["group"],
    registry=REGISTRY,
)
RELEASE_LAG = Gauge(
    "phxq_release_lag_seconds",
    "How overdue the earliest pending scheduled message is, per group this node masters",
    ["group"],
    registry=REGISTRY,
)
SCHEDULED_ROLLED = Counter(
    "phxq_scheduled_rolled_total",
    "Pending scheduled messages copied further on so retention could truncate their records",
    registry=REGISTRY,
)
RELEASE_LATENESS = Histogram(
    "phxq_release_lateness_seconds",
    "Release stamp minus due time of each released scheduled message",
    buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
    registry=REGISTRY,
)
TXN_OPEN = Gauge(
    "phxq_txn_open",
    "Transactions with half messages in the groups this node masters",
    registry=REGISTRY,
)
TXN_COMMITTED = Counter(
    "phxq_txn_committed_total", "Transactions decided commit (home groups)", registry=REGISTRY
)
TXN_ROLLED_BACK = Counter(
    "phxq_txn_rolled_back_total",
    "Transactions decided rollback (home groups), by why: producer, check, timeout, max_age, "
    "operator",
    ["reason"],
    registry=REGISTRY,
)
TXN_CHECKS = Counter(
    "phxq_txn_checks_total",
    "Check-back answers of producer groups' handlers: committed, rolled_back, unknown",
    ["answer"],
    registry=REGISTRY,
)

GATEWAY_REQUESTS = Counter(
    "phxq_gateway_requests_total",
    "HTTP requests the gateway answered, by operation (route) and status",
    ["operation", "status"],
    registry=REGISTRY,
)
GATEWAY_LATENCY = Histogram(
    "phxq_gateway_request_seconds",
    "Time the gateway took to answer (a stream: its whole life), by operation",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GATEWAY_IN_FLIGHT = Gauge(
    "phxq_gateway_in_flight",
    "Requests the gateway is serving (streams included)",
    registry=REGISTRY,
)


_REPLICATED = (
    FSYNC_LATENCY,
    BATCH_ITEMS,
    CATCHUP_LAG,
    MASTERS_HELD,
    DIVERGENCE,
    REPLICA_NOT_VOTING,
    STORAGE_FAILURES,
    BAD_PEER_MESSAGES,
)
_STORE = (
    STORE_INFO,
    ENQUEUE_LATENCY,
    ENQUEUED,
    RETENTION_FORCED,
    FIRST_INSTANCE,
    SCHEDULED_PENDING,
    SCHEDULED_ROLLED,
    RELEASE_LAG,
    RELEASE_LATENESS,
    TXN_OPEN,
    TXN_COMMITTED,
    TXN_ROLLED_BACK,
    TXN_CHECKS,
)
_CONSUMER = (
    CONSUMER_DELIVERED,
    CONSUMER_ACKED,
    CONSUMER_FAILED,
    CONSUMER_DEAD_LETTERED,
    CONSUMER_HANDLER_LATENCY,
    CONSUMER_LAG,
    CONSUMER_PAIRS_OWNED,
    CONSUMER_BLOCKED,
    CONSUMER_LEASES_LOST,
)
_EVERY_ROLE = (AUTH_REFUSED, CERT_EXPIRES)
ROLES: dict[str, tuple[object, ...]] = {
    "store": (*_REPLICATED, *_STORE, *_EVERY_ROLE),
    "lock": (*_REPLICATED, *_EVERY_ROLE),
    "consumer": (*_CONSUMER, *_EVERY_ROLE),
    "gateway": (GATEWAY_REQUESTS, GATEWAY_LATENCY, GATEWAY_IN_FLIGHT, *_EVERY_ROLE),
}


def registry_for(role: str) -> CollectorRegistry:
    """A registry of ``role``'s series only (``"store"``, ``"lock"``, ``"consumer"`` or
    ``"gateway"``);
    ``BadArgument`` for another role. The metrics are the same objects as in
    :data:`REGISTRY`: what a daemon records shows up in its role's registry."""
    collectors = ROLES.get(role)
    if collectors is None:
        raise BadArgument(f"no metrics role {role!r}; roles: {', '.join(ROLES)}")
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return registry


def serve(addr: str, role: str) -> None:
    """Serve ``role``'s series (:func:`registry_for`) at ``http://addr/metrics`` from a
    background thread."""
    host, port = addr.rsplit(":", 1)
    start_http_server(int(port), addr=host, registry=registry_for(role))
