"""The Paxos core under a hostile simulated network, disks and crashes (see ``sim.py``).

Each run checks safety after every step and liveness after the final heal. A failure names its
seed; ``pytest tests/sim --sim-seed N`` replays exactly that run.
"""

from __future__ import annotations

from typing import Any

import pytest

from phxq.paxos import PaxosNode
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
    assert all(any(sn.learned for sn in s.nodes.values()) for s in sims)  # and progress


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
@pytest.mark.timeout(3600)  # 3000 seeds: well past the suite's default per-test timeout
@pytest.mark.parametrize("n", [3, 5])
def test_many_more_seeds(n: int, sim_steps: int) -> None:
    run_seeds(list(range(SLOW_SEEDS)), n, sim_steps)


def run_rejoin(seed: int, n: int, mode: str) -> Sim:
    sim = Sim(seed, n, fault_interval=1e9, client_interval=0.02)
    sim.rejoin(mode, leases=20)
    if mode == "master":
        assert sim.elections[-1][1] == 1 and sim.nodes[1].paxos is not None
        assert sim.nodes[1].paxos.is_master
    else:
        assert len(sim.elections) == 1  # node 1, once, at the start
    return sim


class TestRejoinDoesNotDeposeTheMaster:
    """Pre-vote: a node cut off for many leases never raises its round, so reconnecting it
    does not depose the healthy master (``Sim.rejoin``); the safety checker runs throughout."""

    CI_SEEDS = 12  # --sim-seeds N runs N seeds; the slow test runs SLOW_SEEDS // 10 of each

    def seeds(self, request: pytest.FixtureRequest, sim_seeds: list[int]) -> list[int]:
        if request.config.getoption("--sim-seeds") is None and len(sim_seeds) > 1:
            return sim_seeds[: self.CI_SEEDS]
        return sim_seeds

    @pytest.mark.parametrize("n", [3, 5])
    @pytest.mark.parametrize("mode", ["isolate", "from_master"])
    def test_a_follower_cut_off_and_reconnected(
        self, request: pytest.FixtureRequest, sim_seeds: list[int], n: int, mode: str
    ) -> None:
        for seed in self.seeds(request, sim_seeds):
            run_rejoin(seed, n, mode)

    @pytest.mark.parametrize("n", [3, 5])
    def test_the_master_cut_off_and_reconnected(
        self, request: pytest.FixtureRequest, sim_seeds: list[int], n: int
    ) -> None:
        for seed in self.seeds(request, sim_seeds):
            run_rejoin(seed, n, "master")

    def test_the_scenario_catches_a_disruptive_rejoin(self) -> None:
        """Without pre-vote (a cut-off follower runs phase 1 itself), the check fails."""

        class NoPreVote(PaxosNode):
            def _start_prevote(self, now: float, out: list[Any], takeover: bool) -> None:
                self._start_phase1(now, out)

        import tests.sim.sim as sim_module

        original = sim_module.PaxosNode
        sim_module.PaxosNode = NoPreVote  # type: ignore[misc]
        try:
            with pytest.raises(SimViolation, match="REJOIN"):
                run_rejoin(1, 3, "isolate")
        finally:
            sim_module.PaxosNode = original  # type: ignore[misc]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("mode", ["isolate", "from_master", "master"])
def test_rejoin_many_more_seeds(n: int, mode: str) -> None:
    for seed in range(SLOW_SEEDS // 10):
        run_rejoin(seed, n, mode)
