"""A seeded frame fuzzer against live store and lock daemons (issue 9, "bad input at scale").

The bodies come from :mod:`tools.fault.fuzzgen` (pure, seeded); this module sends them and
checks what the daemons did.

Public API::

    report = await fuzz_cluster(cluster, frames=100_000, seed=1)   # a started ProcessCluster
    report.ok, report.violations, report.summary()                  # FuzzReport

What it sends, per category (``CATEGORIES``), spread over every store and lock daemon:

=============  ==========================================================================
random_body    a framed body of random bytes (mostly not msgpack)
bad_msgpack    a valid request body with bytes flipped, cut or inserted
wrong_fields   valid msgpack, wrong frame shape: unknown kinds, bad ids, non-string
               methods, responses and errors sent to a server, maps, scalars, deep nesting
read_params    a read-only method (meta, status, dequeue, get, kv_list, ...) or an unknown
               one, with params of wrong types, missing, extra, or not a map at all
write_poison   a write method (enqueue, commit, seek, acquire, kv_put, ...) with one field
               that makes it invalid by construction (plus random extra keys); the reply
               must be a typed error, never a result
px_garbage     ``px`` notifies that imitate peer Paxos traffic but are malformed (cut,
               mistyped, unknown tag) or name no group / no member; ``snap`` notifies
               with garbage snapshots; notifies of unknown methods
huge_length    a length header above the 16 MiB frame limit (own connection)
truncated      a request, then half a frame, then FIN or RST (own connection)
random_stream  unframed random bytes, then FIN (own connection)
half_open      a connection left open mid-header or mid-body until the run ends
=============  ==========================================================================

Safety net: every body goes through :func:`classify` first, which decodes it with the daemons'
own decoders. A body that would be a *valid* write request, a well-formed Paxos message from a
member for a real group (a forged ballot: an authentication problem, out of scope), a snapshot
a daemon could install, or a long poll is never sent (counted as ``skipped``); only
``write_poison`` bodies bypass it, and their replies are checked. So the fuzz traffic itself can
change no stored data, and the run proves it: data captured before and after must differ only
by what the concurrent well-behaved client did.

Checks (each failure is a line in ``report.violations``): every framed body that is not a
notify gets exactly one reply, a well-formed frame; an error reply carries a typed code (never
the generic ``error`` of an unexpected exception); a write poison is never answered with a
result; a broken stream gets its error frame and a close; the well-behaved client (enqueue,
dequeue, commit, lock acquire/release, kv_put) sees no error; every daemon keeps its pid;
stored queues, cursors, locks and keys are as before plus the client's own writes; the
replicas of every group agree on the chain checksum; no daemon log holds a ``Traceback``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import reprlib
import ssl
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from phxq.client import Client
from phxq.devcluster import ProcessCluster
from phxq.errors import PhxqError, ProtocolError, error_classes
from phxq.lock import LockClient
from phxq.net.frames import (
    MAX_FRAME_DEFAULT,
    ErrorReply,
    Request,
    Response,
    decode_body,
    encode_request,
    prefix,
)
from phxq.net.rpc import RpcPool
from phxq.security.daemon import member_credentials
from tools.fault.fuzzgen import CATEGORIES, STREAM, WEIGHTS, Generator, Shot, classify

__all__ = ["CATEGORIES", "FuzzReport", "Generator", "classify", "fuzz_cluster"]

TYPED_CODES = frozenset(code for code in error_classes() if code != PhxqError.code)
REPLY_TIMEOUT = 30.0  # seconds for one batch's replies on a loaded 2-core machine
MAX_HALF_OPEN = 32  # per target, at once
BASELINE_SECONDS = 2.0  # the well-behaved client alone, before the fuzz


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # "store" | "lock"
    node: int
    addr: str
    ssl: ssl.SSLContext | None = None  # a secured cluster: fuzz as a member, inside TLS


@dataclass
class FuzzReport:
    seed: int
    frames: int = 0
    sent: collections.Counter[str] = field(default_factory=collections.Counter)
    replies: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped: int = 0
    poison_rejected: int = 0
    connections: int = 0
    good_ops: int = 0
    good_errors: list[str] = field(default_factory=list)
    good_enqueue_seconds: list[float] = field(default_factory=list)
    baseline_enqueue_seconds: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    crashes: int = 0
    data_unchanged: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and not self.good_errors and not self.crashes

    def violation(self, text: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(text)

    def summary(self) -> str:
        lat, base = self.good_enqueue_seconds, self.baseline_enqueue_seconds
        lines = [
            f"seed={self.seed} frames sent={self.frames} in {self.seconds:.1f}s "
            f"({self.connections} connections, {self.skipped} generated bodies skipped as "
            "valid writes / forged peer messages)",
            "per category: " + ", ".join(f"{c}={self.sent[c]}" for c in CATEGORIES),
            "replies: " + ", ".join(f"{k}={v}" for k, v in sorted(self.replies.items())),
            f"write poisons rejected with a typed error: {self.poison_rejected}",
            f"well-behaved client: {self.good_ops} rounds (enqueue, read back, commit, lock, "
            f"put), {len(self.good_errors)} errors; its enqueues during the fuzz: "
            f"median {_ms(statistics.median(lat)) if lat else '-'}, "
            f"slowest {_ms(max(lat)) if lat else '-'} "
            f"(without fuzz: median {_ms(statistics.median(base)) if base else '-'}, "
            f"slowest {_ms(max(base)) if base else '-'})",
            f"crashes: {self.crashes}",
            f"data unchanged: {'yes' if self.data_unchanged else 'NO'}",
            f"violations: {len(self.violations)}",
        ]
        lines += [f"  {v}" for v in self.violations[:40]]
        lines += [f"  good client: {e}" for e in self.good_errors[:10]]
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


# ------------------------------------------------------------------------------ running


async def _read_body(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """The next frame body, or ``None`` at EOF (a reset counts as EOF)."""
    try:
        header = await asyncio.wait_for(reader.readexactly(4), timeout)
        (length,) = struct.unpack(">I", header)
        return await asyncio.wait_for(reader.readexactly(length), timeout)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def _open(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = target.addr.rsplit(":", 1)
    tls: dict[str, Any] = {}
    if target.ssl is not None:
        tls = {"ssl": target.ssl, "server_hostname": host}
    return await asyncio.open_connection(host, int(port), limit=MAX_FRAME_DEFAULT + 16, **tls)


def _member(cluster: ProcessCluster) -> dict[str, Any]:
    """Client keyword arguments: with [security], the member certificate (the good client
    takes locks, which only members may)."""
    member = member_credentials(cluster.config).ssl
    return {} if member is None else {"ca": member}


def _half_close(writer: asyncio.StreamWriter) -> bool:
    """Send FIN and keep reading; False on TLS, which has no half-close (then the caller
    cannot wait for the server's EOF and checks less)."""
    if not writer.can_write_eof():
        return False
    writer.write_eof()
    return True


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


class _Worker:
    """Sends one target's share of the frames: framed bodies in batches on one long-lived
    connection, stream-breaking shots on connections of their own."""

    def __init__(self, run: _Run, target: Target, budget: int, seed: int) -> None:
        self.run = run
        self.target = target
        self.budget = budget
        self.rng = random.Random(seed)
        self.gen = Generator(self.rng, run.topics, run.groups)
        self.half_open: collections.deque[asyncio.StreamWriter] = collections.deque()
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def where(self) -> str:
        return f"{self.target.kind} {self.target.node}"

    async def go(self) -> None:
        report = self.run.report
        batch: list[tuple[Shot, str]] = []
        limit = self.batch_size()
        try:
            while self.budget > 0:
                category = self.rng.choices(CATEGORIES, WEIGHTS)[0]
                if category in STREAM:
                    await self.stream(category)
                    self.sent(category)
                    continue
                shot = self.gen.shot(category, self.target.kind)
                if shot is None:
                    continue
                verdict = "reply" if shot.poison else self.run.classify(shot.body, self.target.kind)
                if verdict == "skip":
                    report.skipped += 1
                    continue
                batch.append((shot, verdict))
                self.sent(category)
                if len(batch) >= limit:
                    await self.flush(batch)
                    batch, limit = [], self.batch_size()
            if batch:
                await self.flush(batch)
            await self.finish()
        finally:
            while self.half_open:
                _abort(self.half_open.popleft())
            if self.conn is not None:
                _abort(self.conn[1])

    def batch_size(self) -> int:
        """Frames per write: mostly a few dozen; now and then more than a connection may have
        in flight (256), which makes the server stop reading it for a while."""
        return self.rng.randint(300, 600) if self.rng.random() < 0.01 else self.rng.randint(1, 64)

    def sent(self, category: str) -> None:
        self.budget -= 1
        self.run.report.sent[category] += 1
        self.run.report.frames += 1

    async def connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.conn is None:
            self.conn = await _open(self.target)
            self.run.report.connections += 1
        return self.conn

    async def flush(self, batch: list[tuple[Shot, str]]) -> None:
        """Send a batch in one write; read one reply per body that is not a notify, then one
        more for a trailing ``meta`` request (proof that the notifies were taken, too)."""
        report = self.run.report
        reader, writer = await self.connection()
        sentinel = self.gen.checked_id()
        bodies = [shot.body for shot, _ in batch] + [encode_request(sentinel, "meta", {})]
        writer.write(b"".join(prefix(b) + b for b in bodies))
        await writer.drain()
        poisons = {}
        for shot, _ in batch:
            if shot.poison:
                frame = decode_body(shot.body)
                assert type(frame) is Request
                poisons[frame.id] = frame
        expected = sum(verdict == "reply" for _, verdict in batch) + 1
        seen_sentinel = False
        for _ in range(expected):
            body = await _read_body(reader, REPLY_TIMEOUT)
            if body is None:
                report.violation(f"{self.where()}: connection closed with replies outstanding")
                self.conn = None
                return
            try:
                reply = decode_body(body)
            except ProtocolError as exc:
                report.violation(f"{self.where()}: malformed reply frame: {exc}")
                continue
            if type(reply) is ErrorReply:
                report.replies[reply.code] += 1
                if reply.code not in TYPED_CODES:
                    report.violation(f"{self.where()}: untyped error {reply.code}: {reply.message}")
                if reply.id in poisons:
                    report.poison_rejected += 1
                    del poisons[reply.id]
            elif type(reply) is Response:
                report.replies["result"] += 1
                if reply.id == sentinel:
                    seen_sentinel = True
                elif reply.id in poisons:
                    request = poisons.pop(reply.id)
                    report.violation(
                        f"{self.where()}: invalid write accepted: {request.method} "
                        f"{reprlib.repr(request.params)} -> {reprlib.repr(reply.result)}"
                    )
            else:
                report.violation(f"{self.where()}: a server sent a {type(reply).__name__}")
        if not seen_sentinel:
            report.violation(f"{self.where()}: reply count mismatch in a batch of {len(batch)}")
        for request in poisons.values():
            report.violation(f"{self.where()}: no reply to invalid {request.method}")

    async def finish(self) -> None:
        """Half-close the long-lived connection: nothing may arrive but the EOF."""
        if self.conn is None:
            return
        reader, writer = self.conn
        if _half_close(writer):
            extra = await _read_body(reader, REPLY_TIMEOUT)
            if extra is not None:
                self.run.report.violation(f"{self.where()}: an extra reply {extra[:60]!r}")
        writer.close()
        self.conn = None

    async def stream(self, category: str) -> None:
        report = self.run.report
        rng = self.rng
        reader, writer = await _open(self.target)
        report.connections += 1
        if category == "half_open":
            if rng.random() < 0.3:
                writer.write(rng.randbytes(rng.randint(1, 3)))  # part of a header
            elif rng.random() < 0.7:
                body = encode_request(1, "meta", {})
                writer.write(prefix(body) + body[: rng.randrange(len(body))])
            self.half_open.append(writer)
            if len(self.half_open) > MAX_HALF_OPEN:
                _abort(self.half_open.popleft())
            return
        try:
            if category == "huge_length":
                size = rng.randint(MAX_FRAME_DEFAULT + 1, 2**32 - 1)
                writer.write(struct.pack(">I", size) + rng.randbytes(rng.randint(0, 100)))
                first = await _read_body(reader, REPLY_TIMEOUT)
                reply = None if first is None else decode_body(first)
                if not (
                    type(reply) is ErrorReply and reply.id is None and reply.code == "protocol"
                ):
                    report.violation(
                        f"{self.where()}: huge length {size} answered {reprlib.repr(reply)}"
                    )
                if await _read_body(reader, REPLY_TIMEOUT) is not None:
                    report.violation(f"{self.where()}: connection not closed after a huge length")
            elif category == "truncated":
                good = encode_request(7, "meta", {})
                body = encode_request(8, "status", {})
                writer.write(prefix(good) + good + prefix(body) + body[: rng.randrange(len(body))])
                if rng.random() < 0.5:
                    await writer.drain()
                    _abort(writer)  # a reset, mid-frame
                    return
                closed = _half_close(writer)
                first = await _read_body(reader, REPLY_TIMEOUT)
                reply = None if first is None else decode_body(first)
                if not (type(reply) is Response and reply.id == 7):
                    report.violation(f"{self.where()}: truncated stream: {reprlib.repr(reply)}")
                if closed and await _read_body(reader, REPLY_TIMEOUT) is not None:
                    report.violation(f"{self.where()}: reply to a truncated frame")
            else:
                writer.write(rng.randbytes(rng.randint(1, 600)))
                if not _half_close(writer):
                    await writer.drain()
                    return  # TLS: no half-close; the bytes reached the decoder, abort below
                for _ in range(1000):  # frames it answers must be well-formed, then EOF
                    answer = await _read_body(reader, REPLY_TIMEOUT)
                    if answer is None:
                        break
                    decode_body(answer)
        except ProtocolError as exc:
            report.violation(f"{self.where()}: {category}: malformed reply: {exc}")
        except TimeoutError:
            report.violation(f"{self.where()}: {category}: no close within {REPLY_TIMEOUT}s")
        finally:
            _abort(writer)


class _Run:
    def __init__(self, cluster: ProcessCluster, report: FuzzReport) -> None:
        cfg = cluster.config
        self.cluster = cluster
        self.report = report
        self.topics = {t.name: t.queues for t in cfg.topics}
        self.groups = cfg.cluster.groups
        self.members = {
            "store": frozenset(s.id for s in cfg.stores),
            "lock": frozenset(lk.id for lk in cfg.locks),
        }

    def classify(self, body: bytes, kind: str) -> str:
        return classify(body, kind, self.groups if kind == "store" else 1, self.members[kind])


# ------------------------------------------------------------------ the well-behaved client

GOOD_TOPIC = "orders"
GOOD_GROUP = "good"


@dataclass
class GoodLog:
    acked: dict[tuple[str, int], list[tuple[int, bytes]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    cursors: dict[tuple[str, str, int], int] = field(default_factory=dict)
    kv: dict[str, Any] = field(default_factory=dict)


async def _good_client(cluster: ProcessCluster, stop: asyncio.Event, report: FuzzReport) -> GoodLog:
    """Enqueue, read back, commit, lock and put while the fuzz runs; every error is reported."""
    done = GoodLog()
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            Client(cluster.store_addresses, **_member(cluster))
        )
        locks = None
        if cluster.locks:
            locks = await stack.enter_async_context(
                LockClient(cluster.lock_addresses, **_member(cluster))
            )
        i = 0
        while not stop.is_set():
            i += 1
            try:
                payload = f"good-{i}".encode()
                sent = time.monotonic()
                ack = await client.enqueue(GOOD_TOPIC, payload, key=f"k{i % 11}")
                report.good_enqueue_seconds.append(time.monotonic() - sent)
                done.acked[(ack.topic, ack.queue)].append((ack.offset, payload))
                back = await client.dequeue(
                    None, GOOD_TOPIC, queue=ack.queue, after=ack.offset - 1, limit=1
                )
                if [(m.offset, m.payload) for m in back] != [(ack.offset, payload)]:
                    report.good_errors.append(f"read back {back!r:.200} for {ack}")
                if i % 3 == 0:
                    await client.commit(
                        GOOD_GROUP, GOOD_TOPIC, queue=ack.queue, offset=ack.offset, token=1
                    )
                    done.cursors[(GOOD_GROUP, GOOD_TOPIC, ack.queue)] = ack.offset
                if locks is not None and i % 4 == 0:
                    token = await locks.acquire("good/lock", "good", 10.0)
                    await locks.kv_put("good/key", i)
                    done.kv["good/key"] = i
                    await locks.release("good/lock", "good", token)
                report.good_ops += 1
            except PhxqError as exc:
                report.good_errors.append(f"op {i}: {exc!r:.300}")
            await asyncio.sleep(0.005)
    return done


# ------------------------------------------------------------------------ stored data


async def _seed_data(cluster: ProcessCluster) -> None:
    """A known baseline: messages in every queue, cursors, a held lock and KV keys."""
    async with Client(cluster.store_addresses, **_member(cluster)) as client:
        for topic in cluster.config.topics:
            for q in range(topic.queues):
                for j in range(3):
                    ack = await client.enqueue(
                        topic.name,
                        f"base-{topic.name}-{q}-{j}".encode(),
                        queue=q,
                        key=f"base{j}",
                        headers={"n": str(j)},
                        dedup_id=f"base-{topic.name}-{q}-{j}",
                    )
                await client.commit("base", topic.name, queue=q, offset=ack.offset, token=5)
    if cluster.locks:
        async with LockClient(cluster.lock_addresses, **_member(cluster)) as locks:
            await locks.acquire("base/lock", "base", 3600.0)
            await locks.kv_put("base/k1", {"a": [1, 2]})
            await locks.kv_put("base/k2", b"bytes")


async def _settle(cluster: ProcessCluster, pool: RpcPool, timeout: float = 30.0) -> str | None:
    """Wait until every replica of every group has the same chosen prefix and checksum;
    ``None``, or what still differs at ``timeout``."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        views: dict[Any, set[Any]] = collections.defaultdict(set)
        try:
            for s in cluster.config.stores:
                status = await pool.call(s.addr, "status", {}, timeout=5.0)
                for g in status["groups"]:
                    views[("store", g["group"])].add((g["chosen_up_to"], g["checksum"]))
            for lk in cluster.config.locks if cluster.locks else ():
                status = await pool.call(lk.addr, "status", {}, timeout=5.0)
                views[("lock", 0)].add(status["chosen_up_to"])
        except PhxqError as exc:
            last = repr(exc)
        else:
            differ = {k: v for k, v in views.items() if len(v) != 1}
            if not differ:
                return None
            last = repr(differ)
        await asyncio.sleep(0.1)
    return f"replicas did not converge in {timeout}s: {last:.300}"


async def _capture(cluster: ProcessCluster, pool: RpcPool) -> dict[str, Any]:
    cfg = cluster.config
    state: dict[str, Any] = {"queues": {}, "groups": {}, "cursors": {}}
    for s in cfg.stores:
        status = await pool.call(s.addr, "status", {}, timeout=5.0)
        for g in status["groups"]:
            state["groups"][(s.id, g["group"])] = {
                k: g[k] for k in ("chosen_up_to", "checksum", "failed", "diverged", "needs_repair")
            }
        for topic in cfg.topics:
            for q in range(topic.queues):
                params = {"topic": topic.name, "queue": q, "limit": 10_000, "local": True}
                rows = await pool.call(s.addr, "dequeue", params, timeout=10.0)
                state["queues"][(s.id, topic.name, q)] = [
                    (o, p, k, tuple(sorted(h.items())), t) for o, p, k, h, t in rows
                ]
    async with Client(cluster.store_addresses, **_member(cluster)) as client:
        for topic in cfg.topics:
            for q in range(topic.queues):
                for cg in ("base", "fz", GOOD_GROUP):
                    state["cursors"][(cg, topic.name, q)] = await client.cursor(
                        cg, topic.name, queue=q
                    )
    if cluster.locks:
        async with LockClient(cluster.lock_addresses, **_member(cluster)) as locks:
            state["kv"] = await locks.kv_list("")
            info = await locks.get("base/lock")
            state["base_lock"] = None if info is None else (info.owner, info.token)
            state["fz_lock"] = await locks.get("fz/l")
    return state


def _compare(before: dict[str, Any], after: dict[str, Any], good: GoodLog) -> list[str]:
    """What changed beyond the well-behaved client's own writes."""
    problems = []
    for where, rows in after["queues"].items():
        node, topic, q = where
        mine = {o: p for o, p in good.acked.get((topic, q), [])}
        others = [r for r in rows if r[0] not in mine]
        if others != before["queues"][where]:
            problems.append(f"store {node} {topic}/{q}: stored messages changed")
        held = {r[0]: r[1] for r in rows if r[0] in mine}
        if held != mine:
            problems.append(f"store {node} {topic}/{q}: the client's acked messages differ")
    for where, g in after["groups"].items():
        if g["failed"] or g["diverged"] is not None or g["needs_repair"]:
            problems.append(f"store/group {where}: {g}")
        if g["chosen_up_to"] < before["groups"][where]["chosen_up_to"]:
            problems.append(f"store/group {where}: chosen prefix went back")
    for key, cursor in after["cursors"].items():
        want = good.cursors.get(key, before["cursors"][key]) if key[0] == GOOD_GROUP else None
        expected = want if key[0] == GOOD_GROUP else before["cursors"][key]
        if cursor != expected:
            problems.append(f"cursor {key}: {before['cursors'][key]} -> {cursor}")
    if "kv" in after:
        kv_before = {k: v for k, v in before["kv"].items() if k not in good.kv}
        kv_after = {k: v for k, v in after["kv"].items() if k not in good.kv}
        if kv_after != kv_before:
            problems.append(f"lock kv changed: {kv_before!r:.200} -> {kv_after!r:.200}")
        for key, value in good.kv.items():
            if after["kv"].get(key, (None,))[0] != value:
                problems.append(f"lock kv {key}: the client's last put is not there")
        for name in ("base_lock", "fz_lock"):
            if after[name] != before[name] and not (name == "fz_lock" and after[name] is None):
                problems.append(f"lock {name}: {before[name]} -> {after[name]}")
    return problems


def _tracebacks(cluster: ProcessCluster) -> list[str]:
    assert cluster.log_dir is not None
    found = []
    for path in sorted(cluster.log_dir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "Traceback" in line:
                tail = next((x for x in lines[i + 1 :] if x and not x.startswith(" ")), "")
                found.append(f"{path.name}:{i + 1}: Traceback ... {tail[:200]}")
    return found


def _pids(cluster: ProcessCluster) -> dict[tuple[str, str], int | None]:
    return {
        key: None if p.popen is None or p.popen.poll() is not None else p.popen.pid
        for key, p in cluster.procs.items()
        if key[0] in ("store", "lock")
    }


# ------------------------------------------------------------------------------ entry point


async def fuzz_cluster(cluster: ProcessCluster, *, frames: int, seed: int) -> FuzzReport:
    """Fuzz every store and lock daemon of a started, ready ``cluster`` with ``frames`` frames
    (see the module docstring); the report says what happened."""
    report = FuzzReport(seed)
    run = _Run(cluster, report)
    cfg = cluster.config
    member = member_credentials(cfg).ssl
    targets = [Target("store", s.id, s.addr, member) for s in cfg.stores]
    if cluster.locks:
        targets += [Target("lock", lk.id, lk.addr, member) for lk in cfg.locks]
    pids = _pids(cluster)
    await _seed_data(cluster)
    # The client's latency without fuzz, for comparison (its writes become part of the baseline).
    quiet, stop = FuzzReport(seed), asyncio.Event()
    warmup = asyncio.create_task(_good_client(cluster, stop, quiet))
    await asyncio.sleep(BASELINE_SECONDS)
    stop.set()
    await warmup
    report.baseline_enqueue_seconds = quiet.good_enqueue_seconds
    report.good_errors += [f"before fuzzing: {e}" for e in quiet.good_errors]
    creds = member_credentials(cluster.config)
    async with RpcPool(transport_factory=creds.transport_factory()) as pool:
        if (problem := await _settle(cluster, pool)) is not None:
            report.violation(f"before fuzzing: {problem}")
        before = await _capture(cluster, pool)
        stop = asyncio.Event()
        good_task = asyncio.create_task(_good_client(cluster, stop, report))
        started = time.monotonic()
        share, extra = divmod(frames, len(targets))
        workers = [
            _Worker(run, t, share + (i < extra), seed * 1_000_003 + i)
            for i, t in enumerate(targets)
        ]
        results = await asyncio.gather(*(w.go() for w in workers), return_exceptions=True)
        for w, result in zip(workers, results, strict=True):
            if isinstance(result, BaseException):
                report.violation(f"{w.where()}: fuzz worker stopped: {result!r}")
        report.seconds = time.monotonic() - started
        stop.set()
        good = await good_task
        if (problem := await _settle(cluster, pool)) is not None:
            report.violation(f"after fuzzing: {problem}")
        after = await _capture(cluster, pool)
    changes = _compare(before, after, good)
    report.data_unchanged = not changes
    for change in changes:
        report.violation(f"data: {change}")
    for key, pid in _pids(cluster).items():
        if pid is None or pid != pids.get(key):
            report.crashes += 1
            report.violation(f"{key[0]} {key[1]}: pid {pids.get(key)} -> {pid}")
    for line in _tracebacks(cluster):
        report.violation(f"log: {line}")
    return report
