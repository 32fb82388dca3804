"""Transactions with real store processes: half messages invisible until the commit, then all
visible (offsets assigned at commit); a rollback shows none; across groups, and across a
SIGKILL of the home group's master or of a participant's master."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import phxq
from phxq.cli import cli
from phxq.devcluster import ProcessCluster
from phxq.errors import ClientError, TransactionAborted
from phxq.net.rpc import RpcPool

from .conftest import group_master, wait_until

pytestmark = pytest.mark.integration

TOPIC = "orders"


@pytest.fixture
def two_groups(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(groups=2)


async def payloads(client: phxq.Client, queue: int) -> list[bytes]:
    return [m.payload for m in await client.dequeue(None, TOPIC, queue=queue, limit=1000)]


async def test_commit_shows_all_across_groups_and_rollback_shows_none(
    two_groups: ProcessCluster,
) -> None:
    async with phxq.Client(two_groups.store_addresses) as client:
        async with client.transaction() as txn:
            await txn.enqueue(TOPIC, b"a0", queue=0)
            await txn.enqueue(TOPIC, b"b0", queue=1)  # group 1
            await txn.enqueue(TOPIC, b"a1", queue=0)
        assert await payloads(client, 0) == [b"a0", b"a1"]
        assert await payloads(client, 1) == [b"b0"]

        with pytest.raises(RuntimeError):
            async with client.transaction() as txn:
                await txn.enqueue(TOPIC, b"x0", queue=0)
                await txn.enqueue(TOPIC, b"x1", queue=1)
                await txn.prepare()
                raise RuntimeError("the local transaction failed")
        assert txn.state == "rolled_back"

        # The RocketMQ pattern: prepare, (local transaction), then decide.
        txn = client.transaction(timeout=30)
        await txn.enqueue(TOPIC, b"p0", queue=0)
        await txn.enqueue(TOPIC, b"p1", queue=1)
        plain = await client.enqueue(TOPIC, b"plain", queue=0)
        await txn.prepare()
        assert await payloads(client, 0) == [b"a0", b"a1", b"plain"]  # half messages hidden
        status = await client.status()
        assert sum(g["transactions"]["open"] for g in status["groups"]) >= 1
        acks = await txn.commit()
        assert [a.offset is not None for a in acks] == [True, True]
        assert acks[0].offset > plain.offset  # the offset is assigned at commit
        assert await payloads(client, 0) == [b"a0", b"a1", b"plain", b"p0"]
        assert await payloads(client, 1) == [b"b0", b"p1"]
        with pytest.raises(Exception):  # noqa: B017 (any error: it is committed)
            await txn.rollback()


async def test_bad_requests_store_nothing_and_undecided_rolls_back_at_timeout(
    two_groups: ProcessCluster,
) -> None:
    """Malformed txn_* requests are typed errors that store nothing; a transaction without a
    producer group left undecided is rolled back at its timeout."""
    msg = [b"x", None, {}, None]
    good = {"txn": "t-1", "home": 0, "timeout": 5.0, "topic": TOPIC, "expect": []}
    bad = [
        ("txn_prepare", {**good, "batches": [[0, 0, [msg]]], "txn": ""}),
        ("txn_prepare", {**good, "batches": [[0, 0, [msg]]], "txn": "x" * 200}),
        ("txn_prepare", {**good, "batches": [[0, 0, [msg]]], "home": 7}),
        ("txn_prepare", {**good, "batches": [[0, 0, [msg]]], "timeout": -1}),
        ("txn_prepare", {**good, "batches": [[0, 0, [msg]]], "expect": [["a", 1]]}),
        ("txn_prepare", {**good, "batches": [[0, 0, [msg]], [1, 1, [msg]]]}),  # two groups
        ("txn_prepare", {**good, "batches": [[0, 0, [[b"x"]]]]}),
        ("txn_prepare", {**good, "batches": [[0, 0, []]]}),
        ("txn_prepare", {**good, "batches": "nope"}),
        ("txn_prepare", {**good, "batches": [[99, 0, [msg]]]}),
        ("txn_decide", {"txn": "t-1", "topic": TOPIC, "queue": 0, "commit": "yes"}),
        ("txn_resolve", {"txn": None, "topic": TOPIC, "queue": 0}),
        ("txn_settle", {"txn": "t-1", "group": 5, "commit": False}),
    ]
    async with RpcPool() as pool, phxq.Client(two_groups.store_addresses) as client:
        master = two_groups.store_address(await group_master(pool, two_groups, 0))
        for method, params in bad:
            with pytest.raises(ClientError):
                await pool.call(master, method, params, timeout=5.0)
        status = await client.status()
        assert sum(g["transactions"]["open"] for g in status["groups"]) == 0
        assert await payloads(client, 0) == []

    async with phxq.Client(two_groups.store_addresses) as client:
        txn = client.transaction(timeout=0.5)
        await txn.enqueue(TOPIC, b"late0", queue=0)
        await txn.enqueue(TOPIC, b"late1", queue=1)
        await txn.prepare()

        async def closed() -> bool:
            status = await client.status()
            return sum(g["transactions"]["open"] for g in status["groups"]) == 0

        await wait_until(closed, 15, "the store to roll the transaction back")
        with pytest.raises(TransactionAborted):
            await txn.commit()
        assert await payloads(client, 0) == [] and await payloads(client, 1) == []


def phxq_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def test_admin_lists_open_transactions_and_resolves_one(two_groups: ProcessCluster) -> None:
    config = str(two_groups.config_path)
    async with phxq.Client(two_groups.store_addresses) as client:
        txn = client.transaction(timeout=120)
        await txn.enqueue(TOPIC, b"o0", queue=0)
        await txn.enqueue(TOPIC, b"o1", queue=1)
        await txn.prepare()
        rows = json.loads(
            await asyncio.to_thread(phxq_cli, "admin", "txn", "list", "--config", config, "--json")
        )
        assert {(r["txn"], r["group"], r["home"]) for r in rows} == {(txn.id, 0, 0), (txn.id, 1, 0)}
        assert all(r["decision"] is None and r["half_messages"] == 1 for r in rows)
        shown = await asyncio.to_thread(phxq_cli, "admin", "status", "--config", config)
        assert "open transactions" in shown
        out = await asyncio.to_thread(
            phxq_cli, "admin", "txn", "resolve", txn.id, "--rollback", "--config", config
        )
        assert "rolled back (operator)" in out

        async def gone() -> bool:
            return "no open transactions" in await asyncio.to_thread(
                phxq_cli, "admin", "txn", "list", "--config", config
            )

        await wait_until(gone, 15, "the rolled back transaction to close")
        with pytest.raises(TransactionAborted):
            await txn.commit()
        assert await payloads(client, 0) == [] and await payloads(client, 1) == []


async def test_commit_survives_a_sigkill_of_the_home_masters(two_groups: ProcessCluster) -> None:
    cluster = two_groups
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        home = await group_master(pool, cluster, 0)
        txn = client.transaction(timeout=60)
        await txn.enqueue(TOPIC, b"h0", queue=0)
        await txn.enqueue(TOPIC, b"h1", queue=1)
        await txn.prepare()
        commit = asyncio.create_task(txn.commit())
        await asyncio.sleep(0.001)  # the decision is on its way (or chosen already)
        cluster.kill(home)
        acks = await commit  # retried at the new master of the home group if it was lost
        assert len(acks) == 2

        async def all_visible() -> bool:
            return await payloads(client, 0) == [b"h0"] and await payloads(client, 1) == [b"h1"]

        await wait_until(all_visible, 20, "every message of the transaction")


async def test_participant_master_killed_after_the_decision_applies_it_anyway(
    two_groups: ProcessCluster,
) -> None:
    """The producer writes the decision and vanishes (no resolve), the participant's master
    dies: its successor reads the decision in its replica of the home group and releases."""
    cluster = two_groups
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        txn = client.transaction(timeout=60)
        await txn.enqueue(TOPIC, b"q0", queue=0)
        await txn.enqueue(TOPIC, b"q1", queue=1)
        await txn.prepare()
        participant = await group_master(pool, cluster, 1)
        assert (await txn._decide(True))["commit"] is True  # the decision only
        cluster.kill(participant)

        async def all_visible() -> bool:
            return await payloads(client, 0) == [b"q0"] and await payloads(client, 1) == [b"q1"]

        await wait_until(all_visible, 20, "every message of the transaction")


def test_bench_txn_smoke_runs() -> None:
    """bench/txn.py keeps working (structure only, never a figure)."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "bench.txn", "--smoke", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    cases = json.loads(out.stdout)["cases"]
    assert {(c["kind"], c["messages_per_txn"], c["groups"]) for c in cases} == {
        (k, n, g) for k in ("plain", "txn") for n in (1, 10) for g in (1, 2)
    }
    assert all(c["msgs_per_s"] > 0 and c["latency"]["p50_ms"] > 0 for c in cases)
