"""How fast :class:`phxq.Client` reaches a new master, on a virtual clock (issue 23).

Three scripted stores of one group on an in-memory network; the real client (routing, retries,
batching) on an event loop whose clock jumps to the next timer when every task waits, so the
figures are exact and the test takes no real time. A producer enqueues sequentially; store 1,
the master, is killed (its connections close, nothing listens) or paused (it accepts and never
answers, as a SIGSTOPped process or a store cut off by a partition does); the others elect store
2 ``ELECTION`` virtual seconds later -- what the Paxos core takes with the default settings
(tests/unit/test_paxos_failover.py), plus a margin for its rounds. The producer's longest pause
must stay within the election plus ``CLIENT_LAG`` (the retry/probe cadence), well under 1 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

import phxq
from phxq.client import avoid, hedge, routing
from phxq.errors import NotMaster
from phxq.net import RpcPool, RpcServer
from phxq.paxos import GroupConfig
from phxq.testing import MemoryNetwork
from tests.sim.runtime_sim_world import VirtualLoop

T = TypeVar("T")

DEFAULTS = GroupConfig(group=0, node_id=2, members=(1, 2, 3))
ELECTION = DEFAULTS.lease + DEFAULTS.heartbeat_interval + 0.03
# the slowest of: a paused master's next hedge, a killed one's jittered retry; plus rounds
CLIENT_LAG = max(hedge.HEDGE_EVERY, 1.5 * routing.RETRY_BACKOFF_MAX) + 0.03
ADDRS = {i: f"store{i}:7000" for i in (1, 2, 3)}


class ScriptedStores:
    """Three stores of one group, as the client sees them: ``views[n]`` is who store ``n``
    says is master; ``paused`` stores accept requests and never answer (nor finish the ones
    they hold); a master ``catching_up`` answers ``NotMaster`` naming itself (elected, not
    serving yet), at most ``MAX_NOT_READY`` times (then it serves: a busy client ends)."""

    MAX_NOT_READY = 1000

    def __init__(self, net: MemoryNetwork) -> None:
        self.net = net
        self.views: dict[int, int | None] = dict.fromkeys(ADDRS, 1)
        self.paused: set[int] = set()
        self.catching_up: set[int] = set()
        self.not_ready = 0  # NotMaster answers naming the store itself
        self.metas = dict.fromkeys(ADDRS, 0)
        self.polls = dict.fromkeys(ADDRS, 0)  # dequeue requests served (not refused)
        self.messages: list[tuple[int, bytes]] = []  # what a dequeue reads (offset, payload)
        self.servers = {n: RpcServer(self._handler(n)) for n in ADDRS}
        self.offset = 0
        for n, server in self.servers.items():
            net.listen(ADDRS[n], server.accept)

    def _handler(self, node: int) -> Any:
        async def handle(method: str, params: Any) -> Any:
            if node in self.paused:
                await asyncio.Event().wait()  # silent forever
            if method == "meta":
                self.metas[node] += 1
                return {
                    "groups": 1,
                    "nodes": {str(n): a for n, a in ADDRS.items()},
                    "set": 1,
                    "topics": {"t": 1},
                    "masters": {"0": self.views[node]},
                }
            assert method in ("enqueue", "dequeue"), method
            master = self.views[node]
            if master != node:
                raise NotMaster(hint=None if master is None else ADDRS[master])
            if node in self.catching_up and self.not_ready < self.MAX_NOT_READY:
                self.not_ready += 1
                raise NotMaster(hint=ADDRS[node])
            if method == "dequeue":
                self.polls[node] += 1
                if not self.messages and params.get("wait"):
                    await asyncio.sleep(params["wait"])  # long poll: nothing arrives here
                if node in self.paused:
                    await asyncio.Event().wait()  # paused while polling: silent forever
                return [[o, p, None, {}, 0.0] for o, p in self.messages]
            replies = []
            for _queue, messages in params["batches"]:
                replies.append([[self.offset + i, False] for i in range(len(messages))])
                self.offset += len(messages)
            return replies

        return handle

    async def kill(self, node: int) -> None:
        self.net.unlisten(ADDRS[node])
        await self.servers[node].close()

    def restart(self, node: int) -> None:
        self.servers[node] = RpcServer(self._handler(node))
        self.net.listen(ADDRS[node], self.servers[node].accept)

    def elect(self, node: int) -> None:
        """The survivors elected ``node``: it and the others now say so."""
        for n in self.views:
            if n not in self.paused:
                self.views[n] = node


CATCH_UP = 0.3  # how long a new master answers NotMaster naming itself ("kill-catchup")


async def scripted() -> tuple[ScriptedStores, phxq.Client]:
    """The scripted stores on a memory network, and a client that reaches them over it."""
    net = MemoryNetwork()
    stores = ScriptedStores(net)
    client = phxq.Client(list(ADDRS.values()))
    await client._pool.close()
    client._pool = RpcPool(transport_factory=net.connect)
    return stores, client


async def longest_pause(fault: str) -> tuple[float, ScriptedStores]:
    stores, client = await scripted()
    loop = asyncio.get_running_loop()
    acks: list[float] = []
    stop = asyncio.Event()

    async def produce() -> None:
        seq = 0
        while not stop.is_set():
            await client.enqueue("t", b"m", queue=0, dedup_id=f"p-{seq}")
            acks.append(loop.time())
            seq += 1
            await asyncio.sleep(0.001)

    async with client:
        producer = asyncio.ensure_future(produce())
        await asyncio.sleep(0.5)
        if fault == "pause":
            stores.paused.add(1)  # its next request hangs
        else:
            await stores.kill(1)
        if fault in ("kill-split", "kill-return"):
            # Mid-election: store 2 (about to win) knows no master, store 3 still names the
            # dead one. Store 2's NotMaster without a hint must not bar it once it is elected.
            stores.views[2] = None
        await asyncio.sleep(ELECTION)
        if fault == "kill-return":
            stores.restart(1)  # restarted at once and elected again: no longer down
            stores.elect(1)
        else:
            stores.elect(2)
        if fault == "kill-catchup":
            # Elected, but applying what store 1 chose before it serves.
            stores.catching_up.add(2)
            loop.call_later(CATCH_UP, stores.catching_up.discard, 2)
        await asyncio.sleep(1.0)
        stop.set()
        await producer
    for server in stores.servers.values():
        await server.close()
    assert acks and acks[-1] > 1.5 + ELECTION - 0.1, "the producer never got going again"
    return max(b - a for a, b in itertools.pairwise(acks)), stores


def virtually(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a virtual-clock loop; it must take little real time (no real waiting)."""
    loop = VirtualLoop()
    started = time.monotonic()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
        assert time.monotonic() - started < 10  # virtual time: no real waiting


