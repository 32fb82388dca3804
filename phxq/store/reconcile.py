"""``phxq admin reconcile``: per queue and time window, what the log holds against what each
consumer group consumed, and whether the replicas agree on their chain checksums.

For every queue of the topic, every reachable store reports its own replica's view (the
``reconcile`` RPC): the messages stored in the window and, per consumer group, how many of them
its cursor has passed. Mismatches:

- ``replicas disagree``: two replicas that have both applied past the window's end count
  different messages in it (the window is closed on both, so they must be equal);
- ``unconsumed``: a consumer group's cursor has not passed every message of the window (with
  ``--until`` in the past this is loss or a stuck consumer; without it, plain lag);
- ``checksum``: two replicas hold different chain checksums at the same instance — the logs
  diverged (compared per Paxos group at the highest instance every reachable replica holds);
- ``failed``: a replica is not serving the group (storage failure or damaged log).

An unreachable store is reported but is not a mismatch (the others still answer). The window is
resolved at instance granularity: an instance belongs to it by its first enqueue time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from phxq.config import ClusterConfig
from phxq.errors import PhxqError, UnknownTopic
from phxq.security.daemon import tool_pool
from phxq.topology import Topology

TIMEOUT = 5.0


@dataclass
class Report:
    """What ``reconcile`` found; ``mismatches`` empty means everything agrees."""

    topic: str
    since: float | None
    until: float | None
    queues: list[dict[str, Any]] = field(default_factory=list)
    checksums: list[dict[str, Any]] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "since": self.since,
            "until": self.until,
            "queues": self.queues,
            "checksums": self.checksums,
            "unreachable": self.unreachable,
            "mismatches": self.mismatches,
        }


async def reconcile(
    cfg: ClusterConfig,
    topic: str,
    *,
    consumer_group: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Report:
    spec = cfg.topics_by_name.get(topic)
    if spec is None:
        raise UnknownTopic(f"unknown topic {topic!r}")
    names = [consumer_group] if consumer_group else [g.name for g in cfg.consumer_groups_for(topic)]
    report = Report(topic, since, until)
    async with tool_pool(cfg) as pool:

        async def ask(addr: str, method: str, params: dict[str, Any]) -> Any:
            try:
                return await pool.call(addr, method, params, timeout=TIMEOUT)
            except PhxqError as exc:
                return exc

        topo = Topology.from_config(cfg)
        for q in range(spec.queues):
            stores = list(cfg.set_stores(topo.set_of(topic, q)))  # the replicas of its set
            params = {"topic": topic, "queue": q, "since": since, "until": until, "groups": names}
            answers = await asyncio.gather(*(ask(s.addr, "reconcile", params) for s in stores))
            views = {}
            for s, a in zip(stores, answers, strict=True):
                if isinstance(a, PhxqError):
                    if s.id not in report.unreachable:
                        report.unreachable.append(s.id)
                else:
                    views[s.id] = a
            _check_queue(report, q, views, names)
        routes = {topo.route(topic, q, cfg.cluster.groups) for q in range(spec.queues)}
        for number, group in sorted(routes):
            await _check_checksums(report, group, list(cfg.set_stores(number)), ask)
    return report


def _check_queue(report: Report, queue: int, views: dict[int, Any], names: list[str]) -> None:
    row: dict[str, Any] = {"queue": queue, "replicas": views}
    report.queues.append(row)
    if not views:
        report.mismatches.append(f"queue {queue}: no replica answered")
        return
    for node, v in views.items():
        if v["failed"]:
            report.mismatches.append(f"queue {queue}: replica {node} failed: {v['failed']}")
    closed = {n: v for n, v in views.items() if v["chosen_up_to"] >= v["window"][1] - 1}
    counts = {(tuple(v["window"]), v["enqueued"]) for v in closed.values()}
    if len({c[0] for c in counts}) == 1 and len(counts) > 1:
        detail = {n: v["enqueued"] for n, v in closed.items()}
        report.mismatches.append(f"queue {queue}: replicas disagree on messages stored {detail}")
    best = max(views.values(), key=lambda v: v["chosen_up_to"])
    row["enqueued"] = best["enqueued"]
    row["consumed"] = {}
    for name in names:
        consumed = best["consumers"][name]["consumed"]
        row["consumed"][name] = consumed
        if consumed < best["enqueued"]:
            report.mismatches.append(
                f"queue {queue}: {name} consumed {consumed} of {best['enqueued']} "
                f"(unconsumed {best['enqueued'] - consumed})"
            )


async def _check_checksums(report: Report, group: int, stores: list[Any], ask: Any) -> None:
    statuses = await asyncio.gather(*(ask(s.addr, "status", {}) for s in stores))
    tops = {
        s.id: st["groups"][group]
        for s, st in zip(stores, statuses, strict=True)
        if not isinstance(st, PhxqError)
    }
    if len(tops) < 2:
        return
    common = min(g["chosen_up_to"] for g in tops.values())
    if common == 0:
        return
    sums = await asyncio.gather(
        *(ask(s.addr, "checksum", {"group": group, "instance": common}) for s in stores)
    )
    held = {
        s.id: c
        for s, c in zip(stores, sums, strict=True)
        if s.id in tops and isinstance(c, int) and not isinstance(c, bool)
    }
    report.checksums.append({"group": group, "instance": common, "checksums": held})
    if len(set(held.values())) > 1:
        report.mismatches.append(
            f"group {group}: replicas' chain checksums differ at instance {common}: "
            + ", ".join(f"{n}={c:016x}" for n, c in sorted(held.items()))
        )
