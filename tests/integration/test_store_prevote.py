"""Regression (issue 9, found by the 3-DC drill): a store cut off from its peers kept
campaigning, each failed phase 1 raising its round; when the partition healed, its higher
ballot made the healthy masters step down and producers paused for 1.2-1.7 s for nothing.
With pre-vote the cut-off store never raises its round, so healing it changes no master.

Three real store processes; every store-to-store link goes through a ``FaultProxy`` (the
stores' ``peers`` key). Two groups, so their preferred masters are stores 1 and 2 and store 3
is a follower of both. Store 3 is cut off from its peers for ~3 leases under load, then healed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import phxq
from phxq.devcluster import ProcessCluster, free_ports
from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool
from tools.fault.proxy import FaultProxy

from .conftest import group_master, wait_until

pytestmark = pytest.mark.integration

LEASE = 1.0  # seconds (the cluster's lease below)
GROUPS = 2
TOPIC = "pv"


def write_config(data: Path) -> tuple[Path, dict[tuple[int, int], tuple[int, str]]]:
    """3 stores whose links to each other pass through proxies; returns the config path and,
    per (dialer, target), the proxy's port and the target's real address."""
    ports = free_ports(3 + 3 + 6)
    store, lock, proxy = ports[:3], ports[3:6], ports[6:]
    addr = {i: f"127.0.0.1:{store[i - 1]}" for i in (1, 2, 3)}
    pairs = [(i, j) for i in addr for j in addr if i != j]
    plan = {pair: (port, addr[pair[1]]) for pair, port in zip(pairs, proxy, strict=True)}
    lines = ["[cluster]", f"groups = {GROUPS}", f'lease = "{LEASE:g}s"', ""]
    for i in addr:
        peers = ", ".join(f'"{j}" = "127.0.0.1:{plan[(i, j)][0]}"' for j in addr if j != i)
        lines += [
            "[[store]]",
            f"id = {i}",
            f'addr = "{addr[i]}"',
            f'dc = "dc{i}"',
            f'data = "store{i}"',
            f"peers = {{ {peers} }}",
            "",
        ]
    for i in (1, 2, 3):
        lines += ["[[lock]]", f"id = {i}", f'addr = "127.0.0.1:{lock[i - 1]}"', f'dc = "dc{i}"']
        lines += [f'data = "lock{i}"', ""]
    lines += ["[[topic]]", f'name = "{TOPIC}"', f"queues = {GROUPS}", ""]
    data.mkdir(parents=True, exist_ok=True)
    path = data / "cluster.toml"
    path.write_text("\n".join(lines))
    return path, plan


async def group_views(pool: RpcPool, addrs: dict[int, str]) -> dict[int, dict[int, Any]]:
    """Per store, per group: (master, ballot) as that store sees it."""
    views: dict[int, dict[int, Any]] = {}
    for s, a in addrs.items():
        status = await pool.call(a, "status", {}, timeout=2.0)
        views[s] = {g["group"]: (g["master"], tuple(g["ballot"])) for g in status["groups"]}
    return views


class Producer:
    """One sequential producer per queue; records the time of every ack."""

    def __init__(self, client: phxq.Client) -> None:
        self.client = client
        self.acks: dict[int, list[float]] = {q: [] for q in range(GROUPS)}
        self.stopping = False

    async def run(self, queue: int) -> None:
        seq = 0
        while not self.stopping:
            seq += 1
            dedup = f"pv-{queue}-{seq}"
            while not self.stopping:
                try:
                    await self.client.enqueue(TOPIC, b"%d" % seq, queue=queue, dedup_id=dedup)
                    self.acks[queue].append(time.monotonic())
                    break
                except PhxqError:
                    await asyncio.sleep(0.01)  # retried with the same dedup id

    def longest_gap(self, lo: float, hi: float) -> float:
        longest = 0.0
        for times in self.acks.values():
            edges = [lo, *(t for t in times if lo <= t <= hi), hi]
            longest = max([longest, *(b - a for a, b in itertools.pairwise(edges))])
        return longest


async def test_a_cut_off_follower_returning_changes_no_master(tmp_path: Path) -> None:
    config_path, plan = write_config(tmp_path)
    proxies = {
        pair: FaultProxy(f"127.0.0.1:{port}", target) for pair, (port, target) in plan.items()
    }
    cluster = ProcessCluster(config_path)
    try:
        for proxy in proxies.values():
            await proxy.start()
        cluster.start()
        await cluster.wait_ready_async(timeout=30)
        addrs = {s.id: s.addr for s in cluster.config.stores}
        async with RpcPool() as pool, phxq.Client(list(addrs.values())) as client:
            before = await group_views(pool, addrs)
            masters = {g: before[1][g] for g in range(GROUPS)}
            assert {m for m, _ in masters.values()} == {1, 2}  # store 3 masters nothing
            assert all(v == masters for v in before.values()), before

            producer = Producer(client)
            tasks = [asyncio.create_task(producer.run(q)) for q in range(GROUPS)]
            await asyncio.sleep(0.5)
            t_cut = time.monotonic()
            for (i, j), proxy in proxies.items():
                if 3 in (i, j):
                    proxy.partition("both")
            await asyncio.sleep(3 * LEASE)
            during = await group_views(pool, {1: addrs[1], 2: addrs[2]})
            t_heal = time.monotonic()
            for proxy in proxies.values():
                proxy.heal()

            async def agreed() -> bool:
                views = await group_views(pool, addrs)
                return views[1] == views[2] == views[3]

            await wait_until(agreed, 10 * LEASE, "store 3 to follow the same masters as 1, 2")
            await asyncio.sleep(2 * LEASE)  # a disruption would show up well within this
            after = await group_views(pool, addrs)
            producer.stopping = True
            await asyncio.gather(*tasks)
            t_end = time.monotonic()

        # the real check: no master and no ballot changed, neither while store 3 was away
        # nor after it came back
        assert during == {1: masters, 2: masters}, during
        assert after == {1: masters, 2: masters, 3: masters}, after
        pause = producer.longest_gap(t_heal, t_end)
        pause_cut = producer.longest_gap(t_cut, t_heal)
        print(f"longest producer pause: {pause_cut:.3f}s while cut, {pause:.3f}s after heal")
        assert all(len(t) > 10 for t in producer.acks.values())
        # loose (the machine is shared): the deposition this guards against paused producers
        # for 1.2-1.7 s with a 1 s lease; without any master change no gap comes near 2 leases
        assert pause < 2 * LEASE, pause
        assert pause_cut < 2 * LEASE, pause_cut
    finally:
        cluster.stop()
        for proxy in proxies.values():
            proxy.drop_connections()
        await asyncio.sleep(0.1)  # let proxy handlers end before close() cancels the rest
        for proxy in proxies.values():
            await proxy.close()


def test_client_remembers_the_master_that_answered(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    """Regression (found measuring the drill for issue 9): a client whose map knew no master of
    a group asked the preferred node first on *every* call, even after another node answered
    as master; while that node was cut off (or busy catching up after the heal) every call of
    those groups paid for it, up to ~1 s per enqueue right after the heal."""
    cluster = make_cluster(groups=2)

    async def run() -> None:
        async with RpcPool() as pool, phxq.Client(cluster.store_addresses) as client:
            masters = {g: await group_master(pool, cluster, g) for g in range(2)}
            cmap = await client.cluster_map()
            cmap.masters.clear()  # as a map fetched from a store that knew no master would be
            for q in range(2):
                await client.enqueue("orders", b"x", queue=q)
            assert cmap.masters == {(1, g): m for g, m in masters.items()}  # (set, group)

    asyncio.run(run())
