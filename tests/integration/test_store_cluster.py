"""The store cluster as users run it: real processes, real sockets, real fdatasync."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Any

import pytest

import phxq
from phxq.devcluster import ProcessCluster
from phxq.net.rpc import RpcPool
from phxq.routing import group_for_queue, queue_for_key

from .conftest import group_master, replica_views, wait_until

pytestmark = pytest.mark.integration

TOPIC = "orders"
QUEUES = 8


async def read_all(client: phxq.Client, topic: str = TOPIC) -> dict[int, list[phxq.Message]]:
    out: dict[int, list[phxq.Message]] = {}
    for q in range(QUEUES):
        msgs: list[phxq.Message] = []
        after = None
        while True:
            page = await client.dequeue(None, topic, queue=q, after=after, limit=1000)
            if not page:
                break
            msgs.extend(page)
            after = page[-1].offset
        out[q] = msgs
    return out


async def read_replica(pool: RpcPool, addr: str, queue: int) -> list[list[Any]]:
    """Every message of one queue as this replica has applied it (local read, any role)."""
    rows: list[list[Any]] = []
    after = None
    while True:
        page = await pool.call(
            addr,
            "dequeue",
            {
                "group": None,
                "topic": TOPIC,
                "queue": queue,
                "after": after,
                "limit": 1000,
                "local": True,
            },
            timeout=5.0,
        )
        if not page:
            return rows
        rows.extend(page)
        after = page[-1][0]


async def test_ten_thousand_messages_read_back_once_in_per_queue_order(
    cluster: ProcessCluster,
) -> None:
    async with phxq.Client(cluster.store_addresses) as client:
        sent: dict[int, list[bytes]] = defaultdict(list)
        acks: dict[bytes, phxq.Ack] = {}
        payloads = [(f"m{i}".encode(), f"user-{i % 97}") for i in range(10_000)]
        for start in range(0, len(payloads), 500):
            chunk = payloads[start : start + 500]
            results = await asyncio.gather(*(client.enqueue(TOPIC, p, key=k) for p, k in chunk))
            for (p, k), ack in zip(chunk, results, strict=True):
                assert ack.queue == queue_for_key(k, QUEUES)
                acks[p] = ack
        for p, k in payloads:
            sent[queue_for_key(k, QUEUES)].append(p)
        got = await read_all(client)
    assert sum(len(v) for v in got.values()) == 10_000
    for q, msgs in got.items():
        offsets = [m.offset for m in msgs]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        assert sorted(m.payload for m in msgs) == sorted(sent[q])
        for m in msgs:
            assert acks[m.payload].offset == m.offset and acks[m.payload].queue == q
        # one producer coroutine per key in each chunk: per-key order within a queue follows acks
        by_key: dict[str | None, list[int]] = defaultdict(list)
        for m in msgs:
            by_key[m.key].append(int(m.payload[1:]))
        for seq in by_key.values():
            assert seq == sorted(seq)


async def _produce(
    client: phxq.Client,
    stop: asyncio.Event,
    acked: list[tuple[bytes, phxq.Ack]],
    pauses: list[float],
) -> None:
    i = 0
    while not stop.is_set():
        payload = f"p{i}".encode()
        t0 = time.monotonic()
        ack = await client.enqueue(TOPIC, payload, queue=0, dedup_id=f"d{i}")
        pauses.append(time.monotonic() - t0)
        acked.append((payload, ack))
        i += 1


async def _check_every_replica_has(
    pool: RpcPool, cluster: ProcessCluster, acked: list[tuple[bytes, phxq.Ack]]
) -> None:
    expected = [(a.offset, p) for p, a in acked]

    async def converged() -> bool:
        for s in cluster.config.stores:
            rows = await read_replica(pool, s.addr, 0)
            have = {(r[0], bytes(r[1])) for r in rows}
            offsets = [r[0] for r in rows]
            assert offsets == sorted(offsets), f"store {s.id}: queue 0 out of order"
            if not set(expected) <= have:
                return False
        return True

    await wait_until(converged, 20, "every acked message on every replica")


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
async def test_producer_continues_through_master_fault(cluster: ProcessCluster, fault: str) -> None:
    group = group_for_queue(0, cluster.config.cluster.groups)
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        master = await group_master(pool, cluster, group)
        stop = asyncio.Event()
        acked: list[tuple[bytes, phxq.Ack]] = []
        pauses: list[float] = []
        producer = asyncio.create_task(_produce(client, stop, acked, pauses))
        await wait_until(
            lambda: asyncio.sleep(0, len(acked) > 200), 10, "200 acks before the fault"
        )
        (cluster.kill if fault == "sigkill" else cluster.pause)(master)
        before = len(acked)
        await wait_until(
            lambda: asyncio.sleep(0, len(acked) > before + 200), 20, "200 more acks after the fault"
        )
        new_master = await group_master(pool, cluster, group)
        assert new_master != master
        if fault == "sigkill":
            cluster.restart(master)
        else:
            cluster.resume(master)
        stop.set()
        await producer
        await wait_until(
            lambda: asyncio.sleep(0, cluster.alive(master)), 5, "the old master to be running"
        )
        await _check_every_replica_has(pool, cluster, acked)
    worst = max(pauses)
    print(f"{fault}: {len(acked)} acked; longest producer pause {worst * 1000:.0f} ms")
    assert worst < 10.0


async def test_restarted_replica_catches_up_and_serves_identical_data(
    cluster: ProcessCluster,
) -> None:
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        victim = 3
        cluster.kill(victim)
        acked = []
        for i in range(300):
            ack = await client.enqueue(TOPIC, f"x{i}".encode(), queue=0)
            acked.append((f"x{i}".encode(), ack))
        cluster.restart(victim)
        await _check_every_replica_has(pool, cluster, acked)

        async def same_chain() -> bool:
            views = await replica_views(pool, cluster)
            if len(views) != 3:
                return False
            for g in range(cluster.config.cluster.groups):
                chains = {
                    (v["groups"][g]["chosen_up_to"], v["groups"][g]["checksum"])
                    for v in views.values()
                }
                if len(chains) != 1:
                    return False
            return True

        await wait_until(
            same_chain, 20, "identical chosen_up_to and chain checksums on all replicas"
        )


async def test_committed_cursor_survives_master_failover(cluster: ProcessCluster) -> None:
    group = group_for_queue(3, cluster.config.cluster.groups)
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        for i in range(20):
            await client.enqueue(TOPIC, f"c{i}".encode(), queue=3)
        msgs = await client.dequeue("billing", TOPIC, queue=3, limit=100)
        assert len(msgs) == 20
        await client.commit("billing", TOPIC, queue=3, offset=msgs[11].offset, token=7)
        master = await group_master(pool, cluster, group)
        cluster.kill(master)
        assert await client.cursor("billing", TOPIC, queue=3) == msgs[11].offset
        rest = await client.dequeue("billing", TOPIC, queue=3, limit=100)
        assert [m.offset for m in rest] == [m.offset for m in msgs[12:]]
        with pytest.raises(phxq.StaleToken):
            await client.commit("billing", TOPIC, queue=3, offset=msgs[15].offset, token=6)
        assert await client.cursor("billing", TOPIC, queue=3) == msgs[11].offset


async def test_dedup_id_retried_across_failover_is_stored_once(cluster: ProcessCluster) -> None:
    group = group_for_queue(5, cluster.config.cluster.groups)
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        first = await client.enqueue(TOPIC, b"order-9001", queue=5, dedup_id="order-9001")
        master = await group_master(pool, cluster, group)
        cluster.kill(master)
        again = await client.enqueue(TOPIC, b"order-9001", queue=5, dedup_id="order-9001")
        assert again.offset == first.offset and again.duplicate
        msgs = await client.dequeue(None, TOPIC, queue=5, limit=100)
        assert [m.payload for m in msgs].count(b"order-9001") == 1


async def test_garbage_on_the_port_leaves_the_daemon_serving(cluster: ProcessCluster) -> None:
    host, port = cluster.store_address(1).rsplit(":", 1)
    rng = random.Random(7)
    for blob in [
        b"\xff" * 64,
        b"\x00\x00\x00\x05hello",
        b"GET / HTTP/1.1\r\n\r\n",
        (1 << 31).to_bytes(4, "big") + b"x",
        bytes(rng.randrange(256) for _ in range(4096)),
    ]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(blob)
        await writer.drain()
        await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
    async with RpcPool() as pool:
        for bad in [
            {"topic": 5},
            {"topic": "nope", "batches": [[0, [[b"x", None, {}, None]]]]},
            {"topic": TOPIC, "batches": [[99, [[b"x", None, {}, None]]]]},
            {"topic": TOPIC, "batches": [[0, [["not-bytes", None, {}, None]]]]},
        ]:
            with pytest.raises(phxq.ClientError):
                await pool.call(cluster.store_address(1), "enqueue", bad, timeout=5)
    async with phxq.Client(cluster.store_addresses) as client:
        ack = await client.enqueue(TOPIC, b"still alive", queue=1)
        msgs = await client.dequeue(None, TOPIC, queue=1, limit=10)
        assert [m.payload for m in msgs] == [b"still alive"] and msgs[0].offset == ack.offset


@pytest.fixture
def metrics_cluster(make_cluster: Any) -> tuple[ProcessCluster, list[int]]:
    from phxq.devcluster import free_ports

    ports = free_ports(3)
    return make_cluster(metrics_ports=ports), ports


async def test_each_store_serves_prometheus_metrics(metrics_cluster: Any) -> None:
    import aiohttp

    cluster, ports = metrics_cluster
    async with phxq.Client(cluster.store_addresses) as client:
        ack = await client.enqueue(TOPIC, b"measured", queue=0)
        cmap = await client.cluster_map()
    master_addr = cmap.nodes[cmap.masters[cmap.route(TOPIC, 0)]]
    port = ports[cluster.store_addresses.index(master_addr)]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    assert ack.offset > 0
    assert 'phxq_enqueued_messages_total{topic="orders"} 1.0' in text
    assert "phxq_enqueue_latency_seconds_count 1.0" in text
    assert "phxq_fsync_latency_seconds_count" in text


async def test_a_long_poll_dequeue_returns_when_a_message_arrives(cluster: ProcessCluster) -> None:
    async with phxq.Client(cluster.store_addresses) as client:
        first = await client.enqueue(TOPIC, b"before", queue=2)
        started = time.monotonic()
        assert await client.dequeue(None, TOPIC, queue=2, after=first.offset, wait=0.3) == []
        assert time.monotonic() - started >= 0.25  # it did wait
        reader = asyncio.ensure_future(
            client.dequeue(None, TOPIC, queue=2, after=first.offset, wait=20)
        )
        await asyncio.sleep(0.2)
        assert not reader.done()
        second = await client.enqueue(TOPIC, b"after", queue=2)
        msgs = await asyncio.wait_for(reader, 10)  # far below the 20 s wait: woken by the apply
        assert [(m.offset, m.payload) for m in msgs] == [(second.offset, b"after")]
        with pytest.raises(phxq.BadArgument):
            await client.dequeue(None, TOPIC, queue=2, wait=-1)


async def test_a_compare_and_set_commit_never_overwrites_an_unseen_replay(
    cluster: ProcessCluster,
) -> None:
    async with phxq.Client(cluster.store_addresses) as client:
        acks = [await client.enqueue(TOPIC, f"r{i}".encode(), queue=4) for i in range(5)]
        await client.commit("billing", TOPIC, queue=4, offset=acks[1].offset, token=3, expect=None)
        await client.seek("billing", TOPIC, queue=4, offset=acks[0].offset)  # admin replay
        with pytest.raises(phxq.VersionMismatch):  # the owner still believes acks[1]
            await client.commit(
                "billing", TOPIC, queue=4, offset=acks[3].offset, token=3, expect=acks[1].offset
            )
        cursor = await client.cursor("billing", TOPIC, queue=4)
        assert cursor == acks[0].offset - 1
        await client.commit(
            "billing", TOPIC, queue=4, offset=acks[2].offset, token=3, expect=cursor
        )
        assert await client.cursor("billing", TOPIC, queue=4) == acks[2].offset
