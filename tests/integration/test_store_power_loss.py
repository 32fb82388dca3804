"""Every store of a cluster loses power at once, under load: acknowledged messages survive.

A SIGKILL keeps the page cache, so a power loss is stood in for by SIGKILLing all three stores
and then zeroing, in each data directory, every segment byte the store's journal covers (the
bytes whose only synced copy was the journal record: ``journaled_ranges``). Restarted, the
stores redo the journal and must serve every acknowledged message at its acknowledged offset.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

import phxq
from phxq.devcluster import ProcessCluster
from phxq.plog.journal import journaled_ranges
from tests.integration.conftest import wait_until

TOPIC = "orders"


def _lose_unsynced_pages(data: Path) -> int:
    """Zero what a power loss could take from the segment files; returns the bytes zeroed."""
    lost = 0
    for path, offset, length in journaled_ranges(data):
        if not path.exists():
            continue
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(length), offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        lost += length
    return lost


@pytest.fixture
def cluster8(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=8)


async def test_acked_messages_survive_every_store_losing_its_unsynced_pages(
    cluster8: ProcessCluster,
) -> None:
    cluster = cluster8
    acked: dict[bytes, phxq.Ack] = {}
    async with phxq.Client(cluster.store_addresses) as client:
        # Concurrent producers over every queue: writer batches span several groups, so they
        # go through the journal.
        for start in range(0, 3000, 300):
            payloads = [f"m{i}".encode() for i in range(start, start + 300)]
            acks = await asyncio.gather(
                *(client.enqueue(TOPIC, p, key=f"k{i % 37}") for i, p in enumerate(payloads))
            )
            acked.update(zip(payloads, acks, strict=True))
    for store in cluster.config.stores:
        cluster.kill(store.id)
    lost = {s.id: _lose_unsynced_pages(Path(s.data)) for s in cluster.config.stores}
    assert all(n > 0 for n in lost.values()), f"nothing was journaled: {lost}"
    for store in cluster.config.stores:
        cluster.restart(store.id)
    await cluster.wait_ready_async(timeout=60)

    async with phxq.Client(cluster.store_addresses) as client:
        by_queue: dict[int, dict[int, bytes]] = defaultdict(dict)

        async def read_all() -> bool:
            by_queue.clear()
            for q in {a.queue for a in acked.values()}:
                after = None
                while True:
                    page = await client.dequeue(None, TOPIC, queue=q, after=after, limit=1000)
                    if not page:
                        break
                    by_queue[q].update((m.offset, m.payload) for m in page)
                    after = page[-1].offset
            return sum(len(v) for v in by_queue.values()) >= len(acked)

        await wait_until(read_all, 30, "every acknowledged message readable again")
    for payload, ack in acked.items():
        assert by_queue[ack.queue].get(ack.offset) == payload, (payload, ack)
