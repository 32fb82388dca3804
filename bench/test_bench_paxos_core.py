"""Proposals per second through a 3-replica in-memory Paxos loop (no I/O, no codec).

Effects are delivered synchronously and persists complete at once (``LoopbackCluster``), so this
measures the pure cost of the core: batching, pipelining, voting, learning, checksums.
Run: ``.venv/bin/pytest bench/test_bench_paxos_core.py --benchmark-only``.
"""

from __future__ import annotations

from typing import Any

from tools.loopback import LoopbackCluster

ITEM = b"x" * 100


def _cluster(**config: Any) -> LoopbackCluster:
    c = LoopbackCluster(3, **config)
    c.elect(1)
    return c


def _sequential(c: LoopbackCluster, start: int, count: int) -> None:
    """One proposal at a time: each is chosen and learned before the next (no batching)."""
    for pid in range(start, start + count):
        c.propose(1, pid, ITEM)
        c.run()


def _burst(c: LoopbackCluster, start: int, count: int) -> None:
    """``count`` proposals queued at once: the window pipelines, the backlog batches."""
    for pid in range(start, start + count):
        c.propose(1, pid, ITEM)
    c.run()


def test_bench_sequential_proposals(benchmark: Any) -> None:
    c = _cluster()
    count = 1000
    state = {"next": 0}

    def one_round() -> None:
        _sequential(c, state["next"], count)
        state["next"] += count

    benchmark.pedantic(one_round, rounds=5, iterations=1)
    assert len(c.acked) == state["next"]
    benchmark.extra_info["proposals_per_round"] = count
    benchmark.extra_info["proposals_per_s"] = count / benchmark.stats.stats.mean


def test_bench_burst_proposals_batched(benchmark: Any) -> None:
    c = _cluster(window=8, max_batch_items=1024)
    count = 20_000
    state = {"next": 0}

    def one_round() -> None:
        _burst(c, state["next"], count)
        state["next"] += count

    benchmark.pedantic(one_round, rounds=5, iterations=1)
    assert len(c.acked) == state["next"]
    benchmark.extra_info["proposals_per_round"] = count
    benchmark.extra_info["proposals_per_s"] = count / benchmark.stats.stats.mean
