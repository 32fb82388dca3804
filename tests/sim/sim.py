"""A deterministic simulator for the Paxos core (STYLE.md §5).

``Sim(seed, n, bug=None).run(steps)`` drives ``n`` ``PaxosNode`` replicas (any group size the
config accepts: 1, 2, 3, 4, 5, ...) over a simulated network that drops, duplicates, delays,
reorders and partitions (every message goes through the wire codec), with simulated disks
(``disk.SimDisk``: one record stream per replica, durable in order after a small random delay,
chosen records lazily) and a virtual clock that jumps from event to event. Clients propose unique
items at random nodes and follow ``not_master`` hints. Every random choice comes from the seed.

Faults (``faults.py``; ``CHAOS`` weights, ``LONG`` for the long runs): partitions and heals,
packet loss and duplication, crashes of any node or of the master, restarts, *same-round duels*
(two followers start phase 1 at the same instant with the same round, as if both election timers
had fired together: a live master is rebooted first, so it knows no master and promises anyone;
often the two cannot hear each other and only the others' answers decide), *long partitions*
(a minority or the master cut off for 5-20 leases while the clients keep proposing; no other
partition change meanwhile), and *crashes inside writes*: a node that submits a ``Persist``
(often when it holds a ``PromiseRecord``) may crash before the write completes. Every crash keeps
the durable records plus a random prefix of those in flight (``SimDisk.crash``); a node crashed
inside a write restarts a few leases later. Some fdatasyncs are slow (up to 10 ms).

Checks (``SimViolation`` names the check, ``seed=N`` and ends with the trace tail):

- at every send, what the message implies already holds on the sender's disk, and proposals
  respect what is chosen (``oracle.Oracle.check_send``); ground truth for "chosen" is a majority
  of *durable* AcceptRecords with one ballot;
- every learned value is the chosen one, learned strictly in order, once per life, with the
  right chain checksum; no item is chosen in two instances; an acked item is at its instance;
  an item whose every attempt failed with ``not_master`` is never chosen;
- at every restart, the state the core recovers (``recover_state``, or a planted bug's) and the
  core's acceptor after taking it equal ``disk.fold`` of the node's durable records; on a sample
  of restarts (``plog_checks`` per run) the real PLog, fed the same records, recovers it too;
- after the chaos the network heals and every node restarts (in ~30% of runs a random minority
  stays crashed for good); within bounded virtual time all client requests must be resolved,
  fresh items acked, and the live replicas must converge on one ``chosen_up_to`` and checksum
  covering every chosen instance.

``Sim.rejoin`` (``rejoin.py``) is the pre-vote scenario. ``bug`` plants one of
``planted.BUGS`` to prove the checks catch it.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from phxq.paxos import (
    CatchupReply,
    ChosenEntry,
    Divergence,
    GroupConfig,
    Learned,
    PaxosNode,
    Persist,
    ProposalFailed,
    RoleChanged,
    Send,
    ServeCatchup,
    chain_checksum,
    decode_batch,
    decode_message,
    encode_message,
    recover_state,
)
from tests.sim.disk import ChosenMark, SimDisk, fold
from tests.sim.faults import CHAOS, FaultsMixin
from tests.sim.oracle import Oracle
from tests.sim.planted import BUGS
from tests.sim.plogcheck import plog_recover
from tests.sim.rejoin import RejoinMixin

LAZY_DELAY = 0.05  # chosen records ride with the next write, or go out after this (PLog: lease/2)


class SimViolation(AssertionError):
    """An invariant failed; the message names the check and seed and ends with the trace tail."""

    @property
    def kind(self) -> str:
        """SAFETY, DURABILITY, RECOVERY, LIVENESS or REJOIN."""
        return str(self).split(": ", 2)[1].split(":")[0]


@dataclass
class SimNode:
    node_id: int
    paxos: PaxosNode | None = None
    epoch: int = 0
    disk: SimDisk = field(default_factory=SimDisk)
    learned: list[Learned] = field(default_factory=list)  # the PLog's chosen records
    disk_free_at: float = 0.0
    tick_at: float | None = None
    flushing: bool = False


class Sim(FaultsMixin, RejoinMixin):
    def __init__(
        self,
        seed: int,
        n: int = 3,
        *,
        bug: str | None = None,
        group: int = 0,
        fault_interval: float = 0.05,
        client_interval: float = 0.004,
        faults: dict[str, int] | None = None,
        plog_checks: int = 1,
        restart_check: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = n
        self.bug = bug
        planted = BUGS[bug] if bug is not None else None
        self.node_class = (planted and planted.node) or PaxosNode
        self.recover = (planted and planted.recover) or recover_state
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
        self.lease = self.configs[1].lease
        self.fault_interval = fault_interval
        self.faulty = fault_interval < 1e6
        self.client_interval = client_interval
        self.fault_kinds = list((faults or CHAOS).items())
        self.nodes = {m: SimNode(m) for m in self.members}
        self._events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        self.trace: deque[str] = deque(maxlen=30)
        self.steps = 0
        self.chaos = True
        self.oracle = Oracle(self.majority, self.fail)
        # network
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.side: dict[int, int] = {m: 0 for m in self.members}
        self.cut: set[frozenset[int]] = set()  # single links down (both directions)
        self.frozen_until = 0.0  # a long partition holds until then
        self.elections: list[tuple[float, int, Any]] = []  # (time, node, ballot) won
        self.restarts = self.duels = self.write_crashes = self.torn_writes = 0
        self.long_partitions = 0
        self._plog_rng = random.Random(seed * 7919 + 1)  # PLog checks never change the run
        self.plog_checks = plog_checks
        self.restart_check = restart_check  # off: only the end-to-end checks see recovery bugs
        self.plog_checked = 0
        # oracle of the clients
        self.item_instance: dict[bytes, int] = {}
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

    @property
    def chosen(self) -> dict[int, bytes]:
        return self.oracle.chosen

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
        disk = sn.disk
        expect = fold(disk.durable)
        records = [r for r in disk.durable if type(r) is not ChosenMark]
        rec = self.recover(records, disk.chosen_up_to, disk.checksum)
        sn.paxos = self.node_class(self.configs[m], rec, self.now)
        if self.restart_check:
            self.oracle.check_recovered(m, rec, sn.paxos, expect)
        if disk.durable and self.plog_checked < self.plog_checks and self._plog_rng.random() < 0.3:
            self.plog_checked += 1
            self.oracle.check_recovered(m, plog_recover(disk.durable), None, expect, "the PLog")
        sn.learned = sn.learned[: disk.chosen_up_to]
        sn.epoch += 1
        sn.disk_free_at = self.now
        sn.tick_at = None
        sn.flushing = False
        self.restarts += sn.epoch > 1
        self._schedule_tick(sn)

    def _schedule_tick(self, sn: SimNode) -> None:
        assert sn.paxos is not None
        at = sn.paxos.next_deadline()
        if at is not None and at != sn.tick_at:
            sn.tick_at = at
            self._push(max(at, self.now), "tick", (sn.node_id, sn.epoch, at))

    def up(self) -> list[int]:
        return [m for m, sn in self.nodes.items() if sn.paxos is not None]

    def master(self) -> int | None:
        """The running master with the highest ballot, if any."""
        masters = [(sn.paxos.ballot, m) for m, sn in self.nodes.items()
                   if sn.paxos is not None and sn.paxos.is_master]  # fmt: skip
        return max(masters)[1] if masters else None

    # ---------------------------------------------------------------------- effects

    def execute(self, m: int, effects: list[Any]) -> None:
        sn = self.nodes[m]
        for e in effects:
            if isinstance(e, Send):
                self.oracle.check_send(m, sn.epoch, e.msg, sn.disk)
                self._send(m, e.to, encode_message(e.msg))
            elif isinstance(e, Persist):
                self._persist(m, sn, e)
            elif isinstance(e, Learned):
                self._check_learned(m, e)
                b = e.ballot
                sn.disk.append((ChosenMark(e.instance, b, e.checksum, e.value),))
                if not sn.flushing:
                    sn.flushing = True
                    self._push(self.now + LAZY_DELAY, "flush", (m, sn.epoch))
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
                self.fail(f"SAFETY: node {m} reported divergence {e}")
            elif isinstance(e, RoleChanged) and e.is_master:
                self.elections.append((self.now, m, e.ballot))
        if sn.paxos is not None:
            if sn.paxos.is_master:
                self.masters_seen.add(m)
            self._schedule_tick(sn)

    def _persist(self, m: int, sn: SimNode, e: Persist) -> None:
        end = sn.disk.append(e.records)
        # in order: each persist completes after the previous one
        start = max(sn.disk_free_at, self.now)
        took = self.rng.uniform(0.0001, 0.001)
        if self.rng.random() < 0.05:
            took += self.rng.uniform(0.0, 0.01)  # a slow fdatasync
        sn.disk_free_at = start + took
        self._push(sn.disk_free_at, "disk", (m, sn.epoch, end, e.token))
        self._maybe_crash_in_write(m, e.records, sn.disk_free_at)

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

    # ---------------------------------------------------------------------- learning

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
            self.fail(f"SAFETY: node {m} learned {e.instance} with a wrong chain checksum")
        sn.learned.append(e)
        items = decode_batch(e.value)
        for item in items:
            first = self.item_instance.setdefault(item, e.instance)
            if first != e.instance:
                self.fail(f"SAFETY: item {item!r} chosen in instances {first} and {e.instance}")
        if e.proposals:
            if len(e.proposals) != len(items):
                self.fail(
                    f"SAFETY: node {m}: proposals {e.proposals} misalign with {len(items)} items"
                )
            for pid, item in zip(e.proposals, items, strict=True):
                if self.items.get(pid) != item:
                    self.fail(f"SAFETY: node {m} acked pid {pid} with another item {item!r}")
                if self.outstanding.pop(pid, None) != m:
                    self.fail(f"SAFETY: node {m} acked pid {pid} it was not waiting for")
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
                self.fail(f"SAFETY: node {m} failed pid {pid} it was not waiting for")
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
            m, epoch, end, token = args
            sn = self.nodes[m]
            if sn.paxos is None or sn.epoch != epoch:
                return
            self.oracle.on_durable(m, sn.disk.sync(end))
            self.execute(m, sn.paxos.on_persisted(token, self.now))
        elif kind == "flush":
            m, epoch = args
            sn = self.nodes[m]
            if sn.paxos is not None and sn.epoch == epoch:
                sn.flushing = False
                self.oracle.on_durable(m, sn.disk.sync(sn.disk.end))
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
        elif kind == "write_crash" and self.chaos:
            m, epoch = args
            if self.nodes[m].paxos is not None and self.nodes[m].epoch == epoch:
                self.write_crashes += 1
                self.trace.append(f"{self.now:.4f} FAULT crash {m} inside a write")
                self.crash(m)
                downtime = self.lease * self.rng.uniform(0.2, 3.0)
                self._push(self.now + downtime, "restart", (m, self.nodes[m].epoch))
        elif kind == "restart" and self.chaos:
            m, epoch = args
            if self.nodes[m].paxos is None and self.nodes[m].epoch == epoch:
                self.trace.append(f"{self.now:.4f} FAULT restart {m}")
                self._start(m)
        elif kind == "duel" and self.chaos:
            self.duel()
        elif kind == "uncut":
            self.cut.discard(frozenset(args))

    def run(self, steps: int, settle: float = 5.0) -> None:
        """``steps`` steps of chaos, then heal and require convergence within ``settle`` s."""
        while self.steps < steps:
            self.step()
        spare = self.n - self.majority
        keep_down = self.rng.randint(1, spare) if spare and self.rng.random() < 0.3 else 0
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