@pytest.mark.parametrize("fault", ["kill", "pause", "kill-split"])
def test_a_producer_reaches_the_new_master_soon_after_the_election(fault: str) -> None:
    pause, _ = virtually(longest_pause(fault))
    assert ELECTION - 0.01 <= pause <= ELECTION + CLIENT_LAG, pause
    assert ELECTION + CLIENT_LAG < 1.0


def test_a_failed_store_that_comes_back_as_master_is_reached_again() -> None:
    """A killed master avoided by a call is asked again once ``DOWN_HOLD`` has passed: store
    3 names it (elected again after a restart), and the call must not wait for its budget."""
    pause, _ = virtually(longest_pause("kill-return"))
    assert ELECTION - 0.01 <= pause <= max(ELECTION, avoid.DOWN_HOLD) + CLIENT_LAG, pause


def test_a_down_store_is_skipped_for_a_while_and_a_clueless_one_still_counts() -> None:
    """``_master_addr`` skips a known master that is down (a map refresh from a lagging store
    may have put it back) and a store that knew no master; the down one only for
    ``DOWN_HOLD`` s, the clueless one only as the first to ask: its claims count at once."""
    from phxq.client.types import ClusterMap

    async def scenario() -> None:
        client = phxq.Client(list(ADDRS.values()))
        try:
            cmap = ClusterMap(1, dict(ADDRS), {"t": 1}, {(1, 0): 1})
            shun = avoid.Avoid()
            shun.failed(ADDRS[1])
            shun.knows_no_master(ADDRS[2])
            assert client._master_addr(cmap, (1, 0), shun) == ADDRS[3]
            assert ADDRS[1] in shun and ADDRS[2] not in shun  # a probe counts store 2's claim
            await asyncio.sleep(avoid.DOWN_HOLD)
            assert ADDRS[1] not in shun
            assert client._master_addr(cmap, (1, 0), shun) == ADDRS[1]
            shun.failed(ADDRS[3])
            shun.failed(ADDRS[1])
            # every store skipped: start over with the preferred one (the known master here)
            assert client._master_addr(cmap, (1, 0), shun) == ADDRS[1]
            assert ADDRS[3] not in shun and not shun.skips(ADDRS[2])
        finally:
            await client.close()

    virtually(scenario())


