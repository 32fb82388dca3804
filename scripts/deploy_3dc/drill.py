"""The 3-DC layout on 127.0.0.1 and a drill that takes a whole DC down under load.

``run_drill(DrillOptions(...)) -> DrillReport`` (used by ``simulate``):

1. Lay the cluster out with the generator's own rules (:mod:`simlayout`): three "DCs" of one
   store each, or of one store per set with ``sets`` > 1 (and their lock nodes in the config;
   the drill runs stores only). Every store-to-store connection within a set passes through a :class:`tools.fault.proxy.FaultProxy` (the stores'
   ``peers`` key) that adds latency per direction, so a round trip between two DCs costs
   ``rtt_min..rtt_max`` (uniform jitter). Clients dial the stores directly.
2. Producers (one per queue, sequential: send, await the ack, next) enqueue ``"<queue>:<seq>"``
   with dedup id ``drill-<queue>-<seq>`` through :class:`phxq.Client`; a failed enqueue is
   retried with the same id, so nothing is skipped. Every ack is recorded with its time.
3. After ``warmup`` seconds the DC goes down (``kill``: SIGKILL its stores; ``partition``: cut
   every proxy to and from them), stays down ``down`` seconds, then comes back (restart / heal)
   and the drill measures how long it takes to catch up with what was chosen meanwhile.
   Producers stop ``after`` seconds later.
4. Checks, once every replica reports the same ``chosen_up_to`` and chain checksum per group
   (within each set): every queue read back from every replica of its set (local reads) is identical; every acked message is
   there at its acked offset (lost = 0); per-queue order holds (sequence numbers increase with
   offsets, acked offsets increase with sequence numbers); nothing unexpected; no group failed,
   diverged or needs repair.

The producer pause is the longest gap between two acks of one producer, reported separately
for the gaps overlapping the DC loss and the DC return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from simlayout import DCS, TOPIC, layout

import phxq
from phxq.devcluster import ProcessCluster
from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool
from tools.fault.proxy import FaultProxy

__all__ = ["DCS", "TOPIC", "DrillOptions", "DrillReport", "check_queues", "layout", "run_drill"]

Fault = Literal["kill", "partition"]


@dataclass
class DrillOptions:
    data: Path
    rtt_min: float = 0.001  # seconds, one inter-DC round trip
    rtt_max: float = 0.002
    groups: int = 6
    queues: int = 6
    warmup: float = 4.0
    down: float = 6.0
    after: float = 6.0
    fault: Fault = "kill"
    dc: str = "dc1"
    seed: int = 1
    lease: str | None = None  # None: the config default
    sets: int = 1  # store sets (each with one store per DC); the DC loss takes one of each
    # Small segments: recovery scans a segment's preallocated tail, ~0.4 s per 64 MiB here.
    segment_bytes: str = "4MiB"
    settle_timeout: float = 30.0


@dataclass
class DrillReport:
    options: dict[str, Any]
    acked: int = 0
    attempts_failed: int = 0
    lost: int = 0
    unexpected: int = 0
    duplicates: int = 0
    order_violations: int = 0
    replica_mismatches: int = 0
    unhealthy_groups: int = 0
    replicas_agree: bool = False
    pause_dc_loss: float = 0.0
    pause_dc_return: float = 0.0
    longest_pause: float = 0.0
    catchup_seconds: float | None = None
    restart_seconds: float | None = None  # until the returning store answered again
    failover_seconds: float | None = None  # until the surviving DCs agreed on new masters
    acks_while_down: int = 0
    victim_groups: list[tuple[int, int]] = field(default_factory=list)  # (set, group) mastered
    chosen_up_to: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.order_violations
            or self.replica_mismatches
            or self.unhealthy_groups
            or not self.replicas_agree
            or not self.acks_while_down
            or self.catchup_seconds is None
            or self.problems
        )

    def summary(self) -> str:
        o = self.options
        catchup = "never" if self.catchup_seconds is None else f"{self.catchup_seconds:.2f}s"
        up = "never" if self.restart_seconds is None else f"{self.restart_seconds:.2f}s"
        return (
            f"3dc-drill: {'OK' if self.ok else 'FAILED'} fault={o['fault']} dc={o['dc']} "
            f"rtt={o['rtt_min'] * 1e3:g}-{o['rtt_max'] * 1e3:g}ms acked={self.acked} "
            f"lost={self.lost} unexpected={self.unexpected} dups={self.duplicates} "
            f"order_violations={self.order_violations} "
            f"replicas={'identical' if self.replicas_agree and not self.replica_mismatches else 'DIFFER'} "
            f"pause_dc_loss={self.pause_dc_loss:.2f}s pause_dc_return={self.pause_dc_return:.2f}s "
            f"acks_while_down={self.acks_while_down} back_up={up} caught_up={catchup} "
            f"seed={o['seed']}"
        )


@dataclass(frozen=True, slots=True)
class AckRecord:
    queue: int
    seq: int
    offset: int
    at: float  # monotonic


# ----------------------------------------------------------------------------- the drill


class Producers:
    """One sequential producer per queue; records every ack."""

    def __init__(self, client: phxq.Client, queues: int) -> None:
        self.client = client
        self.queues = queues
        self.acks: list[AckRecord] = []
        self.attempted: dict[int, int] = {}  # queue -> highest seq sent
        self.failures = 0
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._produce(q)) for q in range(self.queues)]

    async def stop(self, timeout: float = 30.0) -> None:
        self.stopping = True
        done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:  # still retrying after `timeout`: its message stays "in flight"
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _produce(self, queue: int) -> None:
        seq = 0
        while not self.stopping:
            self.attempted[queue] = seq
            try:
                ack = await self.client.enqueue(
                    TOPIC, f"{queue}:{seq}".encode(), queue=queue, dedup_id=f"drill-{queue}-{seq}"
                )
            except PhxqError:
                # Not acked (maybe stored): retry the same seq and dedup id, so it is stored once.
                self.failures += 1
                continue
            assert ack.offset is not None  # not delayed: stored at once, at an offset
            self.acks.append(AckRecord(queue, seq, ack.offset, time.monotonic()))
            seq += 1


async def _status_all(pool: RpcPool, addrs: dict[int, str]) -> dict[int, dict[str, Any]]:
    out = {}
    for node, addr in addrs.items():
        with contextlib.suppress(PhxqError):  # a node that does not answer has no view yet
            out[node] = await pool.call(addr, "status", {}, timeout=2.0)
    return out


async def _wait_caught_up(
    pool: RpcPool, addr: str, target: dict[int, int], deadline: float, report: DrillReport
) -> bool:
    """Until the node at ``addr`` has chosen, in every group, at least ``target[group]``."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            st = await pool.call(addr, "status", {}, timeout=1.0)
            if report.restart_seconds is None:
                report.restart_seconds = time.monotonic() - started
            if all(g["chosen_up_to"] >= target.get(g["group"], 0) for g in st["groups"]):
                return True
        except PhxqError:
            pass  # still starting (or still cut off): keep polling until the deadline
        await asyncio.sleep(0.02)
    return False


