"""Fault injection against real daemons: the harness, the seeded nemesis, the history and its
checker, and the torture runner (``scripts/torture``).

- :mod:`phxq.fault.cluster`: 3 stores + 3 lock nodes + consumers as real processes, every
  store-to-store and lock-to-lock link through a :class:`~phxq.net.proxy.FaultProxy`;
- :mod:`phxq.fault.nemesis`: seeded fault schedules and their execution;
- :mod:`phxq.fault.history`: the JSON history (and the consumer-side delivery recorder);
- :mod:`phxq.fault.checker`: the pure checker over a history;
- :mod:`phxq.fault.torture`: one run = cluster + workload + schedule + drain + check.
"""
