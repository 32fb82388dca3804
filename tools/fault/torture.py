"""One torture run: harness + workload + seeded nemesis + heal + drain + check.

Public API::

    report = await run_once(RunOptions(seed=1, duration=30, out=Path("torture-out")))
    report.ok;  report.summary();  report.history_path
    main(argv) -> exit status                   # scripts/torture

The workload, all recorded in the :class:`~tools.fault.history.History`:

- **delayed messages**: scheduled 0.2-3 s ahead, some cancelled (:mod:`tools.fault.delayed`);
  all released before the drain;
- **producers**: one per key (``k0``..), sequential: enqueue ``"<key>:<seq>"`` with that key
  and dedup id ``<run>-<key>-<seq>``; a failed attempt is retried with the same seq and id
  (nothing is skipped, so at most the last message of a producer is unacked);
- **consumers**: the consumer daemons deliver group ``torture`` to
  :func:`~tools.fault.history.record_delivery`;
- **cursor poller**: every ``cursor_poll`` s, each queue's committed cursor;
- **admin replay**: ``replays`` times, one queue's cursor is moved back over its last ~100
  acked messages (``seek``), recorded so the checker allows what follows from it;
- **lock clients**: ``lock_clients`` clients contend for one lock with ``LockClient.hold``;
  while holding, each does fenced actions: read the counter in the lock service's KV and, if no
  newer token wrote it, compare-and-set it with its own token (``reject`` when a newer token
  did). A tenure is recorded from the moment ``hold`` returned until the client stops acting,
  bounded by its ``lease.valid_until``.

After the schedule: heal everything, let the cluster settle (every group has a master, the
lock service serves), let the producers run ``tail`` more seconds, stop them, drain (every
queue's cursor reaches the end of the queue), read every queue back, record the stores'
status, stop the daemons, and check the history (:mod:`tools.fault.checker`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phxq.client import Client
from phxq.errors import ClientError, LockHeld, PhxqError, VersionMismatch
from phxq.lock import LockClient
from phxq.net.rpc import RpcPool
from tools.fault.checker import CheckResult, check
from tools.fault.cluster import GROUP, TOPIC, FaultCluster, HarnessOptions
from tools.fault.delayed import schedule_delayed, wait_released
from tools.fault.history import History, load_deliveries
from tools.fault.nemesis import KINDS, Nemesis, format_schedule, make_schedule

log = logging.getLogger("tools.fault")

LOCK_NAME = "torture/lock"
COUNTER = "torture/counter"


@dataclass
class RunOptions:
    seed: int
    duration: float = 30.0  # seconds of faults
    out: Path = Path("torture-out")
    keys: int = 6
    pace: float = 0.01  # seconds between two enqueues of one producer
    lock_clients: int = 3
    lock_ttl: float = 1.0
    cursor_poll: float = 0.5
    tail: float = 3.0
    settle_timeout: float = 60.0
    drain_timeout: float = 90.0
    kinds: tuple[str, ...] = KINDS
    require: tuple[str, ...] = ()
    overlap: float = 0.3  # chance that a fault starts while the previous one is under way
    replays: int = 1  # admin replays (a cursor moved back) issued during the run
    delayed: bool = True  # the delayed-message scheduler (tools/fault/delayed.py) runs too
    keep_data: bool = False
    secure: bool = False  # [security]: TLS on every link, member certificates


@dataclass
class RunReport:
    seed: int
    result: CheckResult
    injected: list[str] = field(default_factory=list)
    zeroed: dict[int, dict[int, int]] = field(default_factory=dict)  # power losses: id -> bytes
    redo_checked: int = 0  # stores whose redo after a power loss was checked
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth a look, not a failure
    history_path: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result.ok and not self.problems

    @property
    def zeroed_bytes(self) -> int:
        """Segment bytes the run's power losses zeroed, over every store."""
        return sum(sum(by_store.values()) for by_store in self.zeroed.values())

    def summary(self) -> str:
        line = self.result.summary(self.seed)
        if self.problems:
            line = line.replace(" OK ", " FAILED ", 1) + f" problems={len(self.problems)}"
        if self.zeroed:
            line += (
                f" power_losses={len(self.zeroed)} zeroed={self.zeroed_bytes}B"
                f" redo_checked={self.redo_checked}"
            )
        return f"{line} time={self.seconds:.0f}s"


