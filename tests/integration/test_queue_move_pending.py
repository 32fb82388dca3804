"""A queue move waits for the delayed messages pending on the old set (real processes): the
seal is refused while one is pending, ``phxq admin status`` says why, and once the message is
released the move completes by itself; the message is read exactly once, below the seal."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import phxq
from phxq import admin
from phxq.devcluster import ProcessCluster

from .conftest import wait_until

pytestmark = pytest.mark.integration

TOPIC, QUEUE, CG = "orders", 0, "readers"
DELAY = 3.0


@pytest.fixture
def two_sets(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(nodes=3, groups=2, sets=2, locks=True, wait_locks=True)


async def test_a_move_waits_for_a_pending_delayed_message(two_sets: ProcessCluster) -> None:
    cluster = two_sets
    cfg = cluster.config
    async with phxq.Client(cluster.store_addresses, retry_timeout=20) as client:
        await wait_until(lambda: client.cluster_map(refresh=True), 20, "the cluster map")
        later = await client.enqueue(TOPIC, b"later", queue=QUEUE, delay=DELAY)
        due = time.monotonic() + DELAY
        row = await admin.queue_move(cfg, TOPIC, QUEUE, 2, wait=False)
        assert row["state"] == "pending"

        async def waiting() -> str | None:
            moves = (await admin.status(cfg)).moves()
            reason = moves[0]["waiting"] if moves else None
            return reason if reason and "MoveBlocked" in reason else None

        reason = await wait_until(waiting, 15, "admin status showing why the move waits")
        assert "1 scheduled and 0 transactional messages pending" in reason
        assert time.monotonic() < due  # it waited for the message, not for anything else
        assert (await client.cluster_map(refresh=True)).route(TOPIC, QUEUE)[0] == 1

        async def moved() -> bool:
            return (await client.cluster_map(refresh=True)).route(TOPIC, QUEUE)[0] == 2

        await wait_until(moved, 20, "the move to complete after the release")
        assert time.monotonic() >= due
        sealed = (await client.cluster_map()).history[TOPIC][QUEUE][-1][1]
        after_move = await client.enqueue(TOPIC, b"after", queue=QUEUE)
        assert after_move.offset is not None and after_move.offset > sealed
        read: list[phxq.Message] = []
        after: int | None = None
        deadline = time.monotonic() + 15
        while len(read) < 2 and time.monotonic() < deadline:
            page = await client.dequeue(CG, TOPIC, queue=QUEUE, after=after, limit=10, wait=0.2)
            if page:
                read.extend(page)
                after = page[-1].offset
        assert [m.payload for m in read] == [b"later", b"after"], read
        assert read[0].offset <= sealed < read[1].offset == after_move.offset
        assert later.queue == QUEUE
        assert await client.dequeue(CG, TOPIC, queue=QUEUE, after=after, limit=10) == []
