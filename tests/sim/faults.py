"""The simulator's faults (mixed into ``Sim``; see ``sim.py`` for the model).

``CHAOS`` and ``LONG`` weigh the fault kinds drawn every ``fault_interval`` (exponential):

- ``partition`` / ``heal``: random sides / everyone together (not during a long partition);
- ``crash`` (any running node), ``crash_master``, ``restart`` (a crashed node);
- ``net``: packet loss and duplication rates;
- ``duel``: every crashed node restarts, then -- now, or once the lease of the crashed master
  ran out -- two followers start phase 1 with the same round (``duel``);
- ``long_partition``: the master or a random minority is cut off for 5-20 leases while the
  clients keep proposing.

Independently, a node that submits a ``Persist`` may crash before it completes
(``CRASH_IN_PROMISE_WRITE`` when it holds a ``PromiseRecord``, else ``CRASH_IN_ACCEPT_WRITE``);
it restarts 0.2-3 leases later. Every crash keeps a random prefix of the records in flight.
"""

from __future__ import annotations

from typing import Any

from phxq.paxos import PromiseRecord, Role

CHAOS = {"partition": 20, "heal": 15, "crash": 14, "restart": 18, "net": 10, "duel": 40,
         "crash_master": 6, "long_partition": 4}  # fmt: skip
LONG = {"partition": 10, "heal": 8, "crash": 10, "restart": 18, "net": 6, "duel": 18,
        "crash_master": 12, "long_partition": 10}  # fmt: skip
CRASH_IN_PROMISE_WRITE = 0.08  # chance a node crashes while a Persist with a promise is in flight
CRASH_IN_ACCEPT_WRITE = 0.002  # ... with accepts only