class Workload:
    """Producers, the cursor poller and the lock clients (see the module docstring)."""

    def __init__(self, opts: RunOptions, harness: FaultCluster, history: History) -> None:
        self.opts = opts
        self.harness = harness
        self.history = history
        self.run_id = f"r{opts.seed}-{random.Random().randrange(1 << 30):x}"
        self.stopping = asyncio.Event()
        self.lock_stopping = asyncio.Event()
        self.rng = random.Random(opts.seed)

    async def produce(self, client: Client, key: str) -> None:
        seq = 0
        while not self.stopping.is_set():
            payload = f"{key}:{seq}"
            base = {"producer": key, "key": key, "seq": seq, "payload": payload}
            dedup = f"{self.run_id}-{key}-{seq}"
            self.history.add("enqueue", phase="invoke", dedup=dedup, **base)
            try:
                ack = await client.enqueue(TOPIC, payload.encode(), key=key, dedup_id=dedup)
            except ClientError as exc:  # a bad request is certainly not stored
                self.history.add("enqueue", phase="fail", error=repr(exc), **base)
                raise
            except PhxqError as exc:  # maybe stored: retry with the same seq and dedup id
                self.history.add("enqueue", phase="info", error=type(exc).__name__, **base)
                await asyncio.sleep(0.05)
                continue
            self.history.add("enqueue", phase="ok", queue=ack.queue, offset=ack.offset, **base)
            seq += 1
            await asyncio.sleep(self.opts.pace)

    async def poll_cursors(self, client: Client) -> None:
        while not self.lock_stopping.is_set():
            self.harness.sample_links()
            for q in range(self.harness.opts.queues):
                sent = time.monotonic()
                try:
                    cursor = await client.cursor(GROUP, TOPIC, queue=q)
                except PhxqError:
                    continue  # no answer is no observation
                self.history.add(
                    "cursor", group=GROUP, topic=TOPIC, queue=q, cursor=cursor, t_invoke=sent
                )
            await asyncio.sleep(self.opts.cursor_poll)

    async def replay(self, client: Client, at: float) -> None:
        """At ``at`` (monotonic), move one queue's cursor back over the last ~100 acked
        messages with an admin seek (recorded: the checker then allows the cursor to go back
        and those messages to be delivered again). Never *forward*: a consumer that lags more
        than 100 messages behind (killed, or the cluster down) would skip the ones between its
        cursor and the seek, by the admin's order: the target is at most the committed
        cursor + 1, read first (the cursor only grows meanwhile, except by replays)."""
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        queue = self.rng.randrange(self.harness.opts.queues)
        acked = sorted(
            op["offset"]
            for op in self.history.of("enqueue")
            if op["phase"] == "ok" and op["queue"] == queue
        )
        if not acked:
            return
        try:
            committed = await client.cursor(GROUP, TOPIC, queue=queue)
        except PhxqError as exc:
            log.info("replay on queue %d skipped: cursor unknown (%s)", queue, exc)
            return
        offset = acked[max(0, len(acked) - 100)]
        offset = min(offset, acked[0] if committed is None else committed + 1)
        sent = time.monotonic()
        record = {"group": GROUP, "topic": TOPIC, "queue": queue, "offset": offset}
        try:
            cursor = await client.seek(GROUP, TOPIC, queue=queue, offset=offset)
        except PhxqError as exc:  # maybe applied: recorded as issued all the same
            self.history.add("replay", t_invoke=sent, error=repr(exc)[:200], **record)
            return
        self.history.add("replay", t_invoke=sent, cursor=cursor, **record)

    async def contend(self, owner: str) -> None:
        async with LockClient(
            self.harness.lock_addresses,
            request_timeout=1.0,
            retry_timeout=3.0,
            **self.harness.credentials,
        ) as locks:
            while not self.lock_stopping.is_set():
                try:
                    async with locks.hold(LOCK_NAME, owner, self.opts.lock_ttl) as lease:
                        await self._tenure(locks, owner, lease)
                except LockHeld:
                    pass
                except PhxqError as exc:  # no answer: try again (recorded, for the reader)
                    self.history.add("lock_try", owner=owner, error=repr(exc)[:300])
                await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    async def _tenure(self, locks: LockClient, owner: str, lease: Any) -> None:
        start = time.monotonic()
        until = start + self.rng.uniform(0.3, 1.5)
        reason = "done"
        try:
            while time.monotonic() < until and not self.lock_stopping.is_set():
                if lease.lost.is_set() or time.monotonic() >= lease.valid_until:
                    reason = "lost"
                    break
                if not await self._fenced_action(locks, owner, lease):
                    reason = "fenced"
                    break
                await asyncio.sleep(0.05)
        finally:
            end = min(time.monotonic(), lease.valid_until)
            self.history.add(
                "lease",
                name=LOCK_NAME,
                owner=owner,
                token=lease.token,
                start=start,
                end=end,
                reason=reason,
            )

    async def _fenced_action(self, locks: LockClient, owner: str, lease: Any) -> bool:
        base = {"owner": owner, "token": lease.token}
        try:
            value, version = await locks.kv_get(COUNTER)
            if value is not None and value["token"] > lease.token:
                self.history.add("fenced", phase="reject", seen_token=value["token"], **base)
                return False
            if lease.lost.is_set() or time.monotonic() >= lease.valid_until:
                return False
            n = 0 if value is None else value["n"]
            new = {"n": n + 1, "token": lease.token, "owner": owner}
            written = await locks.kv_put(COUNTER, new, expect_version=version)
        except VersionMismatch:
            self.history.add("fenced", phase="fail", **base)
            return True
        except PhxqError as exc:
            self.history.add("fenced", phase="info", error=type(exc).__name__, **base)
            return True
        self.history.add("fenced", phase="ok", version=written, **base)
        return True


