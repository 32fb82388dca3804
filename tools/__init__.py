"""Test and operations tooling that ships in no wheel (``pyproject.toml`` packages only ``phxq``).

- :mod:`tools.fault`: the fault suite against real daemons (harness, nemesis, history, checker,
  torture runner, frame fuzzer) and the TCP :class:`~tools.fault.proxy.FaultProxy`;
- :mod:`tools.loopback`: ``LoopbackCluster`` and the effect-list helpers for the Paxos core's
  unit tests and benchmarks.

Run from a checkout (``scripts/torture``, ``scripts/fuzz`` and pytest put it on ``sys.path``).
Public helpers for users' own tests live in :mod:`phxq.testing`.
"""