class FaultsMixin:
    """Fault injection; uses ``Sim``'s nodes, network, oracle and event queue."""

    rng: Any
    n: int
    majority: int
    members: tuple[int, ...]
    nodes: Any
    now: float
    lease: float
    chaos: bool
    faulty: bool
    side: dict[int, int]
    cut: set[frozenset[int]]
    frozen_until: float
    drop_rate: float
    dup_rate: float
    fault_kinds: list[tuple[str, int]]
    kept_down: set[int]
    outstanding: dict[int, int]
    unknown: set[int]
    oracle: Any
    trace: Any
    duels: int
    long_partitions: int
    torn_writes: int
    _push: Any
    _start: Any
    up: Any
    master: Any
    execute: Any

    def _maybe_crash_in_write(self, m: int, records: Any, done_at: float) -> None:
        if not (self.faulty and self.chaos):
            return
        promise = any(type(r) is PromiseRecord for r in records)
        if self.rng.random() < (CRASH_IN_PROMISE_WRITE if promise else CRASH_IN_ACCEPT_WRITE):
            at = self.rng.uniform(self.now, done_at)
            self._push(at, "write_crash", (m, self.nodes[m].epoch))

    def _fault(self) -> None:
        rng = self.rng
        kinds, weights = zip(*self.fault_kinds, strict=True)
        kind = rng.choices(kinds, weights)[0]
        up = self.up()
        down = [m for m in self.members if m not in up]
        held = self.now < self.frozen_until
        what = kind
        if kind == "partition" and not held:
            self.side = {m: rng.randrange(2) for m in self.members}
            what = f"partition {self.side}"
        elif kind == "heal" and not held:
            self.side = {m: 0 for m in self.members}
            self.cut = set()
        elif kind == "crash" and up:
            victim = rng.choice(up)
            self.crash(victim)
            what = f"crash {victim}"
        elif kind == "crash_master" and (victim := self.master()) is not None:
            self.crash(victim)
            what = f"crash master {victim}"
        elif kind == "restart" and down:
            m = rng.choice(down)
            self._start(m)
            what = f"restart {m}"
        elif kind == "net":
            self.drop_rate = rng.choice((0.0, 0.0, 0.05, 0.2))
            self.dup_rate = rng.choice((0.0, 0.05, 0.2))
            what = f"drop={self.drop_rate} dup={self.dup_rate}"
        elif kind == "duel":
            for m in down:  # everyone takes part
                self._start(m)
            if rng.random() < 0.5:
                self.duel()
                what = "duel now"
            else:
                if (master := self.master()) is not None:  # down until a restart fault
                    self.crash(master)
                self._push(self.now + self.lease * rng.uniform(1.0, 1.2), "duel", ())
                what = f"duel once the lease of crashed master {master} ran out"
        elif kind == "long_partition" and not held:
            master = self.master()
            if master is not None and rng.random() < 0.5:
                away = {master}
            else:
                away = set(rng.sample(self.members, rng.randint(1, max(1, self.n - self.majority))))
            self.side = {m: int(m in away) for m in self.members}
            self.cut = set()
            self.frozen_until = self.now + self.lease * rng.uniform(5, 20)
            self.long_partitions += 1
            what = f"long partition {sorted(away)} until {self.frozen_until:.4f}"
        else:
            what = f"{kind} (nothing to do)"
        self.trace.append(f"{self.now:.4f} FAULT {what}")

    def duel(self) -> None:
        """Two followers start phase 1 now with the same round (their election timers fired
        together and their pre-votes passed): ballots (r, a) and (r, b). A live master is
        rebooted first: it then knows no master and promises anyone, while the followers, loyal
        to it for a lease, refuse each other, so the others' answers decide the duel."""
        if self.now >= self.frozen_until:  # not during a long partition: all can talk
            self.side = {m: 0 for m in self.members}
        master = self.master()
        if master is not None:
            self.crash(master)
            self._start(master)
        followers = [m for m in self.up() if self.nodes[m].paxos.role is Role.FOLLOWER]
        if len(followers) > 2 and master in followers:
            followers.remove(master)
        if len(followers) < 2:
            return
        self.rng.shuffle(followers)  # the two most advanced, ties broken at random
        followers.sort(key=lambda m: -self.nodes[m].paxos.chosen_up_to)
        pair = followers[:2]
        nodes = [self.nodes[m].paxos for m in pair]
        top = max(max(p._max_round, p.promised.round) for p in nodes)
        self.duels += 1
        a, b = pair
        judges = [m for m in self.up() if m not in pair and self.side[m] == self.side[a]]
        cut = bool(judges) and self.side[a] == self.side[b] and self.rng.random() < 0.7
        if cut:  # they cannot hear each other: only the others' answers decide
            self.cut.add(frozenset(pair))
            self._push(self.now + self.lease * self.rng.uniform(1, 3), "uncut", tuple(pair))
        self.trace.append(
            f"{self.now:.4f} DUEL {pair} at round {top + 1} (cut: {cut}, rebooted {master})"
        )
        for m, p in zip(pair, nodes, strict=True):
            p._max_round = top  # only ever raised: as if it had seen round ``top``
            p._prevote_ok_until = self.now + self.lease  # what a passed pre-vote sets
            p._master = None
            out: list[Any] = []
            p._start_phase1(self.now, out)
            self.execute(m, out)

    def crash(self, m: int) -> None:
        """Power loss at ``m``: the durable records stay, with a random prefix of the ones in
        flight; the rest and everything in memory are lost."""
        sn = self.nodes[m]
        disk = sn.disk
        keep = self.rng.randint(0, len(disk.pending))
        self.torn_writes += 0 < keep < len(disk.pending)
        kept = disk.crash(keep)
        self.oracle.on_durable(m, kept)
        sn.learned = sn.learned[: disk.chosen_up_to]
        sn.paxos = None
        sn.epoch += 1
        for pid, at in list(self.outstanding.items()):
            if at == m:  # the client sees the connection drop: outcome unknown
                del self.outstanding[pid]
                self.unknown.add(pid)

    def heal(self, keep_down: int = 0) -> None:
        """End of chaos: reconnect everything, no loss; restart every crashed node except
        ``keep_down`` of them (at most a minority), which stay crashed for good."""
        assert keep_down <= self.n - self.majority
        self.chaos = False
        self.side = {m: 0 for m in self.members}
        self.cut = set()
        self.frozen_until = 0.0
        self.drop_rate = self.dup_rate = 0.0
        self.kept_down = set(self.rng.sample(self.members, keep_down))
        for m in self.members:
            sn = self.nodes[m]
            if m in self.kept_down and sn.paxos is not None:
                self.crash(m)
            elif m not in self.kept_down and sn.paxos is None:
                self._start(m)
        self.trace.append(f"{self.now:.4f} HEAL (kept down: {sorted(self.kept_down)})")