async def _settle(harness: FaultCluster, timeout: float) -> None:
    assert harness.cluster is not None
    await harness.cluster.wait_ready_async(timeout=timeout)


async def _drain(client: Client, harness: FaultCluster, timeout: float) -> list[str]:
    """Wait until every queue's cursor is at its last stored message. Problems, if any."""
    deadline = time.monotonic() + timeout
    pending: dict[int, Any] = {}
    while time.monotonic() < deadline:
        pending = {}
        for q in range(harness.opts.queues):
            try:
                last = await _last_offset(client, q)
                cursor = await client.cursor(GROUP, TOPIC, queue=q)
            except PhxqError as exc:
                pending[q] = repr(exc)
                continue
            if last is not None and (cursor is None or cursor < last):
                pending[q] = f"cursor {cursor} < end {last}"
        if not pending:
            return []
        await asyncio.sleep(0.25)
    return [f"drain: not consumed to the end after {timeout}s: {pending}"]


async def _last_offset(client: Client, queue: int) -> int | None:
    rows = await _read_queue(client, queue)
    return rows[-1][0] if rows else None


async def _read_queue(client: Client, queue: int) -> list[tuple[int, str]]:
    rows: list[tuple[int, str]] = []
    after = None
    while True:
        page = await client.dequeue(None, TOPIC, queue=queue, after=after, limit=5000)
        if not page:
            return rows
        rows.extend((m.offset, m.payload.decode("utf-8", "replace")) for m in page)
        after = rows[-1][0]


async def _start_harness(hopts: HarnessOptions, attempts: int = 3) -> FaultCluster:
    """A harness whose daemons could bind their ports; ``start()`` is then a no-op. Ports come
    from :func:`~phxq.devcluster.free_ports`, so another process may take one before a daemon
    binds it ("address already in use"): then the cluster starts afresh on new ports."""
    for attempt in range(1, attempts + 1):
        harness = FaultCluster(hopts)
        try:
            await harness.start()
            return harness
        except (RuntimeError, TimeoutError, OSError) as exc:
            await harness.stop()
            shutil.rmtree(hopts.data, ignore_errors=True)
            if "address already in use" not in str(exc) or attempt == attempts:
                # A fresh harness: its start() in run_once fails again, and the run says why.
                return FaultCluster(hopts)
            log.warning("a port was taken before a daemon bound it; starting afresh")
    raise AssertionError("unreachable")


