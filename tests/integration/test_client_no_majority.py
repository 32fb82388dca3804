"""A cluster with no majority gives ``Unavailable`` saying so, within the call's ``timeout``
(issue 20): two of three real stores are down -- one SIGKILLed, one SIGSTOPped -- and every
client call gives up on time, naming the store that answered and the two that did not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import phxq
from phxq.devcluster import ProcessCluster
from phxq.errors import Unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def two_groups(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(nodes=3, groups=2)


async def test_no_majority_is_reported_within_the_timeout(two_groups: ProcessCluster) -> None:
    cluster = two_groups
    addrs = [s.addr for s in cluster.config.stores]
    async with phxq.Client(addrs, retry_timeout=30.0) as client:
        ack = await client.enqueue("orders", b"before", queue=0)
        assert ack.offset is not None
        cluster.kill(2)
        cluster.pause(3)

        async def gives_up(call: Callable[[], object], budget: float) -> Unavailable:
            started = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await call()  # type: ignore[misc]
            took = time.monotonic() - started
            assert took <= budget + 0.5, f"{took:.2f}s for a {budget}s timeout"
            return info.value

        err = await gives_up(lambda: client.enqueue("orders", b"x", queue=0, timeout=2.0), 2.0)
        text = str(err)
        assert "no majority" in text, text
        assert "1 of 3 answered" in text, text
        assert f"store 1 ({addrs[0]})" in text.split("no answer:")[0], text
        silent = text.split("no answer:")[1]
        assert f"store 2 ({addrs[1]})" in silent and f"store 3 ({addrs[2]})" in silent, text
        assert err.data["silent"] == addrs[1:], err.data

        # Every call that talks to the cluster is bounded the same way.
        for call in (
            lambda: client.enqueue_many("orders", [(b"a", "k"), (b"b", "k")], timeout=1.5),
            lambda: client.dequeue(None, "orders", queue=1, timeout=1.5),
            lambda: client.cursor("billing", "orders", queue=1, timeout=1.5),
            lambda: client.commit("billing", "orders", queue=1, offset=0, token=1, timeout=1.5),
            lambda: client.seek("billing", "orders", queue=1, offset=0, timeout=1.5),
        ):
            err = await gives_up(call, 1.5)
            assert "no majority" in str(err), str(err)

        txn = client.transaction()
        await txn.enqueue("orders", b"t", queue=0)
        err = await gives_up(lambda: txn.commit(timeout=1.5), 1.5)
        assert "no majority" in str(err), str(err)

    # The client's retry budget is the default timeout; SyncClient takes timeout= too.
    async with phxq.Client(addrs, retry_timeout=1.5) as client:
        err = await gives_up(lambda: client.enqueue("orders", b"y", queue=1), 1.5)
        assert "no majority" in str(err), str(err)

    def sync_call() -> None:
        with phxq.SyncClient(addrs) as sync:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="no majority"):
                sync.enqueue("orders", b"z", queue=0, timeout=1.5)
            assert time.monotonic() - started <= 2.0

    await asyncio.to_thread(sync_call)

    # Back to a majority: the same client calls succeed again.
    cluster.resume(3)
    async with phxq.Client(addrs) as client:
        ack = await client.enqueue("orders", b"after", queue=0, timeout=20.0)
        assert ack.offset is not None and ack.offset > 0
