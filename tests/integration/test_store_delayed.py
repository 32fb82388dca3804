"""Delayed and scheduled messages with real store processes: invisible until due, then released
into their queue exactly once and never before their time, across a master SIGKILL, a
whole-cluster stop that spans the due time, and a snapshot transfer to a lagging replica."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

import phxq
from phxq.devcluster import ProcessCluster
from phxq.errors import BadArgument
from phxq.net.rpc import RpcPool

from .conftest import group_master, replica_views, wait_until

pytestmark = pytest.mark.integration

TOPIC = "orders"


@pytest.fixture
def two_groups(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=2)


@pytest.fixture
def one_group(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=1)


@pytest.fixture
def short_retention(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(
        groups=1,
        cluster_options='segment_bytes = "8KiB"\nretention_interval = "200ms"',
        topic_retention="1s",
    )


class Watcher:
    """Reads a queue from its start over and over, noting every (offset, payload) it ever saw
    (retention may drop old ones later) and when each payload was first seen (local wall
    clock: the stores run on this machine)."""

    def __init__(self, client: phxq.Client, queue: int) -> None:
        self.client = client
        self.queue = queue
        self.first_seen: dict[bytes, float] = {}
        self.seen: dict[int, phxq.Message] = {}

    async def poll(self) -> list[phxq.Message]:
        msgs = await self.client.dequeue(None, TOPIC, queue=self.queue, limit=10_000)
        now = time.time()
        for m in msgs:
            self.first_seen.setdefault(m.payload, now)
            assert self.seen.setdefault(m.offset, m).payload == m.payload
        return msgs

    @property
    def payloads(self) -> list[bytes]:
        return [self.seen[o].payload for o in sorted(self.seen)]

    async def until_seen(self, payloads: set[bytes], timeout: float) -> None:
        async def seen() -> bool:
            await self.poll()
            return payloads <= set(self.first_seen)

        await wait_until(seen, timeout, f"{sorted(payloads)} released")

    def check_once_not_early(self, due: dict[bytes, float]) -> None:
        payloads = self.payloads
        for payload, at in due.items():
            assert payloads.count(payload) == 1, f"{payload!r} released {payloads.count(payload)}x"
            assert self.first_seen[payload] >= at, f"{payload!r} seen before its due time"
        for m in self.seen.values():
            if m.payload in due:
                assert m.enqueued_at >= due[m.payload]  # the release stamp


async def test_delayed_messages_are_invisible_until_due_and_cancel_once(
    two_groups: ProcessCluster,
) -> None:
    cluster = two_groups
    async with phxq.Client(cluster.store_addresses) as client:
        t0 = time.time()
        at = t0 + 1.5
        a = await client.enqueue(TOPIC, b"at", queue=0, deliver_at=at)
        b = await client.enqueue(TOPIC, b"delay", queue=0, delay=1.0, dedup_id="d-1")
        c = await client.enqueue(TOPIC, b"cancelled", queue=0, deliver_at=at)
        now = await client.enqueue(TOPIC, b"now", queue=0)
        assert a.offset is None and a.scheduled_id is not None and now.offset is not None
        again = await client.enqueue(TOPIC, b"delay", queue=0, delay=1.0, dedup_id="d-1")
        assert again.duplicate and again.scheduled_id == b.scheduled_id
        assert c.scheduled_id is not None
        assert await client.cancel_scheduled(c.scheduled_id) is True
        assert await client.cancel_scheduled(c.scheduled_id) is False
        with pytest.raises(BadArgument):
            await client.enqueue(TOPIC, b"x", queue=0, delay=-1)
        with pytest.raises(BadArgument):
            await client.enqueue(TOPIC, b"x", queue=0, delay=1, deliver_at=t0)
        with pytest.raises(BadArgument):
            await client.cancel_scheduled("not-an-id")

        watcher = Watcher(client, 0)
        assert [m.payload for m in await watcher.poll()] == [b"now"]
        status = await client.status()
        assert sum(g["scheduled"]["pending"] for g in status["groups"]) in (0, 2)  # node 1's view
        await watcher.until_seen({b"at", b"delay"}, 15)
        watcher.check_once_not_early({b"at": at, b"delay": t0 + 1.0})
        assert watcher.payloads == [b"now", b"delay", b"at"]  # release order
        assert b.scheduled_id is not None
        assert await client.cancel_scheduled(b.scheduled_id) is False  # released already
        await watcher.poll()
        assert b"cancelled" not in watcher.payloads


async def test_due_during_a_master_sigkill_is_released_once_by_the_new_master(
    one_group: ProcessCluster,
) -> None:
    cluster = one_group
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        master = await group_master(pool, cluster, 0)
        t0 = time.time()
        due = {f"m{i}".encode(): t0 + 1.0 + 0.2 * i for i in range(5)}
        for payload, at in due.items():
            await client.enqueue(TOPIC, payload, queue=1, deliver_at=at)
        cluster.kill(master)  # before the first one is due
        watcher = Watcher(client, 1)
        await watcher.until_seen(set(due), 20)
        watcher.check_once_not_early(due)

        async def none_pending() -> bool:
            # A follower learns the last release with the master's next message (a Chosen
            # rides with it): poll, do not read once.
            views = await replica_views(pool, cluster)
            return all(v["groups"][0]["scheduled"]["pending"] == 0 for v in views.values())

        await wait_until(none_pending, 5, "no release pending on any live replica")


async def test_due_during_a_whole_cluster_stop_is_released_once_after_restart(
    one_group: ProcessCluster,
) -> None:
    cluster = one_group
    async with phxq.Client(cluster.store_addresses) as client:
        t0 = time.time()
        due = {b"during-stop": t0 + 1.0, b"later": t0 + 4.0}
        for payload, at in due.items():
            await client.enqueue(TOPIC, payload, queue=2, deliver_at=at)
    cluster.stop()
    while time.time() < t0 + 1.2:  # the stores are down when the first one falls due
        time.sleep(0.05)
    cluster.start()
    await cluster.wait_ready_async(30)
    async with phxq.Client(cluster.store_addresses) as client:
        watcher = Watcher(client, 2)
        await watcher.until_seen({b"during-stop"}, 15)
        assert time.time() < due[b"later"] or b"later" in watcher.first_seen
        await watcher.until_seen(set(due), 15)
        watcher.check_once_not_early(due)


async def test_a_replica_behind_the_truncation_point_gets_the_schedule_by_snapshot(
    short_retention: ProcessCluster,
) -> None:
    """Node 3 is down while "soon" is scheduled and released and the peers truncate past its
    record: node 3 learns it only through a peer's snapshot. "distant" (due in an hour, its
    record just before soon's) does not stop that truncation: the master rolls it further on,
    and its original id still cancels it. "later" is scheduled after that and is pending while
    node 3 catches up. Every replica ends with both released once, at the same offsets."""
    cluster = short_retention
    filler = b"x" * 300
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        cluster.kill(3)
        distant = await client.enqueue(TOPIC, b"distant", queue=5, delay=3600)
        assert distant.scheduled_id is not None
        t0 = time.time()
        due = {b"soon": t0 + 1.5}
        soon = await client.enqueue(TOPIC, b"soon", queue=4, deliver_at=due[b"soon"])
        assert soon.scheduled_id is not None
        record = int(soon.scheduled_id.rsplit("/", 1)[1]) >> 20
        watcher = Watcher(client, 4)
        deadline = time.monotonic() + 20
        while not await watcher.poll():  # roll segments past the record until it is released
            assert time.monotonic() < deadline, "soon was not released"
            for _ in range(10):
                await client.enqueue(TOPIC, filler, queue=3)
        due[b"later"] = time.time() + 3.0
        await client.enqueue(TOPIC, b"later", queue=4, deliver_at=due[b"later"])

        async def truncated_past_the_record() -> bool:
            views = await replica_views(pool, cluster)
            return min(v["groups"][0]["first_instance"] for v in views.values()) > record

        await wait_until(
            truncated_past_the_record, 20, "stores 1 and 2 truncate past soon (and distant)"
        )
        cluster.restart(3)

        async def converged() -> bool:
            views = await replica_views(pool, cluster)
            marks = {
                (v["groups"][0]["chosen_up_to"], v["groups"][0]["checksum"]) for v in views.values()
            }
            return len(views) == 3 and len(marks) == 1

        await wait_until(converged, 30, "node 3 catches up through a snapshot")
        assert "installed a peer's snapshot" in cluster.logs("store", 3, tail=400)
        await watcher.until_seen(set(due), 20)
        watcher.check_once_not_early(due)
        await wait_until(converged, 10, "every replica applied the releases")
        assert await client.cancel_scheduled(distant.scheduled_id) is True  # rolled, still named

        async def nothing_pending() -> bool:
            views = await replica_views(pool, cluster)
            return all(v["groups"][0]["scheduled"]["pending"] == 0 for v in views.values())

        await wait_until(nothing_pending, 10, "every replica applied the cancel")
        # every replica holds what the master served at the same offsets (retention may have
        # dropped "soon" since), "later" included
        for s in cluster.config.stores:
            params = {"topic": TOPIC, "queue": 4, "after": None, "limit": 100, "local": True}
            rows = await pool.call(s.addr, "dequeue", params, timeout=2.0)
            assert all(watcher.seen[r[0]].payload == r[1] for r in rows)
            assert b"later" in [r[1] for r in rows] and b"distant" not in [r[1] for r in rows]


def test_cli_enqueue_delay_at_cancel_and_status(two_groups: ProcessCluster) -> None:
    from click.testing import CliRunner

    from phxq.cli import cli

    runner = CliRunner()
    servers = ",".join(two_groups.store_addresses)
    config = str(two_groups.config_path)
    out = runner.invoke(cli, ["enqueue", "-s", servers, TOPIC, "hi", "--delay", "10m", "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output)
    assert row["offset"] is None and row["scheduled_id"].startswith(f"{TOPIC}/")
    at = runner.invoke(cli, ["enqueue", "-s", servers, TOPIC, "x", "--queue", "1", "--at", "2h"])
    assert at.exit_code == 1 and "--at" in at.output  # neither epoch seconds nor ISO
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    at = runner.invoke(cli, ["enqueue", "-s", servers, TOPIC, "x", "--queue", "1", "--at", iso])
    assert at.exit_code == 0 and "scheduled" in at.output, at.output
    status = runner.invoke(cli, ["admin", "status", "--config", config])
    assert status.exit_code == 0 and "scheduled pending" in status.output, status.output
    sid = row["scheduled_id"]
    assert runner.invoke(cli, ["cancel-scheduled", "-s", servers, sid]).exit_code == 0
    again = runner.invoke(cli, ["cancel-scheduled", "-s", servers, sid])
    assert again.exit_code == 1 and "not pending" in again.output
