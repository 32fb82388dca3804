"""A deterministic simulator for the Paxos core (STYLE.md §5).

``Sim(seed, n=3|5, bug=None).run(steps)`` drives ``n`` ``PaxosNode`` replicas over a simulated
network that drops, duplicates, delays, reorders and partitions (every message goes through the
wire codec), with simulated disks (persists complete after a small random delay, in order) and
crash/restart that loses every persist not yet complete. A virtual clock jumps from event to
event. Clients propose unique items at random nodes and follow ``not_master`` hints.

After every step the checker asserts (raising ``SimViolation`` with ``seed=N`` and a trace tail):
at most one value chosen per instance (ground truth: a majority of *durable* AcceptRecords with
one ballot); every learned value is that chosen value, learned strictly in order, once, with the
right chain checksum; no item is chosen in two instances; an acked item is at its instance; an
item whose every attempt failed with ``not_master`` is never chosen. After the chaos, the network
heals and every node restarts (in ~30% of runs a random minority stays crashed for good); within
bounded virtual time all client requests must be resolved, fresh items must be acked, and all
live replicas must converge on the same ``chosen_up_to`` and checksum covering every chosen
instance.

``Sim.rejoin(mode, leases)`` is the pre-vote scenario: no random faults, steady load, node 1
(the preferred master of group 0) elected; then one node is cut off for ``leases`` lease periods
and reconnected. ``mode``: ``"isolate"`` (a follower loses every link), ``"from_master"`` (a
follower loses only its link to the master), ``"master"`` (the master loses every link). For
followers the master must keep its role and ballot throughout and no replica may ever promise a
higher ballot; when the master itself was cut off, the survivors elect one master while it is
away, and after the heal the only election is the preferred node taking its group back.

``bug`` plants a known defect to prove the checker catches it: ``"forget_promise"`` (restart
forgets the promised ballot and accepted values) or ``"reply_before_persist"``.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from phxq.paxos import (
    ZERO,
    AcceptRecord,
    Ballot,
    CatchupReply,
    ChosenEntry,
    Divergence,
    GroupConfig,
    Learned,
    PaxosNode,
    Persist,
    PromiseRecord,
    ProposalFailed,
    RecoveredState,
    RoleChanged,
    Send,
    ServeCatchup,
    chain_checksum,
    decode_batch,
    decode_message,
    encode_message,
    recover_state,
)

BUGS = ("forget_promise", "reply_before_persist")


class SimViolation(AssertionError):
    """An invariant failed; the message names the seed and ends with the trace tail."""


class EarlyReplyNode(PaxosNode):
    """Planted bug: sends replies without waiting for their records to be durable."""

    def _after_durable(self, action: Any, out: list[Any]) -> None:
        out.append(action)


@dataclass
class SimNode:
    node_id: int
    paxos: PaxosNode | None = None
    epoch: int = 0
    durable: list[PromiseRecord | AcceptRecord] = field(default_factory=list)
    learned: list[Learned] = field(default_factory=list)  # the PLog's chosen records (durable)
    disk_free_at: float = 0.0
    tick_at: float | None = None


class Sim:
    def __init__(
        self,
        seed: int,
        n: int = 3,
        *,
        bug: str | None = None,
        group: int = 0,
        fault_interval: float = 0.05,
        client_interval: float = 0.004,
    ) -> None:
        assert bug is None or bug in BUGS, bug
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = n
        self.bug = bug
        self.now = 0.0
        self.members = tuple(range(1, n + 1))
        self.majority = n // 2 + 1
        self.configs = {
            m: GroupConfig(
                group=group,
                node_id=m,
                members=self.members,
                window=4,
                heartbeat_interval=0.02,
                lease=0.1,
                max_batch_items=16,
            )
            for m in self.members
        }
        self.fault_interval = fault_interval
        self.client_interval = client_interval
        self.nodes = {m: SimNode(m) for m in self.members}
        self._events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        self.trace: deque[str] = deque(maxlen=30)
        self.steps = 0
        self.chaos = True
        # network
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.side: dict[int, int] = {m: 0 for m in self.members}
        self.cut: set[frozenset[int]] = set()  # single links down (both directions)
        self.elections: list[tuple[float, int, Ballot]] = []  # (time, node, ballot) won
        # oracle
        self.votes: dict[tuple[int, Ballot], tuple[bytes, set[int]]] = {}
        self.chosen: dict[int, bytes] = {}
        self.item_instance: dict[bytes, int] = {}
        # clients
        self.items: dict[int, bytes] = {}
        self.outstanding: dict[int, int] = {}  # pid -> node it was proposed to
        self.attempts: dict[int, int] = {}
        self.sent_somewhere: set[int] = set()  # pids that reached a master's window
        self.acked: dict[int, int] = {}
        self.unknown: set[int] = set()
        self.gave_up: set[int] = set()
        self.hint: int | None = None
        self.masters_seen: set[int] = set()
        self.kept_down: set[int] = set()
        for m in self.members:
            self._start(m)
        self._push(self.rng.expovariate(1 / client_interval), "client", ())
        self._push(self.rng.expovariate(1 / fault_interval), "fault", ())

    # --------------------------------------------------------------------- plumbing

    def _push(self, at: float, kind: str, args: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, args))

    def fail(self, what: str) -> None:
        tail = "\n  ".join(self.trace)
        raise SimViolation(
            f"seed={self.seed} n={self.n} bug={self.bug} step={self.steps} t={self.now:.4f}: "
            f"{what}\n  trace tail:\n  {tail}\nreplay: pytest tests/sim --sim-seed {self.seed}"
        )

    def _start(self, m: int) -> None:
        sn = self.nodes[m]
        cup = len(sn.learned)
        checksum = sn.learned[-1].checksum if sn.learned else 0
        rec = recover_state(sn.durable, cup, checksum)
        if self.bug == "forget_promise":
            rec = RecoveredState(ZERO, rec.max_round, {}, cup, checksum)
        cls = EarlyReplyNode if self.bug == "reply_before_persist" else PaxosNode
        sn.paxos = cls(self.configs[m], rec, self.now)
        sn.epoch += 1
        sn.disk_free_at = self.now
        sn.tick_at = None
        self._schedule_tick(sn)

    def _schedule_tick(self, sn: SimNode) -> None:
        assert sn.paxos is not None
        at = sn.paxos.next_deadline()
        if at is not None and at != sn.tick_at:
            sn.tick_at = at
            self._push(max(at, self.now), "tick", (sn.node_id, sn.epoch, at))

    def up(self) -> list[int]:
        return [m for m, sn in self.nodes.items() if sn.paxos is not None]

    # ---------------------------------------------------------------------- effects

    def execute(self, m: int, effects: list[Any]) -> None:
        sn = self.nodes[m]
        for e in effects:
            if isinstance(e, Send):
                self._send(m, e.to, encode_message(e.msg))
            elif isinstance(e, Persist):
                # in order: each persist completes after the previous one
                sn.disk_free_at = max(sn.disk_free_at, self.now) + self.rng.uniform(0.0001, 0.001)
                self._push(sn.disk_free_at, "disk", (m, sn.epoch, e))
            elif isinstance(e, Learned):
                self._check_learned(m, e)
            elif isinstance(e, ProposalFailed):
                self._proposal_failed(m, e)
            elif isinstance(e, ServeCatchup):
                log = sn.learned[e.from_instance - 1 : e.from_instance - 1 + e.max_count]
                reply = CatchupReply(
                    group=self.configs[m].group,
                    sender=m,
                    entries=tuple(ChosenEntry(x.instance, x.value, x.checksum) for x in log),
                    chosen_up_to=len(sn.learned),
                )
                self._send(m, e.to, encode_message(reply))
            elif isinstance(e, Divergence):
                self.fail(f"node {m} reported divergence {e}")
            elif isinstance(e, RoleChanged) and e.is_master:
                self.elections.append((self.now, m, e.ballot))
        if sn.paxos is not None:
            if sn.paxos.is_master:
                self.masters_seen.add(m)
            self._schedule_tick(sn)

    def _send(self, frm: int, to: int, data: bytes) -> None:
        if self.side[frm] != self.side[to] or self.rng.random() < self.drop_rate:
            return
        if self.cut and frozenset((frm, to)) in self.cut:
            return
        copies = 2 if self.rng.random() < self.dup_rate else 1
        for _ in range(copies):
            delay = self.rng.uniform(0.0002, 0.003)
            if self.rng.random() < 0.05:
                delay += self.rng.uniform(0.0, 0.03)  # a straggler: reorders
            self._push(self.now + delay, "deliver", (to, data))

    # ---------------------------------------------------------------------- oracle

    def _on_durable(self, m: int, records: tuple[PromiseRecord | AcceptRecord, ...]) -> None:
        self.nodes[m].durable.extend(records)
        for r in records:
            if not isinstance(r, AcceptRecord):
                continue
            key = (r.instance, r.ballot)
            held = self.votes.get(key)
            if held is None:
                held = self.votes[key] = (r.value, set())
            elif held[0] != r.value:
                self.fail(f"two values accepted for instance {r.instance} at ballot {r.ballot}")
            held[1].add(m)
            if len(held[1]) >= self.majority:
                old = self.chosen.setdefault(r.instance, r.value)
                if old != r.value:
                    self.fail(
                        f"SAFETY: instance {r.instance} chosen twice: {old[:40]!r} then "
                        f"{r.value[:40]!r} (ballot {r.ballot})"
                    )

    def _check_learned(self, m: int, e: Learned) -> None:
        sn = self.nodes[m]
        expect = len(sn.learned) + 1
        if e.instance != expect:
            self.fail(f"SAFETY: node {m} learned {e.instance} but expected {expect}")
        chosen = self.chosen.get(e.instance)
        if chosen != e.value:
            self.fail(
                f"SAFETY: node {m} learned instance {e.instance} = {e.value[:40]!r}, "
                f"chosen is {None if chosen is None else chosen[:40]!r}"
            )
        prev = sn.learned[-1].checksum if sn.learned else 0
        if e.checksum != chain_checksum(prev, e.instance, e.value):
            self.fail(f"node {m} learned {e.instance} with a wrong chain checksum")
        sn.learned.append(e)
        items = decode_batch(e.value)
        for item in items:
            first = self.item_instance.setdefault(item, e.instance)
            if first != e.instance:
                self.fail(f"SAFETY: item {item!r} chosen in instances {first} and {e.instance}")
        if e.proposals:
            if len(e.proposals) != len(items):
                self.fail(f"node {m}: proposals {e.proposals} do not align with {len(items)} items")
            for pid, item in zip(e.proposals, items, strict=True):
                if self.items.get(pid) != item:
                    self.fail(f"node {m} acked pid {pid} with someone else's item {item!r}")
                if self.outstanding.pop(pid, None) != m:
                    self.fail(f"node {m} acked pid {pid} it was not waiting for")
                self.acked[pid] = e.instance

    # ---------------------------------------------------------------------- clients

    def _propose(self, pid: int) -> None:
        up = self.up()
        if not up:
            self.gave_up.add(pid)
            return
        target = self.hint if self.hint in up else self.rng.choice(up)
        self.attempts[pid] = self.attempts.get(pid, 0) + 1
        self.outstanding[pid] = target
        node = self.nodes[target].paxos
        assert node is not None
        if node.is_master:
            self.sent_somewhere.add(pid)
        self.trace.append(f"{self.now:.4f} client pid={pid} -> node {target}")
        self.execute(target, node.propose(pid, self.items[pid], self.now))

    def _proposal_failed(self, m: int, e: ProposalFailed) -> None:
        for pid in e.pids:
            if self.outstanding.pop(pid, None) != m:
                self.fail(f"node {m} failed pid {pid} it was not waiting for")
            if e.reason == "unknown":
                self.unknown.add(pid)
            elif self.attempts[pid] >= 8:
                self.gave_up.add(pid)
            else:
                self.hint = e.master_hint
                self._push(self.now + self.rng.uniform(0.002, 0.03), "retry", (pid,))

    def new_item(self) -> int:
        pid = len(self.items) + 1
        self.items[pid] = b"item-%d" % pid
        self._propose(pid)
        return pid

    # ----------------------------------------------------------------------- faults

    def _fault(self) -> None:
        rng = self.rng
        roll = rng.random()
        down = [m for m in self.members if m not in self.up()]
        if roll < 0.25:
            self.side = {m: rng.randrange(2) for m in self.members}
            what = f"partition {self.side}"
        elif roll < 0.45:
            self.side = {m: 0 for m in self.members}
            what = "heal"
        elif roll < 0.65 and len(down) < self.n:
            victim = rng.choice(self.up())
            self.crash(victim)
            what = f"crash {victim}"
        elif roll < 0.85 and down:
            m = rng.choice(down)
            self._start(m)
            what = f"restart {m}"
        else:
            self.drop_rate = rng.choice((0.0, 0.0, 0.05, 0.2))
            self.dup_rate = rng.choice((0.0, 0.05, 0.2))
            what = f"drop={self.drop_rate} dup={self.dup_rate}"
        self.trace.append(f"{self.now:.4f} FAULT {what}")

    def crash(self, m: int) -> None:
        sn = self.nodes[m]
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
        self.drop_rate = self.dup_rate = 0.0
        self.kept_down = set(self.rng.sample(self.members, keep_down))
        for m in self.members:
            sn = self.nodes[m]
            if m in self.kept_down and sn.paxos is not None:
                self.crash(m)
            elif m not in self.kept_down and sn.paxos is None:
                self._start(m)
        self.trace.append(f"{self.now:.4f} HEAL (kept down: {sorted(self.kept_down)})")

    # ------------------------------------------------------------------------- loop

    def step(self) -> bool:
        """Process one event; False when nothing is left (never, while clients run)."""
        while self._events:
            at, _, kind, args = heapq.heappop(self._events)
            if kind == "tick":
                m, epoch, due = args
                sn = self.nodes[m]
                if sn.paxos is None or sn.epoch != epoch or sn.tick_at != due:
                    continue
            self.now = max(self.now, at)
            self.steps += 1
            self._dispatch(kind, args)
            return True
        return False

    def _dispatch(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "deliver":
            to, data = args
            sn = self.nodes[to]
            if sn.paxos is None:
                return
            msg = decode_message(data)
            self.trace.append(f"{self.now:.4f} {msg.sender}->{to} {_short(msg)}")
            self.execute(to, sn.paxos.on_message(msg, self.now))
        elif kind == "disk":
            m, epoch, persist = args
            sn = self.nodes[m]
            if sn.paxos is None or sn.epoch != epoch:
                return
            self._on_durable(m, persist.records)
            self.execute(m, sn.paxos.on_persisted(persist.token, self.now))
        elif kind == "tick":
            m, _, _ = args
            sn = self.nodes[m]
            assert sn.paxos is not None
            sn.tick_at = None
            self.execute(m, sn.paxos.on_tick(self.now))
        elif kind == "client":
            if self.chaos:
                self.new_item()
                self._push(self.now + self.rng.expovariate(1 / self.client_interval), "client", ())
        elif kind == "retry":
            (pid,) = args
            self._propose(pid)
        elif kind == "fault" and self.chaos:
            self._fault()
            self._push(self.now + self.rng.expovariate(1 / self.fault_interval), "fault", ())

    def run(self, steps: int, settle: float = 5.0) -> None:
        """``steps`` steps of chaos, then heal and require convergence within ``settle`` s."""
        while self.steps < steps:
            self.step()
        keep_down = self.rng.randint(1, self.n - self.majority) if self.rng.random() < 0.3 else 0
        self.heal(keep_down)
        deadline = self.now + settle
        fresh: list[int] = []
        next_fresh = self.now + 1.0  # after every lease/election timeout has had its chance
        while self.now < deadline:
            if not self.step():
                break
            if not fresh and self.now >= next_fresh:
                fresh = [self.new_item() for _ in range(5)]
            if fresh and self.steps % 50 == 0 and self.converged(fresh):
                self.check_final(fresh)
                return
        self.check_final(fresh)

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

    def converged(self, fresh: list[int]) -> bool:
        if self.outstanding or not all(pid in self.acked for pid in fresh):
            return False
        return len(set(self.live_views().values())) == 1

    def live_views(self) -> dict[int, tuple[int, int]]:
        """(chosen_up_to, checksum) of every running replica."""
        return {
            m: (len(sn.learned), sn.paxos.checksum)
            for m, sn in self.nodes.items()
            if sn.paxos is not None
        }

    def check_final(self, fresh: list[int]) -> None:
        if self.outstanding:
            self.fail(f"LIVENESS: requests never answered: {sorted(self.outstanding.items())[:10]}")
        missing = [pid for pid in fresh if pid not in self.acked]
        if not fresh or missing:
            self.fail(f"LIVENESS: fresh items not acked after heal: {missing or 'none proposed'}")
        views = self.live_views()
        if len(set(views.values())) != 1:
            self.fail(f"LIVENESS: live replicas did not converge: {views}")
        top = max(self.chosen, default=0)
        common = min(cup for cup, _ in views.values())
        if top > common:
            self.fail(f"LIVENESS: instance {top} was chosen but replicas stopped at {common}")
        for pid in self.gave_up:
            if self.items[pid] in self.item_instance and pid not in self.sent_somewhere:
                self.fail(f"SAFETY: pid {pid} failed with not_master every time yet was chosen")


def _short(msg: Any) -> str:
    fields = []
    for name in msg.__dataclass_fields__:
        if name in ("group", "sender"):
            continue
        value = getattr(msg, name)
        if isinstance(value, bytes):
            value = f"<{len(value)}B>"
        elif isinstance(value, tuple):
            value = f"[{len(value)}]"
        fields.append(f"{name}={value}")
    return f"{type(msg).__name__}({', '.join(fields)})"
