"""Which stores one routed call steers around while it looks for a group's master.

Two kinds, kept apart because they mean different things:

- **down**: the store did not answer (timeout, refused, lost, left by a hedge) or answered that
  it could not do it. Its claims to be master, and hints naming it, are not followed for
  ``DOWN_HOLD`` seconds after its latest failure (an isolated old master still names itself);
  then it is trusted again: it may have restarted and been elected since.
- **clueless**: the store answered ``NotMaster`` without a hint (an election is under way, or it
  is cut off from its peers). It is only not asked first while no master is known; what it says
  later counts at once -- it is often the store that wins the election.

Times come from the running event loop's clock (``loop.time()``).
"""

from __future__ import annotations

import asyncio

DOWN_HOLD = 1.0  # about one election (lease + heartbeat, tests/unit/test_paxos_failover.py)


class Avoid:
    """The stores a call steers around (see the module docstring). ``addr in avoid`` is True
    for a store that is down now; :meth:`skips` also for a clueless one."""

    def __init__(self) -> None:
        self._down: dict[str, float] = {}  # address -> loop time of its latest failure
        self._clueless: set[str] = set()

    def failed(self, addr: str) -> None:
        """``addr`` did not answer, or could not do it: down for ``DOWN_HOLD`` s from now."""
        self._down[addr] = _now()
        self._clueless.discard(addr)

    def knows_no_master(self, addr: str) -> None:
        """``addr`` answered ``NotMaster`` without a hint (it is alive: no longer down)."""
        self._down.pop(addr, None)
        self._clueless.add(addr)

    def __contains__(self, addr: object) -> bool:
        since = self._down.get(addr) if isinstance(addr, str) else None
        return since is not None and _now() - since < DOWN_HOLD

    def skips(self, addr: str) -> bool:
        """Not to be asked first while no master is known: down or clueless."""
        return addr in self._clueless or addr in self

    def clear(self) -> None:
        self._down.clear()
        self._clueless.clear()

    def down(self) -> set[str]:
        """The stores down now."""
        return {a for a in self._down if a in self}


def _now() -> float:
    return asyncio.get_running_loop().time()
