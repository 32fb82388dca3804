"""Shared pytest options. ``--sim-seed`` / ``--sim-seeds`` drive the Paxos simulator."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("phxq simulator")
    group.addoption("--sim-seed", type=int, default=None, help="replay exactly one simulator seed")
    group.addoption("--sim-seeds", type=int, default=None, help="number of simulator seeds to run")
    group.addoption("--sim-steps", type=int, default=None, help="steps per simulator run")
