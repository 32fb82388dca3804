"""Seeded fault schedules and their execution against a :class:`~tools.fault.cluster.FaultCluster`.

Public API::

    schedule = make_schedule(seed, duration, kinds=KINDS, require=(), overlap=0.3)  # pure
    format_schedule(schedule) -> str
    nemesis = Nemesis(harness, history, pool, seed)
    await nemesis.run(schedule, t0)        # each fault starts at its time and heals itself
    await nemesis.heal_all()               # network healed, every daemon running, disk freed

Faults may overlap (``overlap``), with two rules that keep the run inside the failure model
phxq promises to survive: a disk fault (torn tail, flipped byte, full disk) and the power cut
of every store are never under way together with another fault (:data:`ALONE_KINDS`), so while
one replica's log is damaged the other two replicas of every group are whole, and an outage of
the whole cluster is one fault's own; and two faults never stop or restart the same process (a
fault whose target is busy is skipped).

A :class:`Fault` names a kind, when it starts (seconds after ``t0``), how long it lasts, and a
*role* of its target (``master`` / ``follower`` of a group, or a node); which process that is
is resolved when the fault starts (who is master depends on the run) and recorded in the
history's ``nemesis`` records with ``store_master`` = the target store mastered a group then.

Kinds:

===============  ==============================================================================
kill_store       SIGKILL a store (the master or a follower of a group), restart it after
pause_store      SIGSTOP a store, SIGCONT after
kill_lock        SIGKILL a lock node (master or follower), restart after
pause_lock       SIGSTOP / SIGCONT a lock node
kill_consumer    SIGKILL a consumer daemon, restart after
pause_consumer   SIGSTOP / SIGCONT a consumer daemon (its leases expire meanwhile)
isolate          cut one store (or lock node) from the other two, both ways
one_way          one node of a role cannot send to another (the reverse still flows)
bridge           two stores cannot talk to each other; both still talk to the third
torn_tail        SIGKILL a store, zero the last bytes of its newest segments, restart after
flip_byte        SIGKILL a store, invert a byte in the middle of one group's log, restart after
                 (never on a second replica of the same group in one run)
disk_full        fill the disk-full store's filesystem; free it, then SIGKILL + restart it
power_loss       SIGKILL a store (master or follower), zero every segment byte its journal
                 would redo (what a power cut may take: ``FaultCluster.lose_power``), restart
                 after; the restarted store must redo its journal before it recovers
power_loss_all   SIGKILL all three stores at once, zero each one's journaled bytes, restart
                 all after (a data-centre power cut: the cluster is unavailable meanwhile and
                 producers retry with the same dedup id); an acked message lost by the journal
                 cannot be restored from another replica here
===============  ==============================================================================

14 kinds. The bytes a power loss zeroed are its history detail (``{"zeroed": {store: bytes}}``)
and :attr:`Nemesis.zeroed`. Once a store that lost power answers again (it has redone its
journal), the nemesis checks that every range it zeroed holds its old bytes again: a miss goes
to :attr:`Nemesis.unrestored` (a run problem), since the other replicas could hide it from the
history checker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool
from tools.fault.cluster import FaultCluster
from tools.fault.history import History

log = logging.getLogger("tools.fault")

KINDS = (
    "kill_store",
    "pause_store",
    "kill_lock",
    "pause_lock",
    "kill_consumer",
    "pause_consumer",
    "isolate",
    "one_way",
    "bridge",
    "torn_tail",
    "flip_byte",
    "disk_full",
    "power_loss",
    "power_loss_all",
)
# Faults that damage or fill a replica's disk: never at the same time as another fault, so the
# other two replicas of every group are whole while one replica's log is damaged.
#
# ``power_loss`` is not one of them: it takes from a replica only bytes its journal holds a
# synced copy of, so once restarted (redo) the replica is whole again. It is a crash that phxq
# must survive anywhere a SIGKILL may happen, so it overlaps other faults like ``kill_store``
# does (two stores losing power at overlapping times included), which tests the redo under more
# interleavings. A journal bug shows as a replica missing acknowledged records, which the
# others may mask; ``power_loss_all`` is the kind that exposes it to the checker.
DISK_KINDS = frozenset({"torn_tail", "flip_byte", "disk_full"})
# Never under way together with any other fault: the disk faults, and ``power_loss_all``, which
# stops every store (another fault could not act during it, and one starting right after the
# restart would only blur which fault an outage belongs to).
ALONE_KINDS = DISK_KINDS | {"power_loss_all"}
REDO_CHECK_TIMEOUT = 30.0  # seconds a restarted store has to answer before its redo is checked


@dataclass(frozen=True, slots=True)
class Fault:
    id: int
    kind: str
    at: float  # seconds after the run's start
    duration: float
    role: str  # "store", "lock" or "consumer"
    pick: str  # "master" / "follower" (of ``group``), or "any"
    group: int  # the group whose master/follower is meant (stores); a choice index otherwise
    choice: int  # tie-breaker among candidates (index modulo their number)


def make_schedule(
    seed: int,
    duration: float,
    *,
    kinds: tuple[str, ...] = KINDS,
    require: tuple[str, ...] = (),
    groups: int = 4,
    gap: tuple[float, float] = (1.0, 2.5),
    length: tuple[float, float] = (1.5, 4.0),
    overlap: float = 0.3,
) -> list[Fault]:
    """Faults over ``duration`` seconds: first every kind of ``require`` (in a seeded order,
    even past ``duration``), then random kinds of ``kinds``. With probability ``overlap`` a
    fault starts while the previous one is still under way, except that the faults of
    :data:`ALONE_KINDS` never overlap another one. Pure: same seed, same schedule."""
    rng = random.Random(seed)
    firsts = list(require)
    rng.shuffle(firsts)
    out: list[Fault] = []
    at = rng.uniform(*gap)
    free_at = 0.0  # when every fault so far has ended
    while True:
        required = bool(firsts)
        kind = firsts.pop(0) if required else rng.choice(kinds)
        span = round(rng.uniform(*length), 2)
        prev = out[-1] if out else None
        if prev is not None and (kind in ALONE_KINDS or prev.kind in ALONE_KINDS):
            at = max(at, free_at + rng.uniform(*gap))  # alone on the stage
        if at + span > duration and not required:
            break
        role = (
            "consumer"
            if kind.endswith("_consumer")
            else "lock"
            if kind.endswith("_lock") or (kind in ("isolate", "one_way") and rng.random() < 0.3)
            else "store"
        )
        out.append(
            Fault(
                id=len(out) + 1,
                kind=kind,
                at=round(at, 2),
                duration=span,
                role=role,
                pick=rng.choice(("master", "follower")),
                group=rng.randrange(groups),
                choice=rng.randrange(1 << 16),
            )
        )
        free_at = max(free_at, round(at, 2) + span)
        if rng.random() < overlap:
            at += rng.uniform(0.2, 0.8) * span
        else:
            at += span + rng.uniform(*gap)
    return out


def format_schedule(schedule: list[Fault]) -> str:
    return "\n".join(
        f"  #{f.id:<2} +{f.at:6.2f}s {f.kind:<15} {f.duration:4.1f}s {f.role} {f.pick} "
        f"g{f.group} c{f.choice}"
        for f in schedule
    )


class Nemesis:
    """Runs a schedule against a harness and records it in the history."""

    def __init__(self, harness: FaultCluster, history: History, pool: RpcPool, seed: int) -> None:
        self.harness = harness
        self.history = history
        self.pool = pool
        self.rng = random.Random(seed ^ 0x5EED)
        self.flipped: dict[int, int] = {}  # group -> the store whose log had a byte flipped
        self.injected: list[str] = []
        self.zeroed: dict[int, dict[int, int]] = {}  # power loss fault id -> {store: bytes}
        self._kept: dict[int, dict[int, list[Any]]] = {}  # id -> store -> what was zeroed
        self.unrestored: list[str] = []  # power losses the restarted store did not redo
        self.redo_checked = 0  # stores whose redo after a power loss was checked
        self.busy: set[tuple[str, Any]] = set()  # processes a running fault has stopped

    async def run(self, schedule: list[Fault], t0: float) -> None:
        """Each fault starts at its time (faults may overlap: see :func:`make_schedule`)."""
        async with asyncio.TaskGroup() as tg:
            for fault in schedule:
                await asyncio.sleep(max(0.0, t0 + fault.at - time.monotonic()))
                tg.create_task(self._one(fault))

    async def _one(self, fault: Fault) -> None:
        masters = await self.harness.masters(self.pool)
        target = await self._target(fault, masters)
        procs = self._processes(fault, target)
        if target is None or procs & self.busy:
            log.info("nemesis #%d %s: no free target (%s), skipped", fault.id, fault.kind, target)
            return
        self.busy |= procs
        try:
            check = await self._run_fault(fault, target, masters)
        finally:
            self.busy -= procs
        if check is not None:
            await check

    @staticmethod
    def _processes(fault: Fault, target: Any) -> set[tuple[str, Any]]:
        """The processes a fault stops or restarts (two faults never share one)."""
        if target is None or fault.kind in ("isolate", "one_way", "bridge"):
            return set()
        if fault.kind == "flip_byte":
            return {("store", target[0])}
        if fault.kind == "power_loss_all":
            return {("store", n) for n in target}
        return {(fault.role, target)}

    async def _run_fault(self, fault: Fault, target: Any, masters: dict[int, int]) -> Any:
        """Inject, wait, heal; returns a check to await once the fault's processes are free
        again (a power loss's redo check), or None."""
        heal, detail = await self._inject(fault, target)
        if heal is None:
            log.info("nemesis #%d %s: not applicable (%s), skipped", fault.id, fault.kind, detail)
            return None
        nodes = [target[0]] if fault.kind == "flip_byte" else target
        store_master = fault.role == "store" and _touches_master(nodes, masters)
        record = {
            "id": fault.id,
            "fault": fault.kind,
            "target": target,
            "role": fault.role,
            "detail": detail,
            "store_master": store_master,
            "schedule": asdict(fault),
        }
        self.history.add("nemesis", phase="start", **record)
        self.injected.append(fault.kind)
        log.info("nemesis #%d %s on %s %s %s", fault.id, fault.kind, fault.role, target, detail)
        await asyncio.sleep(fault.duration)
        await heal()
        self.history.add("nemesis", phase="end", **record)
        kept = self._kept.pop(fault.id, None)
        return None if kept is None else self._check_redo(fault, kept)

    async def _check_redo(self, fault: Fault, kept: dict[int, list[Any]]) -> None:
        """After a power loss: once a restarted store answers (so it has redone its journal),
        every range it lost must hold its old bytes again. A redo that missed some is recorded
        in :attr:`unrestored` (the other replicas may hide it from the checker). A store that
        another fault stops first, or that does not answer in time, is not judged."""
        h = self.harness
        addrs = {s.id: s.addr for s in h.config.stores}
        for node, ranges in kept.items():
            pid = h.store_pid(node)
            deadline = time.monotonic() + REDO_CHECK_TIMEOUT
            answered = False
            while pid is not None and time.monotonic() < deadline:
                try:
                    await self.pool.call(addrs[node], "meta", {}, timeout=1.0)
                except PhxqError:  # not serving yet (starting, or stopped by another fault)
                    await asyncio.sleep(0.1)
                    continue
                answered = True
                break
            if not answered:
                continue
            bad = await asyncio.to_thread(h.unrestored, ranges)
            if h.store_pid(node) != pid:
                continue  # another fault killed it meanwhile: not judged
            self.redo_checked += 1
            if bad:
                self.unrestored.append(
                    f"power loss #{fault.id}: store {node} did not redo {len(bad)} of "
                    f"{len(ranges)} journaled ranges: {bad[:3]}"
                )

    async def _target(self, fault: Fault, masters: dict[int, int]) -> Any:
        h = self.harness
        if fault.role == "consumer":
            names = list(h.opts.consumers)
            return names[fault.choice % len(names)]
        nodes = [1, 2, 3]
        if fault.role == "lock":
            master = await h.lock_master(self.pool)
        else:
            master = masters.get(fault.group)
        if fault.kind == "bridge":
            middle = nodes[fault.choice % 3]
            return [n for n in nodes if n != middle]  # the two that cannot talk
        if fault.kind == "one_way":
            src = master if fault.pick == "master" and master else nodes[fault.choice % 3]
            dst = [n for n in nodes if n != src][fault.choice // 3 % 2]
            return [src, dst]
        if fault.kind == "flip_byte":
            return self._flip_target(fault)
        if fault.kind == "disk_full":
            return h.opts.disk_full_store if h.disk_full_supported else None
        if fault.kind == "power_loss_all":
            return nodes
        if fault.pick == "master" and master is not None:
            return master
        followers = [n for n in nodes if n != master]
        return followers[fault.choice % len(followers)]

    def _flip_target(self, fault: Fault) -> list[int] | None:
        """[store, group]: a group whose log nobody flipped yet in this run."""
        free = [g for g in range(self.harness.opts.groups) if g not in self.flipped]
        if not free:
            return None
        group = free[fault.choice % len(free)]
        node = [1, 2, 3][fault.choice // 7 % 3]
        return [node, group]

    async def _inject(self, fault: Fault, target: Any) -> tuple[Any, Any]:
        """Start the fault; returns (an async heal function or None if skipped, detail)."""
        h, kind, role = self.harness, fault.kind, fault.role
        if kind in ("kill_store", "kill_lock", "kill_consumer"):
            h.kill(role, target)
            return _restart(h, role, target), None
        if kind in ("pause_store", "pause_lock", "pause_consumer"):
            h.pause(role, target)

            async def resume() -> None:
                h.resume(role, target)

            return resume, None
        if kind in ("isolate", "one_way", "bridge"):
            if kind == "isolate":
                others = [n for n in (1, 2, 3) if n != target]
                links = h.cut(role, [target], others, "both")
            elif kind == "one_way":
                links = h.cut(role, [target[0]], [target[1]], "to_target")
            else:
                links = h.cut(role, [target[0]], [target[1]], "both")

            async def heal() -> None:
                h.heal_links(links)

            return heal, None
        if kind == "torn_tail":
            h.kill("store", target)
            cuts = h.tear_tail(target, self.rng)
            return _restart(h, "store", target), cuts
        if kind == "flip_byte":
            node, group = target
            h.kill("store", node)
            flipped = h.flip_byte(node, group, self.rng)
            if flipped is None:
                h.restart("store", node)
                return None, "nothing written yet"
            self.flipped[group] = node
            return _restart(h, "store", node), flipped
        if kind == "disk_full":
            filled = await asyncio.to_thread(h.fill_disk)

            async def free() -> None:
                h.free_disk()
                # The writer marks a file that failed as failed: a restart reopens the log.
                h.kill("store", target)
                h.restart("store", target)

            return free, {"filler_bytes": filled}
        if kind in ("power_loss", "power_loss_all"):
            stores = target if kind == "power_loss_all" else [target]
            h.kill_stores(stores)
            kept: dict[int, list[Any]] = {n: [] for n in stores}
            zeroed = {n: await asyncio.to_thread(h.lose_power, n, kept[n]) for n in stores}
            self.zeroed[fault.id] = zeroed
            self._kept[fault.id] = kept

            async def power_on() -> None:
                for n in stores:
                    h.restart("store", n)

            return power_on, {"zeroed": zeroed}
        raise ValueError(f"unknown fault kind {kind!r}")

    async def heal_all(self) -> None:
        h = self.harness
        h.heal_network()
        if h.disk_full_supported:
            h.free_disk()
        h.revive_all()


def _restart(h: FaultCluster, role: str, node: Any) -> Any:
    async def restart() -> None:
        h.restart(role, node)

    return restart


def _touches_master(target: Any, masters: dict[int, int]) -> bool:
    nodes = target if isinstance(target, list) else [target]
    return any(n in masters.values() for n in nodes if isinstance(n, int))
