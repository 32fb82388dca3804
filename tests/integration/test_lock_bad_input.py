"""Bad requests sent over a live socket to real lock daemons get typed errors; the daemons keep
serving and nothing stored is touched."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phxq import metrics
from phxq.devcluster import ProcessCluster
from phxq.errors import BadArgument, MessageTooLarge, NotMaster, StaleToken
from phxq.lock import LockClient
from phxq.lock.entries import MAX_VALUE_BYTES
from phxq.lock.node import LockMachines
from phxq.net.rpc import RpcPool
from phxq.paxos.ballot import Ballot
from phxq.paxos.messages import HeartbeatAck, encode_message
from phxq.replication.host import PaxosHost

from .test_lock_cluster import lock_cluster, lock_master

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    yield from lock_cluster(tmp_path_factory.mktemp("locks"))


GOOD = {"name": "pair/orders/0", "owner": "a", "ttl": 5.0}

BAD_REQUESTS: list[tuple[str, Any]] = [
    ("no_such_method", {}),
    ("acquire", ["not", "a", "map"]),
    ("acquire", {**GOOD, "ttl": -1}),
    ("acquire", {**GOOD, "ttl": 0}),
    ("acquire", {**GOOD, "ttl": 1e9}),
    ("acquire", {**GOOD, "ttl": "5"}),
    ("acquire", {**GOOD, "ttl": True}),
    ("acquire", {**GOOD, "ttl": float("nan")}),
    ("acquire", {**GOOD, "name": 7}),
    ("acquire", {**GOOD, "name": ""}),
    ("acquire", {**GOOD, "name": "x" * 1000}),
    ("acquire", {**GOOD, "owner": None}),
    ("acquire", {"name": "pair/orders/0"}),
    ("renew", {"name": "n", "owner": "a", "token": "1"}),
    ("renew", {"name": "n", "owner": "a", "token": -1}),
    ("renew", {"name": "n", "owner": "a", "token": 2**70}),
    ("release", {"name": "n", "owner": "a", "token": 1, "rid": "text"}),
    ("get", {"name": b"bytes"}),
    ("kv_get", {"key": None}),
    ("kv_put", {"key": "k", "value": b"x" * (MAX_VALUE_BYTES + 1)}),
    ("kv_put", {"key": "k", "value": 1, "expect_version": -1}),
    ("kv_put", {"key": "k", "value": 1, "ttl": -5}),
    ("kv_delete", {"key": "k", "expect_version": "v"}),
    ("kv_list", {"prefix": 3}),
    ("kv_wait", {"key": "k", "after_version": 0, "timeout": 1000}),
    ("kv_wait", {"key": "k", "after_version": -2, "timeout": 1}),
    ("kv_wait", {"key": "k", "after_version": 0, "timeout": "1"}),
]


@pytest.mark.parametrize(("method", "params"), BAD_REQUESTS)
async def test_bad_request_gets_bad_argument(
    locks: ProcessCluster, method: str, params: Any
) -> None:
    master = locks.config.lock(await lock_master(locks)).addr
    async with RpcPool() as pool:
        with pytest.raises(BadArgument):
            await pool.call(master, method, params, timeout=5.0)
        # nothing was stored, and the daemon still answers
        assert await pool.call(master, "get", {"name": "pair/orders/0"}, timeout=5.0) is None
        assert await pool.call(master, "kv_get", {"key": "k"}, timeout=5.0) == [None, 0]


async def test_unknown_names_are_typed_answers_not_failures(locks: ProcessCluster) -> None:
    async with LockClient(locks.lock_addresses) as client:
        assert await client.get("never/seen") is None
        assert await client.kv_get("never/seen") == (None, 0)
        assert await client.kv_list("never/") == {}
        with pytest.raises(StaleToken):
            await client.renew("never/seen", "a", 12345)
        assert await client.release("never/seen", "a", 12345) is False
        assert await client.kv_delete("never/seen") is False


async def test_followers_redirect_to_the_master(locks: ProcessCluster) -> None:
    master = await lock_master(locks)
    follower = next(n for n in locks.config.locks if n.id != master)
    async with RpcPool() as pool:
        with pytest.raises(NotMaster) as info:
            await pool.call(follower.addr, "acquire", GOOD, timeout=5.0)
        assert info.value.hint == locks.config.lock(master).addr
        meta = await pool.call(follower.addr, "meta", {}, timeout=5.0)
        assert meta["master"] == master and meta["serving"] is False


async def test_garbage_bytes_and_peer_messages_do_not_hurt_the_daemons(
    locks: ProcessCluster,
) -> None:
    async with LockClient(locks.lock_addresses) as client:
        token = await client.acquire("pair/orders/9", "a", 30.0)
    for node in locks.config.locks:
        host, port = node.addr.rsplit(":", 1)
        for junk in (
            b"\x00\x00\x00\x05hello",  # framed, not msgpack
            struct.pack(">I", 1 << 30),  # absurd length
            b"\x00\x00\x00\x02\x93\x00",  # truncated request
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(junk)
            await writer.drain()
            await asyncio.wait_for(reader.read(4096), 5.0)  # an error frame and/or a close
            writer.close()
        async with RpcPool() as pool:
            pool.notify(node.addr, "px", b"not a paxos message")
            pool.notify(node.addr, "snap", [0, b"not a snapshot"])
            pool.notify(node.addr, "px", {"wrong": "type"})
            await pool.call(node.addr, "meta", {})  # same connection: the notifies went first
            with pytest.raises(MessageTooLarge):
                await pool.call(node.addr, "kv_put", {"key": "k", "value": b"x" * (20 << 20)})
    async with LockClient(locks.lock_addresses) as client:
        info = await client.get("pair/orders/9")
        assert info is not None and (info.owner, info.token) == ("a", token)
        assert await client.acquire("pair/orders/10", "b", 1.0) > token
    assert all(locks.alive(n.id, "lock") for n in locks.config.locks)


def test_malformed_peer_notifications_are_counted_and_their_warnings_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who can reach a daemon's port can send ``px``/``snap`` notifies; garbage ones are
    dropped (there is no reply channel), counted in a metric, and logged at a limited rate."""
    host = PaxosHost(
        1,
        {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
        tmp_path,
        groups=1,
        window=4,
        heartbeat_interval=0.1,
        lease=1.0,
        machines=LockMachines(),
        name="lock",
    )
    counter = metrics.BAD_PEER_MESSAGES

    def seen(kind: str) -> float:
        return counter.labels(kind)._value.get()  # type: ignore[no-any-return]

    before = seen("paxos"), seen("snapshot")
    caplog.set_level(logging.WARNING, logger="phxq.host")
    stranger = encode_message(HeartbeatAck(group=0, sender=9, ballot=Ballot(1, 9), chosen_up_to=1))
    for i in range(200):
        host.on_notify("px", b"\x93" + bytes([i % 256]))  # cut short: malformed
        host.on_notify("px", stranger)  # well-formed, from no member: dropped and counted too
        host.on_notify("snap", ["not", "a", "snapshot"])
    assert (seen("paxos"), seen("snapshot")) == (before[0] + 400, before[1] + 200)
    assert 1 <= len([r for r in caplog.records if "dropped a malformed" in r.getMessage()]) <= 10
