"""The history of one fault run: every operation the workload and the nemesis did, as plain
JSON-able dicts with monotonic times, and the consumer-side delivery recorder.

Public API::

    history = History(meta={"seed": 1})
    op = history.add("enqueue", phase="invoke", key="k1", seq=0, ...)   # stamps "t"
    history.extend(load_deliveries(directory))     # what the consumer daemons recorded
    history.write(path);  History.read(path) -> History
    record_delivery                                # the consumer group handler (see below)

Every record has ``type`` and ``t`` (``time.monotonic()``: on Linux one clock for every process
of the machine, so times recorded by the daemons and by the runner compare). The record types,
and what :mod:`tools.fault.checker` reads from them:

=========  =========================================================================================
enqueue    ``phase`` invoke / ok / fail (certainly not stored) / info (maybe stored); ``producer``,
           ``key``, ``seq``, ``payload`` (``"<key>:<seq>"``), ``dedup``; ok: ``queue``, ``offset``
deliver    a consumer daemon handed a message to the handler: ``group``, ``topic``, ``queue``,
           ``offset``, ``payload``, ``key``, ``consumer`` (``name#incarnation``), ``token``
           (the pair lock's fencing token), ``attempt``
cursor     a poll of a group's committed cursor: ``group``, ``topic``, ``queue``, ``cursor``
           (``None``: never committed), ``t_invoke`` (sent) and ``t`` (answered)
replay     an admin replay issued by the runner: ``group``, ``topic``, ``queue``, ``t_invoke``
lease      one lock tenure of a lock client: ``name``, ``owner``, ``token``, ``start`` (granted),
           ``end`` (the last instant the client may act on it), ``reason``
fenced     a fenced action under a lease: ``phase`` ok / reject / fail; ``owner``, ``token``,
           ``version`` (the counter's new version when ok), ``seen_token`` (reject)
nemesis    ``phase`` start / end; ``fault`` (kind), ``target``, ``detail``
read       the final contents of a queue (after the drain): ``topic``, ``queue``, ``offset``,
           ``payload``
final      the final status of the stores: ``groups`` (list of per-replica group status)
=========  =========================================================================================

**Recorder.** ``record_delivery`` is a ``module:function`` handler for a consumer group. It
appends one ``deliver`` line to ``$PHXQ_FAULT_DELIVERIES/deliveries-<pid>.jsonl`` and flushes
it before acking, so a line exists for every message the handler acked even if the daemon is
SIGKILLed right after (the bytes are in the kernel).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from phxq.consumer.handlers import Delivery

DELIVERIES_ENV = "PHXQ_FAULT_DELIVERIES"


class History:
    """An append-only list of records (see the module docstring)."""

    def __init__(self, meta: dict[str, Any] | None = None) -> None:
        self.meta: dict[str, Any] = dict(meta or {})
        self.ops: list[dict[str, Any]] = []

    def add(self, type_: str, **fields: Any) -> dict[str, Any]:
        record = {"type": type_, "t": time.monotonic(), **fields}
        self.ops.append(record)
        return record

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        self.ops.extend(records)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [op for op in self.ops if op["type"] == type_]

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "ops": sorted(self.ops, key=lambda op: op.get("t", 0.0))}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def read(cls, path: Path) -> History:
        data = json.loads(path.read_text())
        history = cls(data.get("meta"))
        history.ops = list(data["ops"])
        return history


def load_deliveries(directory: Path) -> list[dict[str, Any]]:
    """Every ``deliver`` record the consumer daemons wrote under ``directory``. A last line
    cut by a SIGKILL mid-write is skipped: its handler call never returned, so it acked
    nothing."""
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("deliveries-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line (see the docstring)
    return out


_sink: IO[str] | None = None


def _open_sink() -> IO[str]:
    global _sink
    if _sink is None:
        directory = os.environ.get(DELIVERIES_ENV)
        if not directory:
            raise RuntimeError(f"record_delivery needs ${DELIVERIES_ENV} (a directory)")
        path = Path(directory) / f"deliveries-{os.getpid()}.jsonl"
        _sink = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept for the process's life)
    return _sink


async def record_delivery(delivery: Delivery) -> bool:
    """Consumer group handler: record ``delivery`` (see the module docstring), then ack."""
    sink = _open_sink()
    record = {
        "type": "deliver",
        "t": time.monotonic(),
        "group": delivery.consumer_group,
        "topic": delivery.topic,
        "queue": delivery.queue,
        "offset": delivery.offset,
        "payload": delivery.payload.decode("utf-8", "replace"),
        "key": delivery.key,
        "consumer": delivery.consumer,
        "token": delivery.token,
        "attempt": delivery.attempt,
    }
    # One write of one line, flushed: a small write to a file is not torn by a later SIGKILL.
    sink.write(json.dumps(record, separators=(",", ":")) + "\n")
    sink.flush()
    return True
