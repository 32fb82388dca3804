"""Failover timing of the Paxos core on a virtual clock (issue 23: a producer's pause <= 1 s).

A master that falls silent is replaced a lease plus one heartbeat interval after the followers
last heard from it (plus the rounds of the pre-vote and phase 1), by the next node in line; a
master silent for less than that (a stall on a loaded machine) keeps its group, and so does a
master that was itself stalled for more than a lease. Timings decide availability only.
"""

from __future__ import annotations

import pytest

from phxq.paxos import GroupConfig, PreVote
from phxq.paxos.base import failover_wait
from tools.loopback import LoopbackCluster, sent

STEP = 0.005  # virtual seconds per tick


def _silent_until_replaced(c: LoopbackCluster, master: int, limit: float) -> tuple[int, float]:
    """Take ``master`` down now; tick until another node is master and ready: (it, seconds)."""
    c.down.add(master)
    start = c.now
    while c.now - start < limit:
        c.tick(STEP)
        ready = [m for m, n in c.nodes.items() if m not in c.down and n.is_master and n.ready]
        if ready:
            return ready[0], c.now - start
    raise AssertionError(f"no new master within {limit}s")


@pytest.mark.parametrize(("group", "successor"), [(0, 2), (1, 3), (2, 1)])
def test_a_silent_master_is_replaced_within_a_lease_and_a_heartbeat(
    group: int, successor: int
) -> None:
    c = LoopbackCluster(3, group=group)
    cfg = c.nodes[1].config
    preferred = cfg.preferred_master
    c.elect(preferred)
    c.propose(preferred, 1, b"before")
    c.tick(cfg.heartbeat_interval)  # a heartbeat: the followers heard it just now
    new, took = _silent_until_replaced(c, preferred, 5.0)
    assert new == successor  # the next node after the preferred one
    budget = cfg.lease + cfg.heartbeat_interval
    assert budget - STEP <= took <= budget + 2 * STEP, took
    assert budget <= 0.75  # the defaults: a producer's pause stays well under 1 s
    assert c.acked == {1: 1}


def test_the_line_is_the_preferred_node_then_the_members_after_the_master() -> None:
    def wait(n: int, node: int, master: int) -> float:
        return failover_wait(
            GroupConfig(group=0, node_id=node, members=tuple(range(1, n + 1))), master
        )

    cfg = GroupConfig(group=0, node_id=1, members=(1, 2, 3))
    first, step = cfg.lease + cfg.heartbeat_interval, cfg.lease / 2
    assert (wait(3, 2, 1), wait(3, 3, 1)) == (first, first + step)  # preferred 1 is master
    assert (wait(3, 1, 2), wait(3, 3, 2)) == (first, first + step)  # the preferred node first
    assert (wait(3, 1, 3), wait(3, 2, 3)) == (first, first + step)
    assert [wait(5, m, 3) for m in (1, 4, 5, 2)] == [first + k * step for k in range(4)]


def test_a_master_silent_for_less_than_a_lease_and_a_heartbeat_keeps_its_group() -> None:
    """A stall (the master's process paused or starved of CPU, its heartbeats late) shorter
    than the followers' wait: nobody asks for a pre-vote, and the master -- whose own tick then
    comes far behind its time -- does not step down for the silence it caused itself."""
    c = LoopbackCluster(3)
    cfg = c.nodes[1].config
    c.elect(1)
    ballot = c.nodes[1].ballot
    c.tick(cfg.heartbeat_interval)
    for m in (2, 3):
        c.effects[m].clear()
    c.down.add(1)
    for _ in range(round((cfg.lease + cfg.heartbeat_interval) / STEP) - 2):
        c.tick(STEP)
    c.down.discard(1)  # its late heartbeat goes out on its next tick
    for _ in range(round(2 * cfg.lease / STEP)):
        c.tick(STEP)
    assert not any(sent(c.effects[m], PreVote) for m in (2, 3))
    assert c.master() == 1 and c.nodes[1].ballot == ballot
    c.propose(1, 7, b"after the stall")
    c.run()
    assert 7 in c.acked
