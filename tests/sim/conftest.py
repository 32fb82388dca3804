"""Simulator seeds and steps from the command line.

- default (CI): ``CI_SEEDS`` seeds of ``--sim-steps`` (default ``DEFAULT_STEPS``) steps for 3 and
  5 replicas; the first 100 of them for groups of 1, 2 and 4; 8 long runs (30k steps) per size;
  the planted-bug tests count catches over the ``CI_SEEDS`` seeds of 3 replicas;
- ``--sim-seeds N``: seeds ``0..N-1``; ``--sim-seed N``: exactly seed N (replay a failure: every
  simulator test runs that seed);
- tests marked ``slow`` (3000 seeds per size) run with ``pytest tests/sim -m slow``.

The pre-vote rejoin scenarios (``TestRejoinDoesNotDeposeTheMaster``) run 12 seeds per case by
default, every seed of ``--sim-seeds N``, and 300 per case in the slow run.
"""

from __future__ import annotations

import pytest

CI_SEEDS = 300
DEFAULT_STEPS = 2000


@pytest.fixture
def sim_seeds(request: pytest.FixtureRequest) -> list[int]:
    one = request.config.getoption("--sim-seed")
    if one is not None:
        return [one]
    count = request.config.getoption("--sim-seeds")
    return list(range(CI_SEEDS if count is None else count))


@pytest.fixture
def sim_steps(request: pytest.FixtureRequest) -> int:
    steps = request.config.getoption("--sim-steps")
    return DEFAULT_STEPS if steps is None else steps