async def _wait_failover(
    pool: RpcPool, live: dict[int, str], set_of: dict[int, int], report: DrillReport
) -> None:
    """Record when, in every set, its live stores agree on a live master for every group."""
    started = time.monotonic()
    while True:
        try:
            metas = {n: await pool.call(a, "meta", {}, timeout=1.0) for n, a in live.items()}
        except PhxqError:
            metas = {}  # a store busy past the timeout: ask again
        by_set: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for n, m in metas.items():
            by_set[set_of[n]].append(m["masters"])
        if metas and all(
            len({v.get(g) for v in views}) == 1 and views[0].get(g) in live
            for views in by_set.values()
            for g in views[0]
        ):
            report.failover_seconds = time.monotonic() - started
            return
        await asyncio.sleep(0.02)


async def _read_queue(pool: RpcPool, addr: str, queue: int) -> list[tuple[int, bytes]]:
    rows: list[tuple[int, bytes]] = []
    after = None
    while True:
        page = await pool.call(
            addr,
            "dequeue",
            {
                "group": None,
                "topic": TOPIC,
                "queue": queue,
                "after": after,
                "limit": 5000,
                "local": True,
            },
            timeout=10.0,
        )
        if not page:
            return rows
        rows.extend((int(r[0]), bytes(r[1])) for r in page)
        after = rows[-1][0]


def _gaps(acks: list[AckRecord], start: float, end: float) -> list[tuple[float, float]]:
    """Per producer, every (from, to) between consecutive acks, plus start/end edges."""
    by_queue: dict[int, list[float]] = defaultdict(list)
    for a in acks:
        by_queue[a.queue].append(a.at)
    gaps: list[tuple[float, float]] = []
    for times in by_queue.values():
        edges = [start, *sorted(times), end]
        gaps.extend(pairwise(edges))
    return gaps


def _longest_overlapping(gaps: list[tuple[float, float]], lo: float, hi: float) -> float:
    return max((b - a for a, b in gaps if b > lo and a < hi), default=0.0)


