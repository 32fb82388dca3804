"""Fault injection against real daemons: the harness, the seeded nemesis, the history and its
checker, and the torture runner (``scripts/torture``).

- :mod:`tools.fault.cluster`: 3 stores + 3 lock nodes + consumers as real processes, every
  store-to-store and lock-to-lock link through a :class:`~tools.fault.proxy.FaultProxy`;
- :mod:`tools.fault.nemesis`: seeded fault schedules and their execution;
- :mod:`tools.fault.history`: the JSON history (and the consumer-side delivery recorder);
- :mod:`tools.fault.checker`: the pure checker over a history;
- :mod:`tools.fault.torture`: one run = cluster + workload + schedule + drain + check;
- :mod:`tools.fault.fuzzgen` / :mod:`tools.fault.fuzz`: the frame fuzzer (``scripts/fuzz``);
- :mod:`tools.fault.proxy`: ``FaultProxy``, a TCP proxy that partitions, stalls and delays.
"""
