"""Each daemon role exports only its own series (phxq.metrics.registry_for), and every metric
belongs to some role, so none is silently never served."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import generate_latest

from phxq import metrics
from phxq.devcluster import free_ports
from phxq.errors import BadArgument


def names(role: str) -> set[str]:
    return {m.name for m in metrics.registry_for(role).collect()}


def test_each_role_exports_only_its_own_series() -> None:
    store, lock, consumer = names("store"), names("lock"), names("consumer")
    assert "phxq_enqueue_latency_seconds" in store and "phxq_fsync_latency_seconds" in store
    assert not any(n.startswith("phxq_consumer_") for n in store | lock)
    assert "phxq_fsync_latency_seconds" in lock and "phxq_masters_held" in lock
    assert "phxq_enqueue_latency_seconds" not in lock and "phxq_scheduled_pending" not in lock
    assert "phxq_consumer_handler_latency_seconds" in consumer
    assert "phxq_fsync_latency_seconds" not in consumer and "phxq_masters_held" not in consumer
    assert "phxq_auth_refused" in store & lock & consumer  # every role checks credentials


def test_every_metric_is_served_by_some_role() -> None:
    every = {m.name for m in metrics.REGISTRY.collect()}
    served = set().union(*(names(role) for role in metrics.ROLES))
    assert every == served, every ^ served


def test_a_role_registry_shows_what_the_daemon_records_and_serves_it_over_http() -> None:
    metrics.CONSUMER_ACKED.labels("metrics-test-group").inc(3)
    text = generate_latest(metrics.registry_for("consumer")).decode()
    assert 'phxq_consumer_acked_total{group="metrics-test-group"} 3.0' in text
    assert "metrics-test-group" not in generate_latest(metrics.registry_for("store")).decode()
    (port,) = free_ports(1)
    metrics.serve(f"127.0.0.1:{port}", "consumer")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'group="metrics-test-group"' in body and "phxq_enqueue_latency" not in body


def test_an_unknown_role_is_a_bad_argument() -> None:
    with pytest.raises(BadArgument):
        metrics.registry_for("gateway-typo")
