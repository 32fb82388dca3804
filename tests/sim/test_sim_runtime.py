"""The replication runtime (real hosts and replicas) under seeded faults (see ``runtime_sim.py``).

Every run checks the invariants of ``tests/sim`` on the runtime: one value per instance, state
machines applying the chosen log strictly in order, every acked proposal at its place and, once
the faults stop, every replica converged with every acked item applied. A failure names its
seed; ``pytest tests/sim --sim-seed N`` replays exactly that run.
"""

from __future__ import annotations

import pytest

from tests.sim.runtime_sim import PLANTED, RuntimeSim, RuntimeViolation, digest

CI_SEEDS = 8
SLOW_SEEDS = 300
# Planted bugs: seeds run per bug in CI, and the share of them that must catch it. The shares
# measured over seeds 0..29 are in the docstring of ``test_planted_runtime_bug_is_caught``.
BUG_SEEDS = {"ack_before_apply": 4, "apply_out_of_order": 4, "reply_before_persist": 10}
BUG_SHARE = {"ack_before_apply": 0.75, "apply_out_of_order": 1.0, "reply_before_persist": 0.3}


@pytest.fixture
def runtime_seeds(request: pytest.FixtureRequest) -> list[int]:
    one = request.config.getoption("--sim-seed")
    if one is not None:
        return [one]
    count = request.config.getoption("--sim-seeds")
    return list(range(CI_SEEDS if count is None else count))


def test_the_runtime_keeps_every_invariant_under_faults(runtime_seeds: list[int]) -> None:
    sims = [RuntimeSim(seed).run() for seed in runtime_seeds]
    if len(sims) > 1:  # the faults really happen, and so does progress
        assert sum(s.crashes for s in sims) > 0 and sum(s.power_losses for s in sims) > 0
        assert sum(len(s.unknown) for s in sims) > 0  # outcomes left unknown by the faults
        assert all(len(s.acked) > 10 and len(s.chosen) > 5 for s in sims)


def test_a_seed_replays_exactly() -> None:
    assert digest(RuntimeSim(3).run()) == digest(RuntimeSim(3).run())


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_runtime_bug_is_caught(bug: str) -> None:
    """The checker is only worth something if it fails on a broken runtime. Measured share of
    seeds 0..29 that catch each bug: ack_before_apply (acks a proposal as soon as Paxos has
    it) 27/30, apply_out_of_order (instances reach the state machine in swapped pairs) 30/30,
    reply_before_persist (the core hears records are durable before they are; caught after a
    power loss during a disk stall) 12/30."""
    caught = 0
    seeds = range(BUG_SEEDS[bug])
    for seed in seeds:
        try:
            RuntimeSim(seed, bug=bug).run()
        except RuntimeViolation as exc:
            assert f"seed={seed} bug={bug}" in str(exc)
            assert "SAFETY" in str(exc), str(exc)
            caught += 1
    assert caught >= BUG_SHARE[bug] * len(seeds), f"{bug}: caught in {caught}/{len(seeds)} seeds"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_many_more_runtime_seeds() -> None:
    for seed in range(SLOW_SEEDS):
        RuntimeSim(seed).run()
