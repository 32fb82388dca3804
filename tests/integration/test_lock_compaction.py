"""Lock log compaction: a lock daemon (in this process, real files and sockets) snapshots its
state, drops old log segments, and a restart recovers leases and KV from snapshot + log."""

from __future__ import annotations

from pathlib import Path

import pytest

from phxq.config import load_config
from phxq.devcluster import free_ports, write_dev_config
from phxq.errors import LockHeld
from phxq.lock import LockClient
from phxq.lock.node import LockNode

from .conftest import wait_until

pytestmark = pytest.mark.integration


async def test_compaction_truncates_the_log_and_a_restart_recovers_from_the_snapshot(
    tmp_path: Path,
) -> None:
    store_port, lock_port = free_ports(2)
    path = write_dev_config(
        tmp_path,
        nodes=1,
        store_ports=[store_port],
        lock_ports=[lock_port],
        cluster_options='segment_bytes = "8KiB"\nretention_interval = "1h"',
    )
    cfg = load_config(path)
    addr = cfg.lock(1).addr
    async with LockNode(cfg, 1) as node, LockClient([addr]) as client:
        node.keep_instances = 20
        token = await client.acquire("pair/orders/0", "a", 60.0)
        version = await client.kv_put("settings/rate", {"per_second": 10})
        await client.kv_put("members/a", "up", ttl=60.0)
        for _ in range(300):
            assert await client.renew("pair/orders/0", "a", token) == token
        first = await node.compact()
        assert first > 100, "whole segments below the kept tail should be gone"
        assert node.replica.glog.first_instance == first
        assert await client.renew("pair/orders/0", "a", token) == token
        chosen = node.replica.paxos.chosen_up_to

    async with LockNode(cfg, 1) as node, LockClient([addr]) as client:
        assert node.replica.glog.first_instance == first
        assert node.state.applied_up_to >= chosen

        async def serving() -> bool:
            return node.epoch_ready()

        await wait_until(serving, 20, "the restarted node to serve")
        info = await client.get("pair/orders/0")
        assert info is not None and (info.owner, info.token) == ("a", token)
        with pytest.raises(LockHeld):
            await client.acquire("pair/orders/0", "b", 1.0)
        assert await client.kv_get("settings/rate") == ({"per_second": 10}, version)
        assert set(await client.kv_list("members/")) == {"members/a"}
        assert await client.acquire("pair/orders/1", "b", 1.0) > token
