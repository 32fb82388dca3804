"""The consumer tier follows the cluster map online, with real processes: a topic altered to
more queues and a consumer group created (``phxq admin group create``) while a consumer daemon
(``python -m phxq consumer``) runs; the new queues and the new group are delivered without
restarting anything, and the group deleted online (``phxq admin group delete``) is no longer
served (its queue locks released)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from phxq import admin
from phxq.client import Client
from phxq.config import ClusterConfig
from phxq.consumer.assign import pair_lock_name
from phxq.devcluster import ProcessCluster
from phxq.lock import LockClient
from tests.integration import test_consumer_delivery as delivery
from tests.integration.conftest import phxq_admin, wait_until
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
        assert "cluster map version" in cluster.logs("consumer", "c1", tail=2000)

        # A consumer group created online (the CLI), served by the running daemon: from its
        # first message on (a new group starts at the beginning of each queue).
        hook = f"http://127.0.0.1:{handler_port}/hook"
        out = await phxq_admin(
            cluster, "group", "create", "audit", "--topic", TOPIC, "--handler", hook
        )
        assert out.startswith(f"audit: topic {TOPIC} -> {hook}")
        listed = {r["name"]: r for r in await admin.group_list(cluster.config)}
        assert set(listed) == {"billing", "audit"}
        assert listed["audit"]["dead_letter"] == f"{TOPIC}.dlq"
        await client.enqueue(TOPIC, b"both groups", queue=2)
        # Every message, old and new, now delivered once per group.
        await wait_until(
            lambda: _true(_counts(recorder) == {2: 9}),
            15,
            "the new group delivered by the running consumer",
        )
        assert _counts(recorder) == {2: 9}
        # The admin commands know the group created online (through the map).
        cfg = cluster.config
        limit = await admin.set_limit(cfg, "audit", messages=1000.0)
        assert limit == {"messages": 1000.0, "bytes": None, "source": "runtime"}
        rows = await wait_until(lambda: _settled(cfg, "audit"), 15, "audit's lag reported as 0")
        assert sorted(r.queue for r in rows) == list(range(10))

        # Client.consume follows the map as well: a queue added while the loop runs.
        locks = [lk.addr for lk in cfg.locks]
        async with Client(cluster.store_addresses, locks=locks) as reader:
            got: list[bytes] = []

            async def read() -> None:
                async for msg in reader.consume("readers", TOPIC):
                    got.append(msg.payload)
                    if msg.payload == b"after-alter":
                        return

            reading = asyncio.ensure_future(read())
            await wait_until(lambda: _true(len(got) == 9), 15, "the stream reading")
            await admin.topic_alter(cfg, TOPIC, queues=12)
            await client.enqueue(TOPIC, b"after-alter", queue=11)
            await asyncio.wait_for(reading, 15)

        # Deleted online (the CLI): the daemon hands audit's queues over (their locks released
        # by the handoff, not left to expire) and delivers new messages to billing only.
        out = await phxq_admin(cluster, "group", "delete", "audit")
        assert out.startswith("audit: deleted (topic")
        assert [r["name"] for r in await admin.group_list(cfg)] == ["billing"]
        async with LockClient(locks) as lock_client:
            names = [pair_lock_name(("audit", TOPIC, q)) for q in range(12)]
            await wait_until(
                lambda: _released(lock_client, names), 10, "audit's queue locks released"
            )
            await client.enqueue(TOPIC, b"after-delete", queue=2)
            await wait_until(
                lambda: _true(b"after-delete" in recorder.acked_payloads()), 15, "billing"
            )
            assert await _released(lock_client, names)  # nobody took audit's queues back
            # ... and its membership no longer announces audit (others do not count on it).
            await wait_until(
                lambda: _announces(lock_client, "c1", ["billing"]), 10, "c1's heartbeat"
            )
        assert recorder.acked_payloads()[b"after-delete"] == 1
        assert "consumer group audit deleted" in cluster.logs("consumer", "c1", tail=2000)
    assert {h.consumer for h in recorder.hits} == {"c1"}


async def _released(locks: LockClient, names: list[str]) -> bool:
    return all([await locks.get(name) is None for name in names])


async def _announces(locks: LockClient, consumer: str, groups: list[str]) -> bool:
    value, _ = await locks.kv_get(f"consumers/{consumer}")
    return value is not None and value["groups"] == groups


async def _settled(cfg: ClusterConfig, group: str) -> list[admin.LagRow] | None:
    rows = await admin.lag(cfg, group=group)
    return rows if rows and all(r.lag == 0 for r in rows) else None


def _counts(recorder: Recorder) -> dict[int, int]:
    """How many payloads were acked how many times ({2: 9}: nine, each twice)."""
    return dict(Counter(recorder.acked_payloads().values()))


async def _true(value: bool) -> bool:
    return value
