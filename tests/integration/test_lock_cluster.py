"""The lock service as users run it: three real ``phxq lock`` processes, real sockets, fsync.

Every time here is read from ``time.monotonic()``, which all processes of this machine share,
so "nobody got the lock before the old lease could have expired" is a real check.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.errors import LockHeld, PhxqError, Unavailable
from phxq.lock import LockClient
from phxq.lock.client import local_ttl
from phxq.net.rpc import RpcPool

from .conftest import wait_until

pytestmark = pytest.mark.integration


def lock_cluster(directory: Path) -> Iterator[ProcessCluster]:
    """Three lock daemons (no stores) on ephemeral ports in ``directory``, always stopped."""
    ports = free_ports(6)
    path = write_dev_config(directory, store_ports=ports[:3], lock_ports=ports[3:])
    cluster = ProcessCluster(path, locks=True)
    try:
        for node in cluster.config.locks:
            cluster.start_node("lock", str(node.id))
        cluster.wait_locks_ready(timeout=30)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def locks(tmp_path: Path) -> Iterator[ProcessCluster]:
    yield from lock_cluster(tmp_path)


async def lock_master(cluster: ProcessCluster) -> int:
    """The lock node every live lock node agrees is master (and that serves)."""

    async def agreed() -> int | None:
        async with RpcPool() as pool:
            seen, serving = set(), False
            for node in cluster.config.locks:
                if cluster.alive(node.id, "lock"):
                    meta = await pool.call(node.addr, "meta", {}, timeout=1.0)
                    seen.add(meta["master"])
                    serving = serving or (meta["serving"] and meta["master"] == node.id)
            return seen.pop() if len(seen) == 1 and None not in seen and serving else None

    master: int = await wait_until(agreed, 20, "an agreed, serving lock master")
    return master


async def test_two_contenders_hold_the_lock_one_at_a_time(locks: ProcessCluster) -> None:
    held: list[tuple[float, float, str, int]] = []  # (acquired, released, owner, token)

    async def contender(owner: str) -> None:
        async with LockClient(locks.lock_addresses) as client:
            rounds = 0
            while rounds < 8:
                try:
                    async with client.hold("pair/orders/3", owner, ttl=2.0) as lease:
                        start = time.monotonic()
                        await asyncio.sleep(random.uniform(0.02, 0.1))
                        assert not lease.lost.is_set(), lease.reason
                        held.append((start, time.monotonic(), owner, lease.token))
                    rounds += 1
                except LockHeld:
                    pass
                await asyncio.sleep(random.uniform(0.0, 0.03))

    await asyncio.gather(contender("consumer-a"), contender("consumer-b"))
    held.sort()
    assert {owner for _, _, owner, _ in held} == {"consumer-a", "consumer-b"}
    for (_, end, owner, token), (start, _, owner2, token2) in itertools.pairwise(held):
        assert end < start, f"{owner} (token {token}) and {owner2} (token {token2}) overlapped"
        assert token2 > token, "fencing tokens must increase with every grant"


async def test_holder_keeps_its_lock_across_a_master_sigkill(locks: ProcessCluster) -> None:
    ttl = 6.0
    async with (
        LockClient(locks.lock_addresses) as holder_client,
        LockClient(locks.lock_addresses, retry_timeout=1.0) as rival,
    ):
        async with holder_client.hold("pair/orders/1", "holder", ttl) as lease:
            before = lease.token
            master = await lock_master(locks)
            killed_at = time.monotonic()
            locks.kill(master, role="lock")

            async def renewed_since_kill() -> bool:
                try:
                    await rival.acquire("pair/orders/1", "rival", ttl)
                except LockHeld:
                    pass
                except Unavailable:
                    pass  # no master for a moment: fine, nobody gets the lock then either
                else:
                    raise AssertionError("the rival got the lock while the holder renewed it")
                assert not lease.lost.is_set(), f"holder lost its lease: {lease.reason}"
                return lease.valid_until > killed_at + local_ttl(ttl)

            await wait_until(renewed_since_kill, 30, "a renewal confirmed by the new master")
            assert await lock_master(locks) != master
            info = await rival.get("pair/orders/1")
            assert info is not None and (info.owner, info.token) == ("holder", before)
        assert lease.lost.is_set()  # set on release: the token must not be used any more
        after = await rival.acquire("pair/orders/1", "rival", ttl)
        assert after > before


async def test_abandoned_lease_outlives_a_master_sigkill(locks: ProcessCluster) -> None:
    ttl = 4.0
    async with LockClient(locks.lock_addresses) as a, LockClient(locks.lock_addresses) as b:
        sent = time.monotonic()
        token_a = await a.acquire("pair/orders/2", "a", ttl)  # "a" never renews
        locks.kill(await lock_master(locks), role="lock")

        async def b_acquires() -> int | None:
            try:
                return await b.acquire("pair/orders/2", "b", ttl)
            except LockHeld:
                return None

        token_b = await wait_until(b_acquires, 40, "the abandoned lock to become free")
        got_at = time.monotonic()
        assert got_at >= sent + ttl, (
            f"b got the lock {sent + ttl - got_at:.3f}s before a's lease could have expired"
        )
        assert token_b > token_a


async def test_hold_reports_loss_when_no_majority_is_left(locks: ProcessCluster) -> None:
    client = LockClient(locks.lock_addresses, retry_timeout=1.0)
    async with client, client.hold("pair/orders/4", "h", ttl=2.0) as lease:
        master = await lock_master(locks)
        other = next(n.id for n in locks.config.locks if n.id != master)
        locks.kill(master, role="lock")
        locks.kill(other, role="lock")
        await asyncio.wait_for(lease.lost.wait(), 15)
        assert lease.reason is not None and "no renewal confirmed" in lease.reason


async def test_cas_increments_from_racing_clients_are_never_lost(locks: ProcessCluster) -> None:
    per_client, clients = 15, 4

    async def incrementer() -> None:
        async with LockClient(locks.lock_addresses) as kv:
            done = 0
            while done < per_client:
                value, version = await kv.kv_get("settings/counter")
                try:
                    await kv.kv_put("settings/counter", (value or 0) + 1, expect_version=version)
                    done += 1
                except PhxqError as exc:
                    assert type(exc).__name__ == "VersionMismatch", exc

    await asyncio.gather(*(incrementer() for _ in range(clients)))
    async with LockClient(locks.lock_addresses) as kv:
        value, version = await kv.kv_get("settings/counter")
        assert value == per_client * clients
        assert version > 0


async def test_kv_wait_wakes_on_put_and_on_heartbeat_expiry(locks: ProcessCluster) -> None:
    async with LockClient(locks.lock_addresses) as kv, LockClient(locks.lock_addresses) as w:
        waiter = asyncio.create_task(w.kv_wait("settings/rate", 0, 20))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        version = await kv.kv_put("settings/rate", {"per_second": 500})
        assert await asyncio.wait_for(waiter, 10) == ({"per_second": 500}, version)

        member = await kv.kv_put("members/consumer-a", {"load": 1}, ttl=1.0)
        assert await kv.kv_list("members/") == {"members/consumer-a": ({"load": 1}, member)}
        gone = await w.kv_wait("members/consumer-a", member, 20)  # nobody renews it
        assert gone == (None, 0)
        assert await kv.kv_list("members/") == {}
        # A wait with nothing to report returns the current pair at its timeout.
        assert await w.kv_wait("settings/rate", version, 0.3) == ({"per_second": 500}, version)


async def test_state_survives_a_restart_of_every_lock_node(locks: ProcessCluster) -> None:
    async with LockClient(locks.lock_addresses) as client:
        token = await client.acquire("pair/orders/5", "a", 30.0)
        version = await client.kv_put("settings/pause", True)
    for node in locks.config.locks:
        locks.kill(node.id, role="lock")
    for node in locks.config.locks:
        locks.restart(node.id, role="lock")
    await locks.wait_locks_ready_async(timeout=30)
    async with LockClient(locks.lock_addresses) as client:
        info = await client.get("pair/orders/5")
        assert info is not None and (info.owner, info.token) == ("a", token)
        with pytest.raises(LockHeld):
            await client.acquire("pair/orders/5", "b", 1.0)
        assert await client.renew("pair/orders/5", "a", token) == token
        assert await client.kv_get("settings/pause") == (True, version)
        assert await client.acquire("pair/orders/6", "b", 1.0) > token
