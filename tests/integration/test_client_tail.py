"""``Client.tail`` / ``SyncClient.tail`` and ``phxq tail`` against a real 3-store cluster:
read-only, from now by default, in order per queue, closed with the stream or the client."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys

import pytest

import phxq
from phxq.client import Client, Message
from phxq.devcluster import ProcessCluster

pytestmark = pytest.mark.integration


async def take(stream: phxq.client.stream.MessageStream, n: int) -> list[Message]:
    out: list[Message] = []
    async with asyncio.timeout(20):
        async for message in stream:
            out.append(message)
            if len(out) == n:
                break
    return out


async def test_tail_starts_now_keeps_queue_order_and_commits_nothing(
    cluster: ProcessCluster,
) -> None:
    async with Client(cluster.store_addresses) as client:
        await client.enqueue_many("orders", [(b"old-%d" % i, f"k{i % 5}") for i in range(20)])
        async with client.tail("orders") as stream:
            first = asyncio.ensure_future(take(stream, 40))
            await asyncio.sleep(0.3)  # the stream has started: these are "new"
            new = [(b"new-%d" % i, f"k{i % 5}") for i in range(40)]
            for i in range(0, 40, 8):  # several instances per queue
                await client.enqueue_many("orders", new[i : i + 8])
            got = await first
        assert sorted(m.payload for m in got) == sorted(p for p, _ in new)
        for key in {k for _, k in new}:  # each key's messages in enqueue order
            mine = [m.payload for m in got if m.key == key]
            assert mine == [p for p, k in new if k == key]
        for q in {m.queue for m in got}:
            offsets = [m.offset for m in got if m.queue == q]
            assert offsets == sorted(offsets)
        # From the start: the old ones first; and no consumer group cursor was ever written.
        everything = await take(client.tail("orders", from_="start"), 60)
        assert {m.payload for m in everything} >= {b"old-%d" % i for i in range(20)}
        assert [await client.cursor("g", "orders", queue=q) for q in range(8)] == [None] * 8


async def test_tail_from_an_offset_and_the_client_closes_open_streams(
    cluster: ProcessCluster,
) -> None:
    client = Client(cluster.store_addresses)
    acks = [await client.enqueue("orders", b"m%d" % i, queue=2) for i in range(5)]
    stream = client.tail("orders", from_=acks[2].offset, queues=[2])
    got = await take(stream, 3)
    assert [m.payload for m in got] == [b"m2", b"m3", b"m4"]
    waiting = asyncio.ensure_future(stream.__anext__())  # a long poll in flight
    await asyncio.sleep(0.2)
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


def test_sync_tail_cli_tail_json_and_cli_enqueue_lines_and_delay(cluster: ProcessCluster) -> None:
    servers = ",".join(cluster.store_addresses)
    with phxq.SyncClient(cluster.store_addresses) as client:
        ack = client.enqueue("orders", b"\xff\x00binary", key="b", headers={"h": "v"})
        with client.tail("orders", from_="start", queues=[ack.queue]) as stream:
            assert next(iter(stream)).payload == b"\xff\x00binary"
    out = subprocess.run(
        [
            *(sys.executable, "-m", "phxq", "tail", "-s", servers, "orders", "--from", "start"),
            *("--queue", str(ack.queue), "--count", "1", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    row = json.loads(out)
    assert base64.b64decode(row["payload_base64"]) == b"\xff\x00binary"
    assert row["payload"] is None and row["headers"] == {"h": "v"} and row["key"] == "b"

    # (Same cluster, to keep the suite short.) phxq enqueue --lines and --delay.
    base = [sys.executable, "-m", "phxq", "enqueue", "-s", servers, "orders", "--json"]
    out = subprocess.run(
        [*base, "--lines", "--queue", "5"],
        input="one\ntwo\nthree\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    acks = [json.loads(line) for line in out.splitlines()]
    assert [a["queue"] for a in acks] == [5, 5, 5] and all(a["offset"] for a in acks)
    delayed = subprocess.run(
        [*base, "--delay", "1h", "later"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    ack = json.loads(delayed)
    assert ack["offset"] is None and ack["scheduled_id"].startswith("orders/")
    with phxq.SyncClient(cluster.store_addresses) as client:
        payloads = [m.payload for m in client.dequeue(None, "orders", queue=5, limit=10)]
        assert payloads == [b"one", b"two", b"three"]
        assert client.cancel_scheduled(ack["scheduled_id"]) is True
