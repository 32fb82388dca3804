"""Through the gateway while a store master is SIGKILLed: an HTTP producer that gives up on a
request after a short timeout and retries it with the same ``Phxq-Dedup-Id`` never stores a
message twice, and loses none it was acked for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from phxq.client import Client
from phxq.devcluster import ProcessCluster

from .conftest import wait_until
from .gateway_cluster import gateway_cluster

pytestmark = pytest.mark.integration

MESSAGES = 160
WORKERS = 8
HTTP_TIMEOUT = 0.4  # shorter than a failover: requests are abandoned and retried mid-flight
QUEUES = 8


@pytest.fixture
def gw(tmp_path) -> Iterator[ProcessCluster]:
    yield from gateway_cluster(tmp_path / "c", extra="")


async def masters(client: Client, gw: ProcessCluster) -> dict[int, int]:
    """Group -> master store, as the live stores report it."""
    out: dict[int, int] = {}
    for store in gw.config.stores:
        if gw.alive(store.id):
            for g in (await client.status(store.addr))["groups"]:
                if g["is_master"]:
                    out[g["group"]] = store.id
    return out


async def test_http_retries_with_the_same_dedup_id_never_duplicate_across_a_master_kill(gw):
    url = f"{gw.gateway_url}/v1/topics/orders/messages"
    acks: dict[int, tuple[int, int]] = {}
    retries = 0
    dups: list[bool] = []
    todo: asyncio.Queue[int] = asyncio.Queue()
    for i in range(MESSAGES):
        todo.put_nowait(i)

    async def produce(http: aiohttp.ClientSession) -> None:
        nonlocal retries
        while not todo.empty():
            i = todo.get_nowait()
            headers = {"Phxq-Dedup-Id": f"f-{i}", "Phxq-Key": f"k{i % 32}"}
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, f"message {i} never acked"
                try:
                    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
                    async with http.post(
                        url, data=f"f-{i}", headers=headers, timeout=timeout
                    ) as resp:
                        if resp.status == 200:
                            ack = await resp.json()
                            acks[i] = (ack["queue"], ack["offset"])
                            dups.append(ack["duplicate"])
                            break
                        assert resp.status in (429, 503), await resp.text()
                except (TimeoutError, aiohttp.ClientError):
                    pass  # outcome unknown: the same dedup id makes the retry safe
                retries += 1
                await asyncio.sleep(0.05)

    async with Client(gw.store_addresses) as native, aiohttp.ClientSession() as http:
        producers = [asyncio.ensure_future(produce(http)) for _ in range(WORKERS)]

        async def some_acked() -> bool:
            return len(acks) >= MESSAGES // 4

        await wait_until(some_acked, 30, "the first acks")
        victim = (await masters(native, gw))[0]  # the master of group 0 (and of others)
        gw.kill(victim)
        await asyncio.gather(*producers)
        gw.restart(victim)

        assert len(acks) == MESSAGES and retries > 0
        stored: dict[str, list[tuple[int, int]]] = {}
        for q in range(QUEUES):
            for m in await native.dequeue(None, "orders", queue=q, limit=10_000):
                stored.setdefault(m.payload.decode(), []).append((q, m.offset))
    twice = {p: where for p, where in stored.items() if len(where) > 1}
    # (A typical run retries a few dozen requests; several retries of stored messages are
    # answered as duplicates: the dedup window at work.)
    assert twice == {}, f"stored more than once: {twice} ({sum(dups)} duplicate acks)"
    assert {f"f-{i}": [where] for i, where in acks.items()} == stored