async def run_drill(opts: DrillOptions, log: Any = print) -> DrillReport:
    report = DrillReport(options={**asdict(opts), "data": str(opts.data)})
    config_path, proxy_plan = layout(opts)
    cluster = ProcessCluster(config_path)
    stores = {s.id: s.addr for s in cluster.config.stores}
    set_of = {s.id: s.set for s in cluster.config.stores}
    victims = [s.id for s in cluster.config.stores if s.dc == opts.dc]  # one per set
    rng = random.Random(opts.seed)
    proxies: dict[tuple[int, int], FaultProxy] = {}
    one_way, jitter = opts.rtt_min / 2, (opts.rtt_max - opts.rtt_min) / 2
    try:
        for (i, j), (port, target) in proxy_plan.items():
            proxy = FaultProxy(f"127.0.0.1:{port}", target, seed=rng.randrange(1 << 30))
            proxy.set_latency(one_way, jitter)
            await proxy.start()
            proxies[(i, j)] = proxy
        cluster.start()
        await cluster.wait_ready_async(timeout=30)
        log(f"cluster up: stores {stores}; DC {opts.dc} = stores {victims}; data {opts.data}")
        async with (
            RpcPool() as pool,
            phxq.Client(list(stores.values()), request_timeout=1.0, retry_timeout=60.0) as client,
        ):
            producers = Producers(client, opts.queues)
            t_start = time.monotonic()
            producers.start()
            await asyncio.sleep(opts.warmup)

            idle = sorted(pair for pair, proxy in proxies.items() if not proxy.connections)
            if idle:  # the stores must dial their peers through the proxies (`peers` key)
                report.problems.append(f"store pairs {idle} carry no traffic through proxies")
            for victim in victims:
                held = await pool.call(stores[victim], "meta", {}, timeout=2.0)
                report.victim_groups += sorted(
                    (set_of[victim], int(g)) for g, m in held["masters"].items() if m == victim
                )
            if not report.victim_groups:
                report.problems.append(f"DC {opts.dc} masters no group: the drill proves little")
            t_fault = time.monotonic()
            cut = [p for (i, j), p in proxies.items() if i in victims or j in victims]
            if opts.fault == "kill":
                for victim in victims:
                    cluster.kill(victim)
            else:
                for proxy in cut:
                    proxy.partition("both")
            log(f"{opts.fault}: DC {opts.dc} down at +{t_fault - t_start:.1f}s")
            live = {n: a for n, a in stores.items() if n not in victims}
            watch = asyncio.get_running_loop().create_task(
                _wait_failover(pool, live, set_of, report)
            )
            await asyncio.sleep(opts.down)
            if not watch.done():
                watch.cancel()
                report.problems.append(f"no new masters within {opts.down}s of the DC loss")
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            views = await _status_all(pool, live)
            chosen: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))  # set, group
            for n, st in views.items():
                mine = chosen[set_of[n]]
                for g in st["groups"]:
                    mine[g["group"]] = max(mine[g["group"]], g["chosen_up_to"])
            t_back = time.monotonic()
            report.acks_while_down = sum(1 for a in producers.acks if t_fault < a.at < t_back)
            stalled = sorted(
                set(range(opts.queues))
                - {a.queue for a in producers.acks if t_fault < a.at < t_back}
            )
            if stalled:
                report.problems.append(
                    f"queues {stalled}: no enqueue acked while DC {opts.dc} was down"
                )
            if opts.fault == "kill":
                for victim in victims:
                    cluster.restart(victim)
            else:
                for proxy in cut:
                    proxy.heal()
            shown = {s: dict(t) for s, t in chosen.items()}
            log(f"DC {opts.dc} back at +{t_back - t_start:.1f}s; catching up to {shown}")
            behind = []
            for victim in victims:
                deadline = t_back + opts.settle_timeout
                if not await _wait_caught_up(
                    pool, stores[victim], chosen[set_of[victim]], deadline, report
                ):
                    behind.append(victim)
            if not behind:
                report.catchup_seconds = time.monotonic() - t_back
            else:
                report.problems.append(
                    f"stores {behind} did not catch up within {opts.settle_timeout}s"
                )
            await asyncio.sleep(max(0.0, t_back + opts.after - time.monotonic()))
            await producers.stop()
            t_end = time.monotonic()
            log(f"producers stopped at +{t_end - t_start:.1f}s")

            report.acked = len(producers.acks)
            report.attempts_failed = producers.failures
            gaps = _gaps(producers.acks, t_start, t_end)
            report.pause_dc_loss = _longest_overlapping(gaps, t_fault, t_back)
            report.pause_dc_return = _longest_overlapping(gaps, t_back, t_end)
            report.longest_pause = max((b - a for a, b in gaps), default=0.0)
            await _settle_and_check(pool, stores, set_of, producers, report, opts)
    finally:
        cluster.stop()
        for proxy in proxies.values():
            proxy.drop_connections()
        # Let the proxies' connection handlers end by themselves first: close() cancels the
        # ones still running, which asyncio's stream callback logs as an unhandled error.
        await asyncio.sleep(0.1)
        for proxy in proxies.values():
            await proxy.close()
    return report