def test_a_new_master_catching_up_is_asked_again_after_a_pause_not_in_a_busy_loop() -> None:
    """A new master answers ``NotMaster`` naming itself until it has applied what its
    predecessor chose: the client asks it again after the jittered backoff (doubling up to
    ``RETRY_BACKOFF_MAX``), a handful of times, and reaches it soon after it serves."""
    pause, stores = virtually(longest_pause("kill-catchup"))
    # jittered pauses of 0.5..1.5 x 0.02, 0.04, 0.08, then 0.1 fill CATCH_UP: at most ~9 asks
    assert 1 <= stores.not_ready <= 12, stores.not_ready
    assert ELECTION - 0.01 <= pause <= ELECTION + CATCH_UP + CLIENT_LAG, pause


async def long_poll(fault: str, wait: float, polls: int = 1) -> tuple[list[Any], ScriptedStores]:
    """``polls`` concurrent ``dequeue(wait=...)`` of queue 0, store 1 the master; with
    ``fault="pause"`` store 1 is paused 0.5 s in and store 2 elected ``ELECTION`` s later, with
    a message to read. Each poll's (virtual seconds it took, messages)."""
    stores, client = await scripted()
    loop = asyncio.get_running_loop()

    async def poll() -> tuple[float, list[int]]:
        start = loop.time()
        got = await client.dequeue(None, "t", queue=0, wait=wait)
        return loop.time() - start, [m.offset for m in got]

    async with client:
        await client.cluster_map()
        stores.metas = dict.fromkeys(ADDRS, 0)
        running = [asyncio.ensure_future(poll()) for _ in range(polls)]
        if fault == "pause":
            await asyncio.sleep(0.5)
            stores.paused.add(1)  # the poll it holds never ends
            await asyncio.sleep(ELECTION)
            stores.elect(2)
            stores.messages = [(7, b"m")]
        results = await asyncio.gather(*running)
    for server in stores.servers.values():
        await server.close()
    return list(results), stores


def test_a_long_poll_to_a_paused_master_fails_over_soon_after_the_election() -> None:
    """A dequeue long-polling (``wait=30``) a master that is then paused is left once another
    store says it is master, not after ``wait + request_timeout``, and redone there."""
    results, stores = virtually(long_poll("pause", wait=30.0))
    [(took, offsets)] = results
    assert offsets == [7] and stores.polls[2] == 1
    # noticed within a check and its timeout of the pause; then the others' next answer
    noticed = max(ELECTION, hedge.LONG_POLL_CHECK + hedge.META_TIMEOUT)
    assert 0.5 + ELECTION <= took <= 0.5 + noticed + hedge.HEDGE_EVERY + 0.03, took


def test_a_long_poll_to_a_healthy_master_is_neither_cancelled_nor_probing_the_others() -> None:
    """Long polls to a healthy master with nothing to read run their whole wait, once each;
    their watch only asks the polled store itself (one ``meta`` per ``LONG_POLL_CHECK`` s,
    shared by the polls in flight), never the other stores."""
    results, stores = virtually(long_poll("none", wait=5.0, polls=3))
    for took, offsets in results:
        assert offsets == [] and 5.0 <= took <= 5.01, (took, offsets)
    assert stores.polls == {1: 3, 2: 0, 3: 0}
    assert stores.metas[2] == stores.metas[3] == 0
    assert stores.metas[1] <= 5.0 / hedge.LONG_POLL_CHECK + 1, stores.metas


def test_a_short_long_poll_answered_in_time_starts_no_watch() -> None:
    """A consumer daemon's polls (0.5 s) answered in time by a healthy master are not watched
    at all: no ``meta`` to any store, however many polls run (the idle cost of consumers)."""

    async def repeated() -> ScriptedStores:
        stores = None
        for _ in range(4):
            _, stores = await long_poll("none", wait=0.5, polls=8)
            assert stores.metas == dict.fromkeys(ADDRS, 0), stores.metas
        assert stores is not None
        return stores

    stores = virtually(repeated())
    assert stores.polls == {1: 8, 2: 0, 3: 0}
