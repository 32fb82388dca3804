"""The pre-vote rejoin scenario of the simulator (``Sim.rejoin``).

No random faults, steady load, node 1 (the preferred master of group 0) elected; then one node is
cut off for ``leases`` lease periods and reconnected. ``mode``: ``"isolate"`` (a follower loses
every link), ``"from_master"`` (a follower loses only its link to the master), ``"master"`` (the
master loses every link). For followers the master must keep its role and ballot throughout and
no replica may ever promise a higher ballot; when the master itself was cut off, the survivors
elect one master while it is away, and after the heal the only election is the preferred node
taking its group back. Every check of the simulator runs throughout.
"""

from __future__ import annotations

from typing import Any

from phxq.paxos import Ballot


class RejoinMixin:
    """Mixed into ``Sim``; uses its loop, network and checks."""

    configs: Any
    nodes: Any
    members: Any
    rng: Any
    elections: list[tuple[float, int, Any]]
    acked: Any
    now: float
    side: Any
    cut: Any
    trace: Any
    fault_interval: float
    dup_rate: float
    chaos: bool
    step: Any
    fail: Any
    new_item: Any
    converged: Any
    check_final: Any

    def rejoin(self, mode: str, leases: int = 20) -> None:
        """The pre-vote scenario (see the module docstring); raises ``SimViolation``."""
        assert mode in ("isolate", "from_master", "master"), mode
        assert self.fault_interval >= 1e6, "rejoin needs a Sim without random faults"
        lease = self.configs[1].lease
        self.dup_rate = self.rng.choice((0.0, 0.05))
        master = self.nodes[1]
        until = self.now + 50 * lease
        while not (master.paxos is not None and master.paxos.ready and self.acked):
            self.step()
            if self.now > until:
                self.fail("REJOIN: node 1 was never elected")
        ballot = master.paxos.ballot
        victim = 1 if mode == "master" else self.rng.choice(self.members[1:])
        if mode == "from_master":
            self.cut = {frozenset((1, victim))}
        else:
            self.side = {m: int(m == victim) for m in self.members}
        self.trace.append(f"{self.now:.4f} REJOIN cut {mode} node {victim}")
        cut_at, heal_at = self.now, self.now + leases * lease
        while self.now < heal_at:
            self.step()
            if mode != "master":
                self._check_undisturbed(ballot)
        elected = [e for e in self.elections if e[0] >= cut_at]
        if mode == "master":
            if not elected:
                self.fail("REJOIN: nobody took over from the cut-off master")
            last = max(b for _, _, b in elected)
            self._quiet_after(cut_at + 10 * lease, last, "while the master was away")
        self.side = {m: 0 for m in self.members}
        self.cut = set()
        self.trace.append(f"{self.now:.4f} REJOIN healed node {victim}")
        healed_at = self.now
        fresh: list[int] = []
        while self.now < healed_at + max(20, leases) * lease:
            self.step()
            if mode != "master":
                self._check_undisturbed(ballot)
            if not fresh and self.now >= healed_at + 5 * lease:
                fresh = [self.new_item() for _ in range(5)]
        after = [(n, b) for t, n, b in self.elections if t >= healed_at]
        if mode == "master" and (len(after) != 1 or after[0][0] != 1):
            self.fail(f"REJOIN: after the heal expected one takeover by node 1, got {after}")
        self.chaos = False
        self._settle(fresh)

    def _check_undisturbed(self, ballot: Ballot) -> None:
        p = self.nodes[1].paxos
        if p is None or not p.is_master or p.ballot != ballot:
            self.fail(f"REJOIN: the healthy master lost its role or ballot {ballot}")
        for m, sn in self.nodes.items():
            if sn.paxos is not None and sn.paxos.promised > ballot:
                self.fail(f"REJOIN: node {m} promised {sn.paxos.promised} above {ballot}")

    def _quiet_after(self, since: float, ballot: Ballot, when: str) -> None:
        later = [e for e in self.elections if e[0] >= since and e[2] != ballot]
        if later:
            self.fail(f"REJOIN: elections {when} after the new master settled: {later}")

    def _settle(self, fresh: list[int], settle: float = 5.0) -> None:
        deadline = self.now + settle
        while self.now < deadline:
            if not self.step():
                break
            if self.steps % 50 == 0 and self.converged(fresh):
                break
        self.check_final(fresh)
