"""The Paxos core under a hostile simulated network, disks and crashes (see ``sim.py``).

Each run checks safety after every step and liveness after the final heal. A failure names its
seed; ``pytest tests/sim --sim-seed N`` replays exactly that run.
"""

from __future__ import annotations

import pytest

from tests.sim.sim import BUGS, Sim, SimViolation

SLOW_SEEDS = 3000


def run_seeds(seeds: list[int], n: int, steps: int) -> int:
    """Run every seed; fail with the first violation. Returns the total step count."""
    total = 0
    for seed in seeds:
        sim = Sim(seed, n)
        sim.run(steps)
        total += sim.steps
    return total


def test_three_replicas_keep_every_invariant(sim_seeds: list[int], sim_steps: int) -> None:
    assert run_seeds(sim_seeds, 3, sim_steps) >= len(sim_seeds) * sim_steps


def test_five_replicas_keep_every_invariant(sim_seeds: list[int], sim_steps: int) -> None:
    assert run_seeds(sim_seeds, 5, sim_steps) >= len(sim_seeds) * sim_steps


def test_a_seed_replays_exactly() -> None:
    first, second = Sim(7, 3), Sim(7, 3)
    first.run(1500)
    second.run(1500)
    assert list(first.trace) == list(second.trace)
    assert [e.checksum for e in first.nodes[1].learned] == [
        e.checksum for e in second.nodes[1].learned
    ]


def test_without_faults_one_master_chooses_every_request() -> None:
    sim = Sim(1, 3, fault_interval=1e9)
    sim.run(3000)
    assert sim.masters_seen == {1}  # group 0 -> preferred master is members[0]
    assert not sim.unknown
    assert len(sim.acked) > len(sim.items) // 2  # the rest gave up before the first election
    assert len(sim.nodes[1].learned) == len(sim.nodes[2].learned) == len(sim.nodes[3].learned)


def test_chaos_really_happens() -> None:
    """Guard against a simulator that silently stopped injecting faults."""
    sims = [Sim(seed, 3) for seed in range(20)]
    for sim in sims:
        sim.run(2000)
    assert sum(len(s.masters_seen) > 1 for s in sims) >= 5  # failovers happened
    assert sum(len(s.unknown) for s in sims) > 0  # crashes/step-downs left unknown outcomes
    assert all(len(s.nodes[1].learned) > 0 for s in sims)


@pytest.mark.parametrize("bug", BUGS)
def test_planted_bug_is_caught_within_ci_seeds(bug: str, sim_steps: int) -> None:
    """The checker is only worth something if it fails on a broken core."""
    from tests.sim.conftest import CI_SEEDS

    for seed in range(CI_SEEDS):
        try:
            Sim(seed, 3, bug=bug).run(sim_steps)
        except SimViolation as exc:
            assert "SAFETY" in str(exc), str(exc)
            assert f"seed={seed}" in str(exc)
            return
    pytest.fail(f"planted bug {bug!r} survived {CI_SEEDS} seeds")


@pytest.mark.slow
@pytest.mark.parametrize("n", [3, 5])
def test_many_more_seeds(n: int, sim_steps: int) -> None:
    run_seeds(list(range(SLOW_SEEDS)), n, sim_steps)
