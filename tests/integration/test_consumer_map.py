"""The consumer tier follows the cluster map online, with real processes: a topic altered to
more queues while a consumer daemon (``python -m phxq consumer``) runs; the messages enqueued on
the new queues reach the handler without restarting anything."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from phxq import admin
from phxq.client import Client
from phxq.devcluster import ProcessCluster
from tests.integration import test_consumer_delivery as delivery
from tests.integration.conftest import wait_until
from tests.integration.test_consumer_delivery import TOPIC, Recorder, consumer_cluster

pytestmark = pytest.mark.integration

handler_port = delivery.handler_port  # the fixtures: an HTTP handler recording every request
recorder = delivery.recorder


async def test_a_running_consumer_delivers_queues_added_online(
    make_cluster: Callable[..., ProcessCluster], handler_port: int, recorder: Recorder
) -> None:
    cluster = await consumer_cluster(make_cluster, handler_port)
    cluster.start_node("consumer", "c1")
    async with Client(cluster.store_addresses) as client:
        await client.enqueue(TOPIC, b"before", queue=7)
        await wait_until(
            lambda: _true(b"before" in recorder.acked_payloads()), 20, "the consumer delivering"
        )
        row = await admin.topic_alter(cluster.config, TOPIC, queues=10)
        assert row["queues"] == 10
        new = [(await client.enqueue(TOPIC, f"new-{q}".encode(), queue=q)) for q in (8, 9)]
        assert [a.queue for a in new] == [8, 9]
        await wait_until(
            lambda: _true({b"new-8", b"new-9"} <= set(recorder.acked_payloads())),
            15,
            "the new queues delivered by the running consumer",
        )
        # And with the order and exactly-once of any other queue.
        more = [(await client.enqueue(TOPIC, f"more-{i}".encode(), queue=9)) for i in range(5)]
        await wait_until(
            lambda: _true(len(recorder.acked_payloads()) == 8), 15, "the rest delivered"
        )
    hits = [h for h in recorder.acked() if h.queue == 9]
    assert [h.offset for h in hits] == [new[1].offset, *(a.offset for a in more)]
    assert max(recorder.acked_payloads().values()) == 1
    assert {h.consumer for h in recorder.hits} == {"c1"}
    assert "cluster map version" in cluster.logs("consumer", "c1", tail=2000)


async def _true(value: bool) -> bool:
    return value
