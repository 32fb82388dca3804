"""Transactions across store sets, with real processes: two sets of three stores each.

Topic ``orders`` (8 queues) is dealt over both sets (even queues on set 1, odd on set 2);
topic ``pay`` (2 queues) lives on set 2 only, so ``pay`` queue 0 is group 0 of set 2 while
``orders`` queue 0 is group 0 of set 1: the same group number on two sets, which a part must
never mistake for its home. Every transaction here spans both sets; readers see all of its
messages or none, whatever happened: a commit, a rollback, a producer that vanished (the
home's check-back asks the parts on the other set before committing; without a handler the
home rolls back at the timeout and the other set's parts learn it from the home's set), a
SIGKILL of the home group's master between prepare and decide.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner

import phxq
from phxq import admin
from phxq.cli import cli
from phxq.client.txn import Transaction, decide
from phxq.client.types import Ack
from phxq.devcluster import ProcessCluster
from phxq.errors import BadArgument, TransactionAborted, Unavailable
from phxq.net.rpc import RpcPool

from .checkback import CheckHandler, producer_group_toml
from .conftest import group_master, wait_until

pytestmark = pytest.mark.integration

PAY = '\n[[topic]]\nname = "pay"\nqueues = 2\nsets = [2]\nmax_message_bytes = 1048576\n'

# (topic, queue) -> (set, group) with groups = 2
SET1_G0 = ("orders", 0)
SET2_G1 = ("orders", 1)
SET1_G0_B = ("orders", 2)
SET2_G0 = ("pay", 0)
SET2_G1_PAY = ("pay", 1)


def phxq_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def _put(txn: Transaction, where: tuple[str, int], payload: bytes) -> None:
    await txn.enqueue(where[0], payload, queue=where[1])


async def _payloads(client: phxq.Client, where: tuple[str, int]) -> list[bytes]:
    topic, queue = where
    return [m.payload for m in await client.dequeue(None, topic, queue=queue, limit=100)]


async def _open_everywhere(client: phxq.Client, cluster: ProcessCluster) -> int:
    """Open transactions over every group of every live store of both sets."""
    total = 0
    for s in cluster.config.stores:
        if cluster.alive(s.id):
            status = await client.status(s.addr, timeout=2.0)
            total += sum(g["transactions"]["open"] for g in status["groups"])
    return total


async def _committed(txn: Transaction, first: asyncio.Task[list[Ack]]) -> list[Ack]:
    """The acks of ``first`` (a ``txn.commit()``), calling ``commit()`` again after an
    ``Unavailable`` as the client documents (it answers with the decision the home holds).
    Why again: the client may give up on a group whose new master answered "no master known"
    during the election (it avoids that store for the rest of the call)."""
    deadline = time.monotonic() + 20
    try:
        return await first
    except Unavailable:
        pass
    while True:
        try:
            return await txn.commit(timeout=5.0)
        except Unavailable:
            if time.monotonic() > deadline:
                raise


async def test_commit_rollback_and_a_vanished_producer_across_sets_over_tls(
    make_cluster: Callable[..., ProcessCluster], check_handler: tuple[CheckHandler, int]
) -> None:
    """Over TLS with tokens (the stores ask each other with the member-only ``txn_peek``):
    commits show everything on both sets, a rollback nothing. Then a producer prepares three
    transactions spanning both sets and vanishes: the home's check-back commits one (after the
    parts on the other set said they hold theirs) and rolls back another; the third has no
    producer group and rolls back at its timeout."""
    handler, port = check_handler
    extra = PAY + producer_group_toml(port)
    cluster = await asyncio.to_thread(
        make_cluster, nodes=3, groups=2, sets=2, secure=True, extra=extra
    )
    assert cluster.config.security is not None
    ca, token = cluster.config.security.ca, cluster.credentials.token
    # The producer prepares and vanishes (its client closes without deciding anything).
    plans: dict[str, tuple[str | None, list[tuple[str, int]]]] = {
        "yes": ("checkout", [SET2_G0, SET1_G0, SET2_G1]),  # home on set 2
        "no": ("checkout", [SET1_G0, SET2_G0]),  # home on set 1
        "silent": (None, [SET2_G1_PAY, SET1_G0_B]),  # no check handler: the timeout
    }
    ids = {}
    async with phxq.Client(cluster.store_addresses, ca=ca, token=token) as producer:
        for label, (group, where) in plans.items():
            vanishing = producer.transaction(group, timeout=1.0)
            for w in where:
                await _put(vanishing, w, f"{label}".encode())
            await vanishing.prepare()
            ids[label] = vanishing.id
    handler.answers = {ids["yes"]: "committed", ids["no"]: "rolled_back"}

    async with phxq.Client(cluster.store_addresses, ca=ca, token=token) as client:
        # Home on set 1; parts on set 2 (group 0 there, like the home's number) and set 1.
        async with client.transaction() as txn:
            await _put(txn, SET1_G0, b"a")
            await _put(txn, SET2_G0, b"a")
            await _put(txn, SET2_G1, b"a")
            await _put(txn, SET1_G0_B, b"a")
        # Home on set 2, committed explicitly: every ack has the offset its queue gave it.
        txn = client.transaction()
        await _put(txn, SET2_G1_PAY, b"b")
        await _put(txn, SET1_G0, b"b")
        acks = await txn.commit()
        assert all(a.offset is not None for a in acks), acks
        # Rolled back, home on set 2: none of it, ever.
        txn = client.transaction()
        await _put(txn, SET2_G0, b"c")
        await _put(txn, SET1_G0, b"c")
        await _put(txn, SET2_G1, b"c")
        await txn.prepare()
        await txn.rollback()
        late = await decide(client, txn.id, txn.participants, True)  # a late commit: too late
        assert (late.commit, late.reason, late.released) == (False, "producer", ())

        # A home that names no store set (or a bad pair), or a request meant for another set
        # (the queue moved since the client planned it) is refused; nothing is held.
        bad: list[tuple[object, int]] = [([9, 0], 1), ([2], 1), ([2, 7], 1), ("x", 1)]
        for home, meant in [*bad, ([1, 0], 2)]:
            batches = [[0, 0, [[b"x", None, {}, None]]]]
            params = {"txn": "bad", "home": home, "timeout": 1.0, "topic": "orders", "set": meant}
            params["batches"] = batches
            with pytest.raises(BadArgument):
                await client._call_master("orders", 0, "txn_prepare", params)
        # Left open by its producer, committed by an operator (home on set 2, a part on set 1:
        # the home's master asks set 1 whether the part is held before committing).
        txn = client.transaction(timeout=60)
        await _put(txn, SET2_G1_PAY, b"op")
        await _put(txn, SET1_G0_B, b"op")
        await txn.prepare()
        rows = [r for r in await admin.txn_list(cluster.config) if r["txn"] == txn.id]
        assert sorted((r["set"], r["group"], r["home_set"], r["home"]) for r in rows) == [
            (1, 0, 2, 1),
            (2, 1, 2, 1),
        ]
        config = str(cluster.config_path)
        shown = await asyncio.to_thread(phxq_cli, "admin", "txn", "list", "--config", config)
        lines = sorted(line.split()[1:3] for line in shown.splitlines() if txn.id in line)
        assert lines == [["1/0", "2/1"], ["2/1", "2/1"]]  # set/group, home set/group
        assert (await admin.txn_resolve(cluster.config, txn.id, commit=True))["commit"] is True

        async def settled() -> bool:
            return await _open_everywhere(client, cluster) == 0

        await wait_until(settled, 20, "every transaction closed on both sets")
        assert sorted(await _payloads(client, SET1_G0)) == [b"a", b"b", b"yes"]
        assert sorted(await _payloads(client, SET2_G0)) == [b"a", b"yes"]
        assert sorted(await _payloads(client, SET2_G1)) == [b"a", b"yes"]
        assert await _payloads(client, SET1_G0_B) == [b"a", b"op"]
        assert await _payloads(client, SET2_G1_PAY) == [b"b", b"op"]
    assert {ids["yes"], ids["no"]} <= set(handler.asked)
    assert ids["silent"] not in handler.asked


async def test_sigkill_of_the_home_master_between_prepare_and_decide_is_never_partial(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    """The home group's master (set 2) dies after the prepare, as the commit leaves: the commit
    lands at its successor and every part on both sets shows it. Another transaction (home on
    set 1) loses its home's master before any decision and its producer: the successor rolls
    it back at the timeout and the part on set 2 drops its half message."""
    cluster = await asyncio.to_thread(make_cluster, nodes=3, groups=2, sets=2, extra=PAY)
    async with phxq.Client(cluster.store_addresses) as client, RpcPool() as pool:
        orphan = client.transaction(timeout=2.0)
        await _put(orphan, SET1_G0, b"orphan-home")
        await _put(orphan, SET2_G0, b"orphan-pay")
        await orphan.prepare()  # never decided by its producer

        txn = client.transaction(timeout=60)
        await _put(txn, SET2_G0, b"k-home")
        await _put(txn, SET1_G0, b"k-set1")
        await _put(txn, SET2_G1, b"k-set2")
        await txn.prepare()
        home = await group_master(pool, cluster, 0, set_number=2)
        orphan_home = await group_master(pool, cluster, 0, set_number=1)
        commit = asyncio.create_task(txn.commit(timeout=8.0))
        await asyncio.sleep(0.001)  # the decision is on its way (or chosen already)
        cluster.kill(home)
        cluster.kill(orphan_home)  # the orphan's home master (on the other set) too
        acks = await _committed(txn, commit)  # at the new master of the home group
        assert len(acks) == 3

        async def settled() -> bool:
            if await _open_everywhere(client, cluster):
                return False
            return (
                await _payloads(client, SET2_G0) == [b"k-home"]
                and await _payloads(client, SET1_G0) == [b"k-set1"]
                and await _payloads(client, SET2_G1) == [b"k-set2"]
            )

        await wait_until(settled, 30, "the commit everywhere and the orphan rolled back")
        with pytest.raises(TransactionAborted):
            await orphan.commit()