async def _settle_and_check(
    pool: RpcPool,
    stores: dict[int, str],
    set_of: dict[int, int],
    producers: Producers,
    report: DrillReport,
    opts: DrillOptions,
) -> None:
    deadline = time.monotonic() + opts.settle_timeout
    views: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        views = await _status_all(pool, stores)
        if len(views) == len(stores):
            heads: dict[int, set[tuple[Any, ...]]] = defaultdict(set)  # set -> its replicas' heads
            for n, st in views.items():
                heads[set_of[n]].add(
                    tuple((g["chosen_up_to"], g["checksum"]) for g in st["groups"])
                )
            if all(len(h) == 1 for h in heads.values()):
                report.replicas_agree = True
                break
        await asyncio.sleep(0.1)
    if not report.replicas_agree:
        report.problems.append(f"replicas still differ after {opts.settle_timeout}s")
    for node, st in views.items():
        for g in st["groups"]:
            report.chosen_up_to[f"{node}/{g['group']}"] = g["chosen_up_to"]
            if g["failed"] or g["diverged"] or g["needs_repair"]:
                report.unhealthy_groups += 1
                report.problems.append(f"store {node} group {g['group']}: {g}")

    meta = await pool.call(next(iter(stores.values())), "meta", {}, timeout=2.0)
    placement = meta["map"]["topics"][TOPIC]["placement"]  # the set of every queue
    copies: dict[int, dict[int, list[tuple[int, bytes]]]] = {}
    for node, addr in stores.items():
        mine = [q for q in range(opts.queues) if placement[q] == set_of[node]]
        copies[node] = {q: await _read_queue(pool, addr, q) for q in mine}
    check_queues(report, producers.acks, producers.attempted, copies)


def check_queues(
    report: DrillReport,
    acks: list[AckRecord],
    attempted: dict[int, int],
    copies: dict[int, dict[int, list[tuple[int, bytes]]]],
) -> None:
    """The history checker (pure): ``copies[node][queue]`` is every ``(offset, payload)`` the
    replica holds, in offset order (only the queues of its store set). Counts into ``report``: acked messages missing from any
    replica or at another offset (lost), payloads no producer sent (unexpected), a seq stored
    twice (duplicates, counted once per queue copy of the first replica), seqs going back in a
    queue or acked offsets not increasing with seq (order violations), replicas that differ."""
    acked: dict[int, list[AckRecord]] = defaultdict(list)
    for a in acks:
        acked[a.queue].append(a)
    lost: set[tuple[int, int]] = set()
    for q in sorted({q for per_node in copies.values() for q in per_node} | set(acked)):
        mine = sorted(acked[q], key=lambda a: a.seq)
        if any(x.offset >= y.offset for x, y in pairwise(mine)):
            report.order_violations += 1
            report.problems.append(f"queue {q}: acked offsets do not increase with seq")
        holders = {n: per_node for n, per_node in copies.items() if q in per_node}
        if not holders:
            holders = copies  # nobody holds an acked queue: every replica lost it
        first = min(holders)
        reference = holders[first].get(q, [])
        for node, per_node in holders.items():
            rows = per_node.get(q, [])
            if rows != reference:
                report.replica_mismatches += 1
                report.problems.append(
                    f"queue {q}: store {node} holds {len(rows)} messages, store {first} "
                    f"{len(reference)}; they differ"
                )
            at = dict(rows)
            lost.update((q, a.seq) for a in mine if at.get(a.offset) != f"{q}:{a.seq}".encode())
            last = -1
            for _, payload in rows:
                try:
                    pq, pseq = (int(x) for x in payload.decode().split(":"))
                except ValueError:  # not "<queue>:<seq>": nobody in this drill sent it
                    pq, pseq = -1, -1
                if pq != q or not 0 <= pseq <= attempted.get(q, -1):
                    report.unexpected += 1
                    continue
                if pseq == last:
                    report.duplicates += node == first
                elif pseq < last:
                    report.order_violations += 1
                    report.problems.append(f"queue {q} on store {node}: seq {pseq} after {last}")
                last = max(last, pseq)
    report.lost = len(lost)
    if lost:
        report.problems.append(f"lost acked messages (queue, seq): {sorted(lost)[:20]}")


def write_history(path: Path, report: DrillReport) -> None:
    path.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2, default=str))
