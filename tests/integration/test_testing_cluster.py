"""phxq.testing.LocalCluster: a cluster in the test's own event loop, for users' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import phxq
from phxq.lock import LockClient
from phxq.testing import LocalCluster

pytestmark = pytest.mark.integration


async def test_a_local_cluster_serves_the_client_and_the_lock_service(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, groups=2, locks=True) as cluster:
        assert cluster.config_path.exists() and len(cluster.addresses) == 3
        async with phxq.Client(cluster.addresses) as client:
            ack = await client.enqueue("orders", b"hello", key="k")
            got = await client.dequeue(None, "orders", queue=ack.queue, limit=10)
            assert [m.payload for m in got] == [b"hello"]
        locks = LockClient(cluster.lock_addresses)
        try:
            assert await locks.acquire("job", "me", ttl=5.0) >= 1
        finally:
            await locks.close()
    # Every node stopped: its ports are free again.
    with pytest.raises(phxq.Unavailable):
        async with phxq.Client(cluster.addresses, retry_timeout=0.5) as client:
            await client.enqueue("orders", b"late")
