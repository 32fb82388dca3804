"""Delayed messages in the fault suite: the workload's scheduler, and the checker's properties.

Workload (:func:`schedule_delayed`, one task of the torture run): every ``pace`` seconds it
enqueues ``"d<n>:0"`` with its own key ``d<n>``, dedup id ``<run>-d<n>`` and ``deliver_at`` a
seeded 0.2-3 s ahead, retrying a failed attempt with the same id and time; about one in five
acked ones is then cancelled. Records:

=========  =========================================================================================
schedule   ``phase`` invoke / ok / fail / info (as ``enqueue``), ``key``, ``seq`` (0), ``payload``,
           ``t_due`` (the due time on the monotonic clock of the history); ok: ``queue``,
           ``scheduled_id``
cancel     ``phase`` ok (``done``: it was pending) / info (outcome unknown); ``key``
=========  =========================================================================================

After the workload stops, :func:`wait_released` waits until every store's master groups report
nothing pending (all due times have passed by then), before the drain and the final read.

Properties (:func:`check_delayed`; "released once" is the checker's ``stored-dup``, and an
unsent payload its ``unexpected``):

delayed-early      no scheduled message is delivered before its due time
delayed-lost       every acked scheduled message that was not cancelled is in the final read and
                   was delivered to every consumer group
delayed-cancelled  a message whose cancel answered True is never stored nor delivered
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from phxq.client import Client
from phxq.errors import ClientError, PhxqError

EARLY_TOLERANCE = 0.005  # seconds: converting the wall-clock due time to the monotonic clock


async def schedule_delayed(
    client: Client,
    history: Any,
    stopping: asyncio.Event,
    *,
    topic: str,
    run_id: str,
    seed: int,
    pace: float = 0.2,
) -> None:
    """The workload's scheduler (see the module docstring) until ``stopping`` is set."""
    rng = random.Random(seed)
    n = 0
    while not stopping.is_set():
        key = f"d{n}"
        delay = rng.uniform(0.2, 3.0)
        deliver_at, t_due = time.time() + delay, time.monotonic() + delay
        base = {"key": key, "seq": 0, "payload": f"{key}:0", "t_due": t_due}
        dedup = f"{run_id}-{key}"
        while True:
            history.add("schedule", phase="invoke", dedup=dedup, **base)
            try:
                ack = await client.enqueue(
                    topic, base["payload"].encode(), key=key, dedup_id=dedup, deliver_at=deliver_at
                )
            except ClientError as exc:  # a bad request is certainly not stored
                history.add("schedule", phase="fail", error=repr(exc), **base)
                raise
            except PhxqError as exc:  # maybe stored: retry with the same id and time
                history.add("schedule", phase="info", error=type(exc).__name__, **base)
                if stopping.is_set():
                    return
                await asyncio.sleep(0.05)
                continue
            history.add(
                "schedule", phase="ok", queue=ack.queue, scheduled_id=ack.scheduled_id, **base
            )
            break
        if rng.random() < 0.2 and ack.scheduled_id is not None:
            try:
                done = await client.cancel_scheduled(ack.scheduled_id)
            except PhxqError as exc:
                history.add("cancel", phase="info", key=key, error=type(exc).__name__)
            else:
                history.add("cancel", phase="ok", key=key, done=done)
        n += 1
        await asyncio.sleep(pace)


async def wait_released(client: Client, addresses: Sequence[str], timeout: float) -> list[str]:
    """Wait until the masters of every group report no scheduled message pending; the
    problems (as the run reports them) if that does not happen within ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        pending = 0
        masters = 0
        for addr in addresses:
            try:
                view = await client.status(addr)
            except PhxqError as exc:
                last = exc
                continue
            for g in view.get("groups", []):
                if g.get("is_master"):
                    masters += 1
                    pending += g.get("scheduled", {}).get("pending", 0)
        if masters and not pending:
            return []
        last = f"{pending} pending on {masters} master groups"
        await asyncio.sleep(0.2)
    return [f"scheduled messages still pending after {timeout:.0f} s: {last}"]


def check_delayed(
    r: Any,
    by_type: dict[str, list[dict[str, Any]]],
    stored: dict[int, dict[int, str]],
    groups: Sequence[str],
) -> None:
    """The properties of the module docstring, reported through ``r.violate``."""
    due = {op["key"]: op["t_due"] for op in by_type["schedule"] if op["phase"] == "invoke"}
    if not due:
        return
    acked = {op["key"]: op for op in by_type["schedule"] if op["phase"] == "ok"}
    r.scheduled = len(acked)
    cancelled = {op["key"] for op in by_type["cancel"] if op["phase"] == "ok" and op["done"]}
    uncertain = {op["key"] for op in by_type["cancel"] if op["phase"] == "info"}
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for queue, rows in stored.items():
        for offset, payload in rows.items():
            key = payload.rpartition(":")[0]
            if key in due:
                where[key].append((queue, offset))
    delivered: dict[str, set[str]] = defaultdict(set)
    for op in by_type["deliver"]:
        key = op["payload"].rpartition(":")[0]
        if key not in due:
            continue
        delivered[key].add(op["group"])
        if op["t"] < due[key] - EARLY_TOLERANCE:
            r.violate(
                "delayed-early",
                f"{op['payload']} delivered to {op['group']} {due[key] - op['t']:.3f} s early",
            )
        if key in cancelled:
            r.violate("delayed-cancelled", f"{op['payload']} delivered after its cancel")
    for key in cancelled:
        if where.get(key):
            r.violate("delayed-cancelled", f"{key}:0 stored at {where[key]} after its cancel")
    if not by_type["read"]:
        return
    for key, op in acked.items():
        if key in cancelled or key in uncertain:
            continue
        if not where.get(key):
            r.lost += 1
            r.violate("delayed-lost", f"acked {op['payload']} not in the final read")
        for group in groups:
            if group not in delivered[key]:
                r.violate("delayed-lost", f"acked {op['payload']} never delivered to {group}")