async def run_once(opts: RunOptions, echo: Any = print) -> RunReport:
    started = time.monotonic()
    run_dir = opts.out / f"seed-{opts.seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    schedule = make_schedule(
        opts.seed, opts.duration, kinds=opts.kinds, require=opts.require, overlap=opts.overlap
    )
    schedule_text = format_schedule(schedule)
    (run_dir / "schedule.txt").write_text(schedule_text + "\n")
    echo(f"seed={opts.seed} schedule ({len(schedule)} faults):\n{schedule_text}")
    wants_disk = any(f.kind == "disk_full" for f in schedule)
    hopts = HarnessOptions(
        data=run_dir / "cluster",
        seed=opts.seed,
        disk_full_store=(opts.seed % 3) + 1 if wants_disk else None,
        secure=opts.secure,
    )
    history = History(
        meta={
            "seed": opts.seed,
            "options": {**asdict(opts), "out": str(opts.out)},
            "groups": [GROUP],
        }
    )
    report = RunReport(seed=opts.seed, result=CheckResult())
    harness = await _start_harness(hopts)
    try:
        await harness.start()
        await _run_workload(opts, harness, history, schedule, report)
    except Exception as exc:  # a failed run is reported (below), not raised
        # A daemon that never became ready or died, or the workload failing: the run fails
        # with the reason; the next seeds still run.
        log.exception("seed %d: the run failed", opts.seed)
        report.problems.append(f"run failed: {type(exc).__name__}: {str(exc)[:2000]}")
    finally:
        await harness.stop()
    history.extend(op for op in load_deliveries(harness.deliveries_dir) if op["topic"] == TOPIC)
    report.result = check(history.ops, groups=[GROUP])
    history.meta["figures"] = report.result.figures()
    history.meta["violations"] = report.result.violations
    history.meta["problems"] = report.problems
    history.meta["notes"] = report.notes
    report.history_path = run_dir / "history.json"
    history.write(report.history_path)
    if report.ok and not opts.keep_data:
        shutil.rmtree(run_dir / "cluster", ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


async def _run_workload(
    opts: RunOptions,
    harness: FaultCluster,
    history: History,
    schedule: list[Any],
    report: RunReport,
) -> None:
    work = Workload(opts, harness, history)
    async with (
        harness.pool() as pool,
        Client(
            harness.client_addresses, request_timeout=1.0, retry_timeout=5.0, **harness.credentials
        ) as client,
        Client(
            harness.client_addresses, request_timeout=1.0, retry_timeout=5.0, **harness.credentials
        ) as reader,
        asyncio.TaskGroup() as tg,
    ):
        producers = [tg.create_task(work.produce(client, f"k{i}")) for i in range(opts.keys)]
        if opts.delayed:
            scheduler = schedule_delayed(
                client, history, work.stopping, topic=TOPIC, run_id=work.run_id, seed=opts.seed
            )
            producers.append(tg.create_task(scheduler))
        others = [tg.create_task(work.poll_cursors(reader))]
        t0 = time.monotonic()
        for _ in range(opts.replays):
            at = t0 + opts.duration * work.rng.uniform(0.2, 0.8)
            others.append(tg.create_task(work.replay(reader, at)))
        others += [tg.create_task(work.contend(f"L{i}")) for i in range(opts.lock_clients)]
        nemesis = Nemesis(harness, history, pool, opts.seed)
        try:
            await nemesis.run(schedule, t0)
        finally:
            await nemesis.heal_all()
        report.injected = nemesis.injected
        report.zeroed = nemesis.zeroed
        report.problems += nemesis.unrestored
        report.redo_checked = nemesis.redo_checked
        for fault_id, by_store in nemesis.zeroed.items():
            if not sum(by_store.values()):  # e.g. a store killed again just after its restart
                report.notes.append(f"power loss #{fault_id} zeroed nothing: only a SIGKILL")
        unused = sorted(set(harness.proxies) - harness.links_seen)
        if unused:
            report.problems.append(f"proxies that never carried a connection: {unused}")
        try:
            await _settle(harness, opts.settle_timeout)
        except TimeoutError as exc:
            report.problems.append(f"settle: {str(exc)[:2000]}")
        await asyncio.sleep(opts.tail)
        work.stopping.set()
        _, pending = await asyncio.wait(producers, timeout=30)
        for task in pending:  # still retrying: its last message stays "maybe stored"
            task.cancel()
        work.lock_stopping.set()
        _, stuck = await asyncio.wait(others, timeout=15)
        for task in stuck:  # a client call that never returns is a bug: show where it waits
            report.problems.append(f"workload task stuck after 15 s: {_where(task)}")
        for task in others:
            task.cancel()
        if opts.delayed:  # every scheduled message released before the drain
            report.problems += await wait_released(
                reader, harness.client_addresses, opts.drain_timeout
            )
        report.problems += await _drain(reader, harness, opts.drain_timeout)
        for q in range(harness.opts.queues):
            for offset, payload in await _read_queue(reader, q):
                history.add("read", topic=TOPIC, queue=q, offset=offset, payload=payload)
        status = await _converge(harness, pool, report, opts.settle_timeout)
        history.add("final", stores={str(k): v.get("groups") for k, v in status.items()})
        report.problems += [f"daemon died: {crash[:2000]}" for crash in harness.crashes]
        try:
            harness.check_exits()
        except RuntimeError as exc:
            report.problems.append(f"daemon died: {str(exc)[:2000]}")


def _where(task: asyncio.Task[Any]) -> str:
    frames = task.get_stack(limit=30)
    return " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))


async def _converge(
    harness: FaultCluster, pool: RpcPool, report: RunReport, timeout: float
) -> dict[int, dict[str, Any]]:
    """Wait until every store reports the same (chosen_up_to, checksum) for every group. A
    group whose replicas hold different checksums at the same instance, or that reports
    divergence, is a problem; one that is still catching up or repairing when ``timeout``
    runs out is only noted (the checker's properties hold either way)."""
    deadline = time.monotonic() + timeout
    status: dict[int, dict[str, Any]] = {}
    while True:
        status = await harness.store_status(pool)
        heads: dict[int, set[tuple[int, int]]] = {}
        for st in status.values():
            for g in st.get("groups", []):
                heads.setdefault(g["group"], set()).add((g["chosen_up_to"], g["checksum"]))
        if len(status) == 3 and all(len(h) == 1 for h in heads.values()):
            break
        if time.monotonic() > deadline:
            report.notes.append(f"replicas not identical after {timeout}s: {heads}")
            break
        await asyncio.sleep(0.2)
    for node, st in status.items():
        for g in st.get("groups", []):
            if g.get("diverged"):
                report.problems.append(f"store {node} group {g['group']} diverged: {g}")
    for group, h in heads.items():
        at: dict[int, set[int]] = {}
        for chosen, checksum in h:
            at.setdefault(chosen, set()).add(checksum)
        for chosen, sums in at.items():
            if len(sums) > 1:
                report.problems.append(f"group {group}: replicas differ at instance {chosen}")
    return status


# --------------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/torture",
        description="Seeded fault schedules against real phxq daemons, checked end to end.",
    )
    p.add_argument("--runs", type=int, default=1, help="schedules to run (seeds S, S+1, ...)")
    p.add_argument("--seed", type=int, default=1, help="seed of the first run")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of faults per run")
    p.add_argument(
        "--out", type=Path, default=None, help="where histories go (default: a temp dir)"
    )
    p.add_argument("--overlap", type=float, default=0.3, help="chance that faults overlap")
    p.add_argument(
        "--require",
        default="",
        metavar="KIND,...",
        help="fault kinds every run injects first (then random ones); e.g. power_loss_all",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the daemons' data dirs")
    p.add_argument(
        "--secure", action="store_true", help="TLS on every link and member certificates"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.require = tuple(k for k in args.require.split(",") if k)
    unknown = sorted(set(args.require) - set(KINDS))
    if unknown:
        p.error(f"--require: unknown fault kinds {unknown} (known: {', '.join(KINDS)})")
    return args


async def _main(args: argparse.Namespace) -> int:
    out = args.out or Path(tempfile.mkdtemp(prefix="phxq-torture-"))
    totals: dict[str, float] = {"acked": 0, "lost": 0, "dups": 0, "faults": 0, "delivered": 0}
    longest = 0.0
    zeroed = power_losses = 0
    failed: list[int] = []
    for seed in range(args.seed, args.seed + args.runs):
        opts = RunOptions(
            seed=seed,
            duration=args.duration,
            out=out,
            overlap=args.overlap,
            require=args.require,
            keep_data=args.keep_data,
            secure=args.secure,
        )
        report = await run_once(opts, echo=print if args.verbose else (lambda *a: None))
        print(report.summary(), flush=True)
        for note in report.notes:
            print(f"  note: {note[:500]}")
        f = report.result.figures()
        for k in totals:
            totals[k] += f[k]
        longest = max(longest, f["max_failover_pause"])
        zeroed += report.zeroed_bytes
        power_losses += len(report.zeroed)
        if not report.ok:
            failed.append(seed)
            for line in report.result.violations + report.problems:
                print(f"  {line}")
            print(f"  history: {report.history_path}")
            print(
                f"  replay: scripts/torture --runs 1 --seed {seed} --duration {args.duration:g}"
                f" --overlap {args.overlap:g}"
                + (f" --require {','.join(args.require)}" if args.require else "")
                + (" --secure" if args.secure else "")
                + " --keep-data -v"
            )
    print(
        f"torture: {'OK' if not failed else 'FAILED'} runs={args.runs} "
        f"faults={totals['faults']:.0f} acked={totals['acked']:.0f} lost={totals['lost']:.0f} "
        f"dups={totals['dups']:.0f} delivered={totals['delivered']:.0f} "
        f"max_failover_pause={longest:.2f}s power_losses={power_losses} "
        f"zeroed={zeroed}B failed_seeds={failed} out={out}"
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("tools.fault.proxy").setLevel(logging.WARNING)  # a refused dial per retry
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_main(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
