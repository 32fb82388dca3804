"""The history checker: a pure function from a fault run's records to verdicts and figures.

Public API::

    result = check(ops, groups=("torture",))     # ops: the records of tools.fault.history
    result.ok;  result.violations               # list[str], empty when every property holds
    result.figures()                            # acked, lost, dups, max_failover_pause, ...
    result.summary(seed)                        # one line

The properties (each a ``violations`` entry naming the property when it fails):

lost            every acked enqueue is in the final read of its queue at its acked offset, and
                was delivered to every consumer group at least once
unexpected      every stored or delivered payload was sent by a producer (an ``enqueue`` invoke
                with that key and seq), and a delivery carries the payload stored at its offset
stored-dup      a (key, seq) is stored at most once (the idempotent producer: retries reuse the
                dedup id)
queue-order     acked offsets of a producer increase with its seq; in the final read each key's
                seqs increase with the offset; inside one *run* (what one owner reads and
                delivers in one go: a new token, or the owner going back to its committed
                cursor, starts a new run) deliveries follow the stored offsets one by one (a
                retry repeats the same offset), and a run never starts past an offset nobody
                delivered yet
key-order       inside one run a key's seqs increase (a retry repeats the same one); a key's
                acks all name one queue
dup             a message delivered again (not a retry inside one run) is a duplicate; it is
                excused (counted in ``dups``) only if a fault was under way (or had ended at
                most ``aftermath`` seconds before), or an admin replay was issued, between its
                first delivery and the repeat
cursor          a group's committed cursor never moves back between two polls that did not
                overlap, unless an admin replay of that queue was issued in between
token           no fencing token is used by two consumer incarnations for one (group, queue)
lock            lease intervals of one lock name with different tokens never overlap (the
                client's interval ends at its own ``valid_until``: see phxq/lock/client.py and
                the lease/margin rules in phxq/lock/state.py, which make that sound on one clock)
fenced          the fenced counter's successful writes, in version order, never go back in token
delayed-*       delayed messages: never early, never lost, never after a cancel (see
                tools/fault/delayed.py; released once is ``stored-dup``)
=========================================================================================

Only ``deliver`` records of the ``groups`` given are checked for loss (the consumer groups of
the run). Figures: ``acked``, ``lost``, ``dups`` (excused duplicate deliveries), ``faults``
(nemesis starts), ``max_failover_pause`` (the longest gap between two acks of one producer that
overlaps a fault on a store that was master of some group).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tools.fault.delayed import check_delayed

Op = dict[str, Any]
MAX_LISTED = 10  # examples kept per violated property
# Seconds a fault's effects may outlast its healing: a consumer's pair lease (3 s) expires and
# the pair is taken over (about 4 s in all, see phxq/consumer/daemon.py).
AFTERMATH = 5.0


@dataclass
class CheckResult:
    acked: int = 0
    attempted: int = 0
    lost: int = 0
    unexpected: int = 0
    stored_dups: int = 0
    dups: int = 0
    delivered: int = 0
    scheduled: int = 0  # acked delayed messages (tools/fault/delayed.py)
    faults: int = 0
    max_failover_pause: float = 0.0
    overlapping_tenures: int = 0  # a paused ex-owner delivered after a newer token (fenced)
    fenced_ok: int = 0
    fenced_rejected: int = 0
    leases: int = 0
    max_lock_gap: float = 0.0  # longest time between two lease tenures (lock availability)
    violations: list[str] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def ok(self) -> bool:
        return not self.violations

    def violate(self, prop: str, text: str) -> None:
        self._counts[prop] += 1
        if self._counts[prop] <= MAX_LISTED:
            self.violations.append(f"{prop}: {text}")
        elif self._counts[prop] == MAX_LISTED + 1:
            self.violations.append(f"{prop}: ... (more)")

    def properties_violated(self) -> set[str]:
        return set(self._counts)

    def figures(self) -> dict[str, Any]:
        return {
            "acked": self.acked,
            "attempted": self.attempted,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "stored_dups": self.stored_dups,
            "dups": self.dups,
            "delivered": self.delivered,
            "scheduled": self.scheduled,
            "faults": self.faults,
            "max_failover_pause": round(self.max_failover_pause, 3),
            "overlapping_tenures": self.overlapping_tenures,
            "leases": self.leases,
            "max_lock_gap": round(self.max_lock_gap, 3),
            "fenced_ok": self.fenced_ok,
            "fenced_rejected": self.fenced_rejected,
            "violations": len(self.violations),
        }

    def summary(self, seed: int) -> str:
        f = self.figures()
        return (
            f"seed={seed} {'OK' if self.ok else 'FAILED'} faults={f['faults']} "
            f"acked={f['acked']} lost={f['lost']} unexpected={f['unexpected']} "
            f"dups={f['dups']} delivered={f['delivered']} leases={f['leases']} "
            f"max_lock_gap={f['max_lock_gap']:.1f}s "
            f"fenced_ok={f['fenced_ok']} max_failover_pause={f['max_failover_pause']:.2f}s "
            f"violations={f['violations']}"
        )


def _parse(payload: str) -> tuple[str, int] | None:
    key, sep, seq = payload.rpartition(":")
    if not sep or not seq.isdigit():
        return None
    return key, int(seq)


def check(
    ops: Iterable[Op], groups: Sequence[str] = (), aftermath: float = AFTERMATH
) -> CheckResult:
    """Check every property of the module docstring over ``ops``."""
    by_type: dict[str, list[Op]] = defaultdict(list)
    for op in sorted(ops, key=lambda o: o.get("t", 0.0)):
        by_type[op["type"]].append(op)
    r = CheckResult()
    windows = _fault_windows(by_type, aftermath)
    stored, lost = _check_store(r, by_type)
    _check_deliveries(r, by_type, stored, lost, groups, windows)
    check_delayed(r, by_type, stored, groups)
    _check_cursors(r, by_type)
    _check_locks(r, by_type)
    r.faults = sum(1 for op in by_type["nemesis"] if op.get("phase") == "start")
    r.max_failover_pause = _failover_pause(by_type)
    return r


def _sent(op: Op) -> float:
    """When an operation was issued: ``t_invoke`` if recorded, else its ``t``."""
    return float(op["t_invoke"] if "t_invoke" in op else op["t"])


def _fault_windows(by_type: dict[str, list[Op]], aftermath: float) -> list[tuple[float, float]]:
    """(from, to) of every fault, extended by ``aftermath`` seconds after it ended (leases
    expire and consumers rebalance after a fault has healed), and of every admin replay."""
    starts: dict[Any, float] = {}
    windows = []
    for op in by_type["nemesis"]:
        if op["phase"] == "start":
            starts[op.get("id")] = op["t"]
        else:
            windows.append((starts.pop(op.get("id"), op["t"]), float(op["t"]) + aftermath))
    windows += [(start, float("inf")) for start in starts.values()]  # never healed
    for op in by_type["replay"]:
        at = _sent(op)
        windows.append((at, at + aftermath))
    return windows


def _attempted(by_type: dict[str, list[Op]]) -> set[tuple[str, int]]:
    """(key, seq) of every message a producer or the delayed scheduler tried to send."""
    return {
        (op["key"], op["seq"])
        for kind in ("enqueue", "schedule")
        for op in by_type[kind]
        if op["phase"] == "invoke"
    }


def _check_store(
    r: CheckResult, by_type: dict[str, list[Op]]
) -> tuple[dict[int, dict[int, str]], set[tuple[str, int]]]:
    """Enqueue acks against the final read. Returns queue -> {offset: payload} as stored, and
    the (key, seq) of acked messages missing from it."""
    attempted = _attempted(by_type)
    r.attempted = len(attempted)
    acks = [op for op in by_type["enqueue"] if op["phase"] == "ok"]
    r.acked = len({(op["key"], op["seq"]) for op in acks})
    stored: dict[int, dict[int, str]] = defaultdict(dict)
    for op in by_type["read"]:
        stored[op["queue"]][op["offset"]] = op["payload"]

    queue_of: dict[str, int] = {}
    by_producer: dict[str, list[Op]] = defaultdict(list)
    for op in acks:
        if queue_of.setdefault(op["key"], op["queue"]) != op["queue"]:
            r.violate(
                "key-order",
                f"key {op['key']} acked on queues {queue_of[op['key']]} and {op['queue']}",
            )
        by_producer[op["key"]].append(op)
    for key, mine in by_producer.items():
        mine.sort(key=lambda o: o["seq"])
        for a, b in pairwise(mine):
            if a["offset"] >= b["offset"] and a["seq"] != b["seq"]:
                r.violate(
                    "queue-order",
                    f"key {key}: seq {b['seq']} acked at offset {b['offset']} <= {a['offset']} of seq {a['seq']}",
                )

    lost: set[tuple[str, int]] = set()
    if by_type["read"]:
        for op in acks:
            if stored[op["queue"]].get(op["offset"]) != op["payload"]:
                lost.add((op["key"], op["seq"]))
                r.violate(
                    "lost",
                    f"acked {op['payload']} (queue {op['queue']} offset {op['offset']}) not in the final read",
                )

    for queue, rows in stored.items():
        seen: dict[tuple[str, int], int] = {}
        last_seq: dict[str, int] = {}
        for offset in sorted(rows):
            parsed = _parse(rows[offset])
            if parsed is None or parsed not in attempted:
                r.unexpected += 1
                r.violate(
                    "unexpected",
                    f"queue {queue} offset {offset} holds {rows[offset]!r}, never sent",
                )
                continue
            if parsed in seen:
                r.stored_dups += 1
                r.violate(
                    "stored-dup",
                    f"{rows[offset]} stored at offsets {seen[parsed]} and {offset} of queue {queue}",
                )
                continue
            seen[parsed] = offset
            key, seq = parsed
            if seq < last_seq.get(key, -1):
                r.violate(
                    "queue-order",
                    f"queue {queue}: {rows[offset]} stored after {key}:{last_seq[key]}",
                )
            last_seq[key] = max(seq, last_seq.get(key, -1))
    r.lost = len(lost)
    return stored, lost


def _check_deliveries(
    r: CheckResult,
    by_type: dict[str, list[Op]],
    stored: dict[int, dict[int, str]],
    lost: set[tuple[str, int]],
    groups: Sequence[str],
    windows: list[tuple[float, float]],
) -> None:
    attempted = _attempted(by_type)
    deliveries = by_type["deliver"]
    r.delivered = len(deliveries)
    stored_offsets = {q: sorted(rows) for q, rows in stored.items()}
    per_pair: dict[tuple[str, int], list[Op]] = defaultdict(list)
    for op in deliveries:
        per_pair[(op["group"], op["queue"])].append(op)
        parsed = _parse(op["payload"])
        if parsed is None or parsed not in attempted:
            r.unexpected += 1
            r.violate("unexpected", f"group {op['group']} got {op['payload']!r}, never sent")
        elif stored and stored[op["queue"]].get(op["offset"], op["payload"]) != op["payload"]:
            r.unexpected += 1
            r.violate(
                "unexpected",
                f"group {op['group']} got {op['payload']!r} at queue {op['queue']} offset {op['offset']}, the log holds {stored[op['queue']][op['offset']]!r}",
            )

    acks = [op for op in by_type["enqueue"] if op["phase"] == "ok"]
    for group in groups:
        got = {(op["queue"], op["offset"]) for op in deliveries if op["group"] == group}
        for op in acks:
            if (op["queue"], op["offset"]) not in got and (op["key"], op["seq"]) not in lost:
                lost.add((op["key"], op["seq"]))
                r.violate(
                    "lost",
                    f"acked {op['payload']} (queue {op['queue']} offset {op['offset']}) never delivered to group {group}",
                )
    r.lost = len(lost)

    for (group, queue), ops in per_pair.items():
        _check_pair(r, group, queue, ops, stored_offsets.get(queue, []), windows)


def _check_pair(
    r: CheckResult,
    group: str,
    queue: int,
    ops: list[Op],
    offsets: list[int],
    windows: list[tuple[float, float]],
) -> None:
    """One (group, queue): deliveries in time order, cut into *runs*: a run is what one owner
    read and delivered in one go; a new run starts with a new token, or when an owner goes
    back (it re-read from the committed cursor after losing and regaining its lease: the lock
    keeps the token of a holder that acquires again)."""
    where = f"group {group} queue {queue}"
    owners: dict[int, str] = {}
    last_of_token: dict[int, Op] = {}
    run_keys: dict[int, dict[str, int]] = {}  # token -> key -> last seq in its current run
    first_delivery: dict[int, float] = {}
    max_token = 0
    for op in ops:  # in time order
        token, offset = op["token"], op["offset"]
        if owners.setdefault(token, op["consumer"]) != op["consumer"]:
            r.violate(
                "token", f"{where}: token {token} used by {owners[token]} and {op['consumer']}"
            )
        if token < max_token:
            r.overlapping_tenures += 1
        max_token = max(max_token, token)
        prev = last_of_token.get(token)
        retry = prev is not None and prev["offset"] == offset and op["attempt"] > prev["attempt"]
        if prev is None or (not retry and offset <= prev["offset"]):
            # A run starts at the committed cursor: never past an undelivered message.
            skipped = [o for o in offsets if o < offset and o not in first_delivery]
            if skipped:
                r.violate(
                    "queue-order",
                    f"{where}: token {token} started a run at {offset}, offsets {skipped[:5]} never delivered before",
                )
            run_keys[token] = {}
        elif not retry:
            i = bisect_right(offsets, prev["offset"])
            expected = offsets[i] if i < len(offsets) else None
            if expected is not None and offset != expected:
                r.violate(
                    "queue-order",
                    f"{where}: token {token} delivered {offset} after {prev['offset']}, skipping {expected}",
                )
        _note_key(r, where, op, run_keys[token], retry=retry)
        if not retry and offset in first_delivery:
            first = first_delivery[offset]
            if _overlaps(windows, first, op["t"]):
                r.dups += 1
            else:
                r.violate(
                    "dup",
                    f"{where}: offset {offset} delivered again at {op['t']:.3f} (first {first:.3f}) with no fault or replay around",
                )
        first_delivery.setdefault(offset, op["t"])
        last_of_token[token] = op


def _note_key(r: CheckResult, where: str, op: Op, seqs: dict[str, int], *, retry: bool) -> None:
    parsed = _parse(op["payload"])
    if parsed is None:
        return
    key, seq = parsed
    last = seqs.get(key)
    if last is not None and (seq < last or (seq == last and not retry)):
        r.violate("key-order", f"{where}: key {key} seq {seq} after {last} (token {op['token']})")
    seqs[key] = seq


def _overlaps(windows: list[tuple[float, float]], lo: float, hi: float) -> bool:
    return any(start <= hi and end >= lo for start, end in windows)


def _check_cursors(r: CheckResult, by_type: dict[str, list[Op]]) -> None:
    # A replay takes effect at some moment between its sending and its answer; one that failed
    # (outcome unknown: the client retried it through an outage) may take effect any time after.
    replays: dict[tuple[str, str], list[tuple[int | None, float, float]]] = defaultdict(list)
    for op in by_type["replay"]:
        done = math.inf if "error" in op else float(op["t"])
        replays[(op["group"], op["topic"])].append((op.get("queue"), _sent(op), done))
    polls: dict[tuple[str, str, int], list[Op]] = defaultdict(list)
    for op in by_type["cursor"]:
        polls[(op["group"], op["topic"], op["queue"])].append(op)
    for (group, topic, queue), ops in polls.items():
        mine = [(at, done) for q, at, done in replays[(group, topic)] if q is None or q == queue]
        for b in ops:
            # Every poll answered before b was sent: b must not see less, unless a replay may
            # have taken effect after that poll was sent and before b was answered.
            for a in ops:
                if a["t"] >= b["t_invoke"] or _cursor(b) >= _cursor(a):
                    continue
                if not any(at <= b["t"] and done >= a["t_invoke"] for at, done in mine):
                    r.violate(
                        "cursor",
                        f"group {group} {topic}/{queue}: cursor {b['cursor']} at {b['t']:.3f} after {a['cursor']} at {a['t']:.3f}, no replay",
                    )
                    break


def _cursor(op: Op) -> int:
    return -1 if op["cursor"] is None else int(op["cursor"])


def _check_locks(r: CheckResult, by_type: dict[str, list[Op]]) -> None:
    leases = by_type["lease"]
    r.leases = len(leases)
    per_name: dict[str, list[Op]] = defaultdict(list)
    for op in leases:
        per_name[op["name"]].append(op)
    for name, ops in per_name.items():
        ops.sort(key=lambda o: o["start"])
        reach = ops[0]["end"]
        for op in ops[1:]:
            r.max_lock_gap = max(r.max_lock_gap, op["start"] - reach)
            reach = max(reach, op["end"])
        for i, a in enumerate(ops):
            for b in ops[i + 1 :]:
                if b["start"] >= a["end"]:
                    break
                if b["token"] != a["token"] or b["owner"] != a["owner"]:
                    r.violate(
                        "lock",
                        f"{name}: {a['owner']} (token {a['token']}) held it {a['start']:.3f}-{a['end']:.3f}, {b['owner']} (token {b['token']}) from {b['start']:.3f}",
                    )
    fenced = [op for op in by_type["fenced"] if op["phase"] == "ok"]
    r.fenced_ok = len(fenced)
    r.fenced_rejected = sum(1 for op in by_type["fenced"] if op["phase"] == "reject")
    fenced.sort(key=lambda o: o["version"])
    for a, b in pairwise(fenced):
        if b["token"] < a["token"]:
            r.violate(
                "fenced",
                f"counter version {b['version']} written with token {b['token']} after version {a['version']} with token {a['token']}",
            )


def _failover_pause(by_type: dict[str, list[Op]]) -> float:
    windows: list[tuple[float, float]] = []
    starts: dict[Any, float] = {}
    for op in by_type["nemesis"]:
        if not op.get("store_master"):
            continue
        if op["phase"] == "start":
            starts[op.get("id")] = op["t"]
        elif op.get("id") in starts:
            windows.append((starts.pop(op.get("id")), op["t"]))
    if not windows:
        return 0.0
    times: dict[str, list[float]] = defaultdict(list)
    for op in by_type["enqueue"]:
        if op["phase"] == "ok":
            times[str(op.get("producer") or op["key"])].append(op["t"])
    longest = 0.0
    for ts in times.values():
        for a, b in pairwise(sorted(ts)):
            if any(b > lo and a < hi for lo, hi in windows):
                longest = max(longest, b - a)
    return longest
