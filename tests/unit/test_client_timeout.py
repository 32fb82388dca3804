"""Per-call ``timeout=`` (issue 20): a call raises ``Unavailable`` no later than its timeout,
saying which nodes answered what; a bad timeout is ``BadArgument``. (The real-cluster case, two
of three stores down: tests/integration/test_client_no_majority.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

import phxq
from phxq.budget import Budget
from phxq.errors import BadArgument, NotMaster, Unavailable

MEMBERS = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
NAMES = {a: f"store {i}" for i, a in enumerate(MEMBERS, 1)}


def test_one_answer_of_three_is_no_majority() -> None:
    budget = Budget.start(2.0, default=15.0)
    budget.answered(MEMBERS[0], "knows no master")
    budget.no_answer(MEMBERS[1], "timed out")
    text = budget.explain("group 1", MEMBERS, NAMES)
    assert text == (
        "group 1: no master within 2s: no majority: 1 of 3 answered, 2 needed; "
        "answered: store 1 (127.0.0.1:1): knows no master; "
        "no answer: store 2 (127.0.0.1:2): timed out, store 3 (127.0.0.1:3): not asked"
    )


def test_a_majority_without_master_is_an_election_not_no_majority() -> None:
    budget = Budget.start(None, default=3.0)
    assert budget.seconds == 3.0
    budget.no_answer(MEMBERS[0], "timed out")
    budget.answered(MEMBERS[0], "knows no master")  # a later answer replaces the silence
    budget.answered(MEMBERS[1], "knows no master")
    error = budget.error("group 0", MEMBERS, NAMES)
    assert "no majority" not in error.message and "none is master" in error.message
    assert error.data == {"answered": MEMBERS[:2], "silent": MEMBERS[2:], "timeout": 3.0}


async def test_batched_enqueues_give_up_at_their_own_deadlines_saying_what_stores_said() -> None:
    """Enqueues batched into one request keep their own timeouts (one expiry sweep, no timer
    each); each error tells what the stores answered the request that carried it."""

    async def call(addr: str, method: str, params: object, *, timeout: float) -> object:
        if method == "meta":
            nodes = {str(i): a for i, a in enumerate(MEMBERS, 1)}
            return {"groups": 1, "nodes": nodes, "topics": {"orders": 1}, "masters": {}}
        raise NotMaster(hint=None)  # every store: an election that never ends

    client = phxq.Client(MEMBERS)
    try:
        client._pool.call = call  # type: ignore[method-assign,assignment]
        await client.cluster_map()
        calls: list[asyncio.Future[phxq.Ack]] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        calls += [
            asyncio.ensure_future(client.enqueue("orders", b"x", timeout=t)) for t in (0.6, 0.3)
        ]
        for timeout in (0.3, 0.6):
            done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            (first,) = done
            calls.remove(first)
            assert timeout <= loop.time() - started < timeout + 0.25
            with pytest.raises(Unavailable) as info:
                first.result()
            assert f"no master within {timeout:g}s" in info.value.message
            assert "none is master" in info.value.message
            assert "answered: store 1 (127.0.0.1:1): knows no master" in info.value.message
    finally:
        await client.close()
        await asyncio.gather(*calls, return_exceptions=True)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", True])
async def test_a_bad_timeout_is_bad_argument(bad: object) -> None:
    client = phxq.Client(MEMBERS)
    try:
        with pytest.raises(BadArgument, match="timeout"):
            await client.enqueue("orders", b"x", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(BadArgument, match="timeout"):
            await phxq.LockClient(MEMBERS).get("x", timeout=bad)  # type: ignore[arg-type]
    finally:
        await client.close()


async def _silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers (a SIGSTOPped node)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for w in held:
            w.close()
        server.close()


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    async for addr in _silent_server():
        yield addr


async def test_calls_to_a_silent_cluster_give_up_on_time(silent: str) -> None:
    async with asyncio.timeout(10):
        client = phxq.Client([silent], retry_timeout=30.0)
        locks = phxq.LockClient([silent], retry_timeout=30.0)
        try:
            for call in (
                lambda: client.enqueue("orders", b"x", timeout=0.4),
                lambda: client.cursor("g", "orders", queue=0, timeout=0.4),
                lambda: client.cluster_map(timeout=0.4),
                lambda: locks.acquire("name", "me", 3.0, timeout=0.4),
                lambda: locks.kv_put("k", 1, timeout=0.4),
            ):
                started = time.monotonic()
                with pytest.raises(Unavailable) as info:
                    await call()
                assert time.monotonic() - started < 0.9
                assert silent in str(info.value)
            with pytest.raises(Unavailable, match="no majority: 0 of 1 answered"):
                await locks.get("name", timeout=0.4)
        finally:
            await client.close()
            await locks.close()


async def test_a_failed_attempt_asks_every_store_who_is_master() -> None:
    """After a failed attempt the client asks the set's stores at once (``meta``): what each
    said goes into the error, and the master most of them name becomes the next one asked --
    unless that one just failed."""
    from phxq.client.types import ClusterMap

    said = {MEMBERS[0]: 1, MEMBERS[1]: 3, MEMBERS[2]: 3}

    async def call(addr: str, method: str, params: object, *, timeout: float) -> object:
        assert method == "meta" and timeout <= 0.5
        if addr == MEMBERS[0]:
            raise Unavailable(f"meta to {addr} timed out after {timeout}s", {"addr": addr})
        return {"masters": {"0": said[addr]}}

    client = phxq.Client(MEMBERS)
    try:
        client._pool.call = call  # type: ignore[method-assign]
        cmap = ClusterMap(1, dict(enumerate(MEMBERS, 1)), {"orders": 1}, {})
        budget = Budget.start(1.0, 15.0)
        await client._probe(cmap, (1, 0), budget, set())
        assert cmap.masters[(1, 0)] == 3
        assert budget.answers == {MEMBERS[1]: "says store 3 is master"} | {
            MEMBERS[2]: "says store 3 is master"
        }
        assert "timed out" in budget.silent[MEMBERS[0]]
        said[MEMBERS[1]] = 2
        cmap.masters.clear()
        await client._probe(cmap, (1, 0), budget, {MEMBERS[2]})  # store 3 just failed
        assert cmap.masters[(1, 0)] == 2
    finally:
        await client.close()


async def test_enqueue_many_gives_up_at_its_deadline_saying_what_stores_said() -> None:
    """A multi-message call is bounded by one timer for the call; every message's error says
    what the stores answered."""

    async def call(addr: str, method: str, params: object, *, timeout: float) -> object:
        if method == "meta":
            nodes = {str(i): a for i, a in enumerate(MEMBERS, 1)}
            return {"groups": 2, "nodes": nodes, "topics": {"orders": 4}, "masters": {}}
        raise NotMaster(hint=None)

    client = phxq.Client(MEMBERS)
    try:
        client._pool.call = call  # type: ignore[method-assign,assignment]
        await client.cluster_map()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Unavailable) as info:
            await client.enqueue_many("orders", [(b"x", f"k{i}") for i in range(50)], timeout=0.3)
        assert 0.3 <= loop.time() - started < 2.0  # (the default retry_timeout is longer)
        assert "no master within 0.3s" in info.value.message
        assert "answered: store 1 (127.0.0.1:1): knows no master" in info.value.message
    finally:
        await client.close()
