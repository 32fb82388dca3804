"""A deterministic simulation of the replication *runtime*, not only the Paxos core.

``RuntimeSim(seed, bug=None).run()`` runs ``n`` real :class:`~phxq.replication.host.PaxosHost`
nodes -- their tick loops, :class:`~phxq.replication.replica.GroupReplica` effect execution,
proposal waiters, apply-then-write and recovery replay, unchanged -- on one asyncio event loop
whose clock is virtual (``VirtualLoop``: when every task is idle it jumps to the next
timer, as trio's ``MockClock(autojump_threshold=0)``), over:

- ``MemoryLog``, an in-memory ``GroupStorage``: appends become durable, in order, after a
  seeded disk delay (one in ten stalls); a crash loses everything not yet durable (lazy chosen
  marks included);
- ``SimNet``, an in-memory ``Peers``: seeded delay, loss and partitions (links cut), every
  Paxos message through the real wire codec (these are in ``runtime_sim_world.py``);
- seeded faults: crash/restart of one node, power loss of every node at once, partitions,
  loss rates; clients propose unique items at random nodes and follow ``NotMaster`` hints.

Invariants (a violation raises :class:`RuntimeViolation` naming ``seed=N``; ``pytest tests/sim
--sim-seed N`` replays it exactly):

- one value per instance: every chosen record any log ever appended agrees (the oracle);
- every state machine (every incarnation of every node) applied instances 1, 2, 3... strictly in
  order, each once, each with exactly the chosen value (so logs agree on their common prefix);
- every acked proposal is in the chosen log at the place its result names;
- after the faults stop (network healed, every node restarted): all replicas converge on one
  ``chosen_up_to``, a fresh proposal is acked, and every replica's state machine is equal to the
  chosen log (every acked item applied in the same order everywhere);
- no exception escapes a runtime callback (the loop's exception handler counts them).

``bug`` plants a runtime defect in a ``GroupReplica`` subclass (``PLANTED``) to prove the
checker catches it: ``ack_before_apply``, ``apply_out_of_order``, ``reply_before_persist``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phxq.errors import NotMaster, PhxqError, StorageError
from phxq.paxos import AcceptRecord, Persist, decode_batch, encode_batch
from phxq.plog import IndexEntry
from phxq.replication import rejoin
from phxq.replication.host import PaxosHost
from phxq.replication.replica import GroupReplica
from phxq.tasks import TaskScope
from tests.sim.runtime_sim_world import (
    MemoryDisk,
    MemoryStorage,
    RuntimeViolation,
    SimNet,
    SimPeers,
    VirtualLoop,
)

__all__ = ["PLANTED", "RuntimeSim", "RuntimeViolation", "digest"]

Ballot = tuple[int, int]
EARLY = ("acked", "early")


# ----------------------------------------------------------------------- state machine


class LogMachine:
    """A state machine that remembers what it applied, in order (the checker reads it)."""

    def __init__(self, sim: RuntimeSim, node: int) -> None:
        self.sim = sim
        self.node = node
        self.applied: list[tuple[int, tuple[bytes, ...]]] = []
        self.applied_up_to = 0

    def apply(self, instance: int, items: Sequence[bytes]) -> list[Any]:
        if instance != self.applied_up_to + 1:
            self.sim.violation(
                f"node {self.node} applied instance {instance} after {self.applied_up_to}"
            )
        self.applied.append((instance, tuple(items)))
        self.applied_up_to = max(self.applied_up_to, instance)
        return [(instance, i) for i in range(len(items))]

    def index_entries(self, instance: int, items: Sequence[bytes]) -> list[IndexEntry]:
        return [(("q", 0), i, float(instance)) for i in range(len(items))]

    def snapshot(self) -> bytes:
        return encode_batch([b"%d" % i + b"".join(items) for i, items in self.applied])

    def forget_below(self, instance: int) -> None:
        pass


class LogMachines:
    def __init__(self, sim: RuntimeSim, node: int) -> None:
        self.sim = sim
        self.node = node

    def fresh(self, group: int) -> LogMachine:
        machine = LogMachine(self.sim, self.node)
        self.sim.machines.append(machine)
        return machine

    def restore(self, group: int, data: bytes) -> LogMachine:
        raise AssertionError("no snapshots in the simulation")


# ---------------------------------------------------------------------- planted bugs


class AckBeforeApply(GroupReplica[Any]):
    """Planted: a proposal is acked as soon as Paxos has it, before it is chosen and applied."""

    def propose(self, items: Sequence[bytes]) -> asyncio.Future[list[Any]]:
        real = super().propose(items)
        real.add_done_callback(lambda f: f.cancelled() or f.exception())
        early: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        early.set_result([EARLY] * len(items))
        return early


class ApplyOutOfOrder(GroupReplica[Any]):
    """Planted: chosen instances reach the state machine in swapped pairs (2, 1, 4, 3...)."""

    held: tuple[int, bytes] | None = None

    def apply_and_write(
        self, instance: int, ballot: Ballot | None, checksum: int, value: bytes
    ) -> tuple[Sequence[Any], asyncio.Future[None]]:
        written = self.glog.append_chosen(instance, ballot, checksum, value, urgent=False)
        if instance % 2:
            self.held = (instance, value)
            return [], written
        results = self.state.apply(instance, decode_batch(value))
        if self.held is not None and self.held[0] == instance - 1:
            self.state.apply(self.held[0], decode_batch(self.held[1]))
            self.held = None
        return results, written


class ReplyBeforePersist(GroupReplica[Any]):
    """Planted: the core hears its records are durable as soon as they are queued, so promises
    and accepts are answered (and the master counts its own vote) before they are on disk."""

    def _persist(self, effect: Persist) -> None:
        for record in effect.records:
            b = record.ballot
            if isinstance(record, AcceptRecord):
                f = self.glog.append_accept(record.instance, (b.round, b.node), record.value)
            else:
                f = self.glog.append_promise((b.round, b.node))
            f.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.execute(self.paxos.on_persisted(effect.token, self._clock()))


PLANTED: dict[str, type[GroupReplica[Any]]] = {
    "ack_before_apply": AckBeforeApply,
    "apply_out_of_order": ApplyOutOfOrder,
    "reply_before_persist": ReplyBeforePersist,
}


# ------------------------------------------------------------------------------- nodes


class SimNode:
    def __init__(self, sim: RuntimeSim, node_id: int) -> None:
        self.sim = sim
        self.id = node_id
        self.disk = MemoryDisk()
        self.data = sim.base / f"n{node_id}"
        self.host: PaxosHost[LogMachine] | None = None
        self.storage: MemoryStorage | None = None
        self.up = False
        self.incarnation = 0

    async def start(self) -> None:
        sim = self.sim
        self.data.mkdir(parents=True, exist_ok=True)
        if rejoin.read_marker(self.data, rejoin.MEMBER_FILE) is None:
            rejoin.write_marker(self.data, rejoin.MEMBER_FILE, {"node": self.id, "born": "sim"})
        self.incarnation += 1
        self.storage = MemoryStorage(sim, self.disk, self.data)
        self.host = PaxosHost(
            self.id,
            sim.addresses,
            self.data,
            groups=1,
            window=4,
            heartbeat_interval=0.02,
            lease=0.1,
            machines=LogMachines(sim, self.id),
            propose_timeout=0.5,
            name="sim",
            storage=self.storage,
            peers=SimPeers(sim.net, self.id),
            clock=asyncio.get_running_loop().time,
            replica_type=sim.replica_type,
        )
        await self.host.start()
        self.up = True
        sim.note(f"start {self.id} (incarnation {self.incarnation})")

    async def crash(self) -> None:
        """Power off: nothing queued reaches the disk; every task of the node stops."""
        if not self.up or self.host is None or self.storage is None:
            return
        self.up = False
        self.storage.crash()
        await self.host.close()
        self.sim.note(f"crash {self.id}")

    @property
    def replica(self) -> GroupReplica[LogMachine] | None:
        return None if self.host is None or not self.up else self.host.replicas.get(0)


# ------------------------------------------------------------------------- simulation


class RuntimeSim:
    """See the module docstring."""

    def __init__(
        self,
        seed: int,
        *,
        n: int = 3,
        bug: str | None = None,
        chaos: float = 2.0,
        client_interval: float = 0.004,
        fault_interval: float = 0.05,
    ) -> None:
        assert bug is None or bug in PLANTED, bug
        self.seed = seed
        self.rng = random.Random(seed)
        self.bug = bug
        self.replica_type: type[GroupReplica[Any]] = PLANTED[bug] if bug else GroupReplica
        self.chaos = chaos
        self.client_interval = client_interval
        self.fault_interval = fault_interval
        self.members = tuple(range(1, n + 1))
        self.addresses = {m: f"n{m}" for m in self.members}
        self.net = SimNet(self)
        self.trace: deque[str] = deque(maxlen=40)
        self.machines: list[LogMachine] = []
        self.chosen: dict[int, bytes] = {}  # the oracle: every chosen record ever appended
        self.acked: dict[bytes, Any] = {}
        self.unknown: set[bytes] = set()
        self.violations: list[str] = []
        self.errors: list[str] = []
        self.crashes = 0
        self.power_losses = 0
        self._next_item = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.base = Path()
        self.nodes: dict[int, SimNode] = {}
        self.loop: VirtualLoop | None = None

    # ------------------------------------------------------------------ bookkeeping

    def now(self) -> float:
        return 0.0 if self.loop is None else self.loop.time()

    def note(self, event: str) -> None:
        self.trace.append(f"{self.now():9.4f} {event}")

    def disk_delay(self) -> float:
        """An fdatasync: usually a few ms; one in ten stalls (a busy or failing disk)."""
        if self.rng.random() < 0.1:
            return self.rng.uniform(0.01, 0.05)
        return self.rng.uniform(0.0005, 0.004)

    def violation(self, what: str) -> None:
        self.violations.append(what)

    def observe_chosen(self, instance: int, value: bytes) -> None:
        known = self.chosen.setdefault(instance, value)
        if known != value:
            self.violation(f"two values chosen at instance {instance}")

    def fail(self, what: str) -> RuntimeViolation:
        tail = "\n  ".join(self.trace)
        bug = f" bug={self.bug}" if self.bug else ""
        return RuntimeViolation(f"seed={self.seed}{bug}: {what}\n  trace tail:\n  {tail}")

    # -------------------------------------------------------------------------- run

    def run(self) -> RuntimeSim:
        """Run the whole scenario; raise :class:`RuntimeViolation` on any violation."""
        quiet = logging.getLogger("phxq")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL + 1)  # divergence and failures are checked, not read
        self._tmp = tempfile.TemporaryDirectory(prefix="phxq-runtime-sim-")
        self.base = Path(self._tmp.name)
        self.loop = VirtualLoop()
        self.loop.set_exception_handler(self._loop_error)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()
            self._tmp.cleanup()
            quiet.setLevel(level)
        return self

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.errors.append(f"{context.get('message')}: {exc!r}")

    async def _main(self) -> None:
        self.nodes = {m: SimNode(self, m) for m in self.members}
        async with TaskScope("runtime sim") as scope:
            for node in self.nodes.values():
                await node.start()
            await self._chaos(scope)
            await self._heal()
            await self._settle(scope)
            for node in self.nodes.values():
                await node.crash()
        self._check(final=False)

    async def _chaos(self, scope: TaskScope) -> None:
        end = self.now() + self.chaos
        next_fault = self.now() + self.rng.expovariate(1 / self.fault_interval)
        while self.now() < end:
            await asyncio.sleep(self.rng.expovariate(1 / self.client_interval))
            if len(self.acked) + len(self.unknown) < self._next_item + 64:
                scope.spawn(self._client(self._item()), name="client")
            if self.now() >= next_fault:
                await self._fault(scope)
                next_fault = self.now() + self.rng.expovariate(1 / self.fault_interval)
            self._check(final=False)

    async def _fault(self, scope: TaskScope) -> None:
        rng = self.rng
        kind = rng.choice(["crash", "crash", "power", "power", "partition", "link", "drop"])
        up = [n for n in self.nodes.values() if n.up]
        if kind == "crash" and up:
            node = rng.choice(up)
            self.crashes += 1
            await node.crash()
            scope.spawn(self._restart_later([node], rng.uniform(0.02, 0.4)), name="restart")
        elif kind == "power" and up:
            self.power_losses += 1
            self.note("power loss")
            for node in up:
                await node.crash()
            scope.spawn(self._restart_later(up, rng.uniform(0.01, 0.2)), name="restart")
        elif kind == "partition":
            alone = rng.choice(self.members)
            links = {frozenset((alone, m)) for m in self.members if m != alone}
            self._cut(scope, links)
        elif kind == "link":
            a, b = rng.sample(self.members, 2)
            self._cut(scope, {frozenset((a, b))})
        else:
            self.net.drop_rate = rng.choice([0.0, 0.05, 0.2])
            self.note(f"drop rate {self.net.drop_rate}")

    def _cut(self, scope: TaskScope, links: set[frozenset[int]]) -> None:
        self.net.cut |= links
        self.note(f"cut {sorted(tuple(sorted(x)) for x in links)}")
        scope.spawn(self._mend_later(links, self.rng.uniform(0.05, 0.5)), name="mend")

    async def _mend_later(self, links: set[frozenset[int]], delay: float) -> None:
        await asyncio.sleep(delay)
        self.net.cut -= links
        self.note("mend")

    async def _restart_later(self, nodes: list[SimNode], delay: float) -> None:
        await asyncio.sleep(delay)
        for node in nodes:
            if not node.up:
                await node.start()

    async def _heal(self) -> None:
        self.net.cut.clear()
        self.net.drop_rate = 0.0
        for node in self.nodes.values():
            if not node.up:
                await node.start()
        self.note("healed")

    async def _settle(self, scope: TaskScope) -> None:
        """After the faults: a fresh proposal is acked and every replica converges."""
        await asyncio.sleep(1.0)  # clients still in flight resolve (propose_timeout 0.5 s)
        fresh = self._item()
        deadline = self.now() + 10.0
        while fresh not in self.acked and self.now() < deadline:
            self.unknown.discard(fresh)
            await self._client(fresh, patience=1.0)
        if fresh not in self.acked:
            self._check(final=False)  # a safety violation found meanwhile is the news
            raise self.fail("no fresh proposal was acked within 10 s of the heal")
        deadline = self.now() + 10.0
        while self.now() < deadline:
            await asyncio.sleep(0.05)
            tops = {n.replica.paxos.chosen_up_to for n in self.nodes.values() if n.replica}
            if len(tops) == 1 and tops.pop() >= max(self.chosen, default=0):
                break
        else:
            raise self.fail("replicas did not converge within 10 s of the heal")
        self._check(final=True)

    # ----------------------------------------------------------------------- clients

    def _item(self) -> bytes:
        self._next_item += 1
        return b"item-%d" % self._next_item

    async def _client(self, item: bytes, patience: float = 2.0) -> None:
        deadline = self.now() + patience
        target = self.rng.choice(self.members)
        while self.now() < deadline:
            replica = self.nodes[target].replica
            if replica is None:
                target = self.rng.choice(self.members)
                await asyncio.sleep(0.01)
                continue
            try:
                result = await replica.propose_one(item)
            except NotMaster as exc:  # certainly not chosen: try elsewhere
                hint = exc.data.get("hint")
                target = next(
                    (m for m, a in self.addresses.items() if a == hint),
                    self.rng.choice(self.members),
                )
                await asyncio.sleep(0.005)
                continue
            except StorageError:  # the replica does not serve (never proposed)
                target = self.rng.choice(self.members)
                await asyncio.sleep(0.01)
                continue
            except PhxqError:  # outcome unknown: never retried (the machine does not dedup)
                self.unknown.add(item)
                return
            self.acked[item] = result
            self.note(f"ack {item.decode()} {result}")
            return
        self.unknown.add(item)

    # ----------------------------------------------------------------------- checker

    def _check(self, *, final: bool) -> None:
        if self.violations:
            raise self.fail("SAFETY: " + self.violations[0])
        if self.errors:
            raise self.fail("an exception escaped a runtime callback: " + self.errors[0])
        chosen_items = {i: decode_batch(v) for i, v in self.chosen.items()}
        for machine in self.machines:
            for position, (instance, items) in enumerate(machine.applied, start=1):
                if instance != position:
                    raise self.fail(
                        f"SAFETY: node {machine.node} applied instance {instance} as its "
                        f"{position}th (out of order)"
                    )
                if instance in chosen_items and list(items) != chosen_items[instance]:
                    raise self.fail(
                        f"SAFETY: node {machine.node} applied a value at {instance} that "
                        "was not the chosen one"
                    )
        where = {item: (i, k) for i, items in chosen_items.items() for k, item in enumerate(items)}
        for item, result in self.acked.items():
            if result == EARLY:
                if final and item not in where:
                    raise self.fail(f"SAFETY: acked {item!r} is not in the chosen log")
                continue
            if result[0] in chosen_items and where.get(item) != tuple(result):
                raise self.fail(
                    f"SAFETY: acked {item!r} at {result} but chosen at {where.get(item)}"
                )
            if final and item not in where:
                raise self.fail(f"SAFETY: acked {item!r} is not in the chosen log")
        if final:
            top = max(self.chosen, default=0)
            expected = [(i, tuple(chosen_items[i])) for i in range(1, top + 1)]
            for node in self.nodes.values():
                replica = node.replica
                assert replica is not None
                if replica.state.applied != expected:
                    raise self.fail(
                        f"node {node.id}'s state machine differs from the chosen log "
                        f"(applied up to {replica.state.applied_up_to}, chosen up to {top})"
                    )
                if replica.diverged is not None or replica.failed is not None:
                    raise self.fail(f"node {node.id} diverged or failed: {replica.failed}")


def digest(sim: RuntimeSim) -> tuple[Any, ...]:
    """What two runs of one seed must agree on."""
    return (
        tuple(sorted(sim.chosen.items())),
        tuple(sorted(sim.acked)),
        tuple(sorted(sim.unknown)),
        tuple(sim.trace),
        sim.crashes,
        sim.power_losses,
    )
