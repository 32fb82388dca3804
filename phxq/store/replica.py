"""One node's replica of one Paxos group: the sans-I/O core wired to the PLog and the network.

A :class:`GroupReplica` owns a :class:`~phxq.paxos.PaxosNode`, the group's
:class:`~phxq.plog.GroupLog` and the applied state machine (e.g. ``StoreState``). It executes
the core's effects:

- ``Send`` goes out through ``send(to, encoded_message)`` (fire-and-forget; Paxos tolerates loss);
- ``Persist`` goes to the PLog; only when the records are durable (fdatasync) is the core told
  (``on_persisted``), so no promise or accept reply ever leaves before its record is on disk;
- ``Learned`` is applied to the state machine *through the PLog's indexer* (one path for
  recovery and live operation: the indexer applies the instance and returns its index entries),
  and the local proposers waiting on it get their per-item apply results;
- ``ProposalFailed`` fails the waiters with ``NotMaster`` or ``Unavailable`` (outcome unknown:
  retry with the same dedup id);
- ``ServeCatchup`` reads chosen values from the PLog off the event loop and answers.

This module knows nothing of queues: the store and the lock daemon both use it with their own
state machine (an :class:`Applier`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from phxq import metrics, trace
from phxq.errors import NotMaster, PhxqError, ProtocolError, StorageError, Unavailable
from phxq.net.server import LogLimiter
from phxq.paxos import (
    AcceptRecord,
    Ballot,
    CatchupReply,
    Chosen,
    ChosenEntry,
    Divergence,
    GroupConfig,
    Learned,
    PaxosNode,
    Persist,
    PromiseRecord,
    ProposalFailed,
    RecoveredState,
    RoleChanged,
    Send,
    ServeCatchup,
    decode_batch,
    encode_message,
)
from phxq.plog import GroupLog, LogWriter
from phxq.store.snapshot import (
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    read_snapshot,
    write_snapshot,
)

log = logging.getLogger("phxq.replica")

CATCHUP_MAX_BYTES = 4 << 20
SNAPSHOT_RESEND = 2.0  # seconds before the same peer gets our snapshot again


class Applier(Protocol):
    """The replicated state machine a group applies its chosen instances to."""

    def apply(self, instance: int, items: Sequence[bytes]) -> list[Any]:
        """Apply one chosen instance (in order, once); one result per item."""
        ...

    def index_entries(self, instance: int, items: Sequence[bytes]) -> list[tuple[Any, int, float]]:
        """The PLog index entries of the instance just applied."""
        ...


class SnapshotSupport(Protocol):
    """What a replica needs to snapshot its state machine, truncate its log and move state
    between replicas. The state machine then also has ``applied_up_to``, ``snapshot()`` and
    ``forget_below(instance)`` (see ``StoreState``)."""

    def fresh(self) -> Any:
        """An empty state machine (as of instance 0)."""
        ...

    def restore(self, data: bytes) -> Any:
        """The state machine from its ``snapshot()`` bytes (``ProtocolError`` if malformed)."""
        ...

    def send(self, to: int, group: int, data: bytes) -> None:
        """Send an encoded snapshot to node ``to`` (fire-and-forget)."""
        ...


def _apply_records(state: Any, records: Sequence[Any]) -> None:
    for r in records:
        state.apply(r.instance, decode_batch(r.value))


def _ignore(replica: GroupReplica) -> None:
    pass


class GroupReplica:
    """One group's replica on this node. Create with :meth:`open`."""

    def __init__(
        self,
        config: GroupConfig,
        glog: GroupLog,
        state: Applier,
        send: Callable[..., None],
        *,
        propose_timeout: float,
        address_of: Callable[[int], str | None],
        snapshots: SnapshotSupport | None = None,
    ) -> None:
        self.config = config
        self.group = config.group
        self.glog = glog
        self.state = state
        self._send = send
        self._address_of = address_of
        self._propose_timeout = propose_timeout
        self._waiters: dict[int, asyncio.Future[Any] | _BatchSlot] = {}
        self._next_pid = 1
        self._last_results: tuple[int, list[Any]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.failed: StorageError | None = None
        # Why ``failed`` is set while the replica rebuilds from its peers ("probing", "joining",
        # "repairing"; see ``phxq.store.rejoin``), None otherwise.
        self.repair: str | None = None
        self.repair_reason = ""  # why it cannot vote yet (status, logs)
        self.diverged: Divergence | None = None
        self._applied_event = asyncio.Event()  # replaced (after being set) on every apply
        self._applied_waited = False  # someone waits on _applied_event
        self._lag_reported: int | None = None
        self._lag_gauge: Any = None
        # Called after every input the core processed (its next deadline may have moved).
        self.after_input: Callable[[GroupReplica], None] = _ignore
        self.snapshots = snapshots
        self._bad_snapshot_log = LogLimiter()  # malformed snapshots from the network
        self._snapshot_lock = asyncio.Lock()  # one compaction or snapshot install at a time
        self._snapshot_sent: dict[int, float] = {}  # peer -> when we last sent it our snapshot
        self.paxos: PaxosNode  # set by open()

    @classmethod
    async def open(
        cls,
        config: GroupConfig,
        directory: Any,
        writer: LogWriter,
        state: Applier,
        send: Callable[..., None],
        *,
        propose_timeout: float = 1.5,
        address_of: Callable[[int], str | None] = lambda node: None,
        segment_bytes: int = 64 << 20,
        snapshots: SnapshotSupport | None = None,
    ) -> GroupReplica:
        replica = cls.__new__(cls)
        # Recovery replays every retained chosen instance through the indexer, which applies
        # it to `state`: the state must be in place before the log is opened, restored from
        # the group's snapshot when it has one (the log below it may be gone).
        snap: Snapshot | None = None
        problem: StorageError | None = None
        if snapshots is not None:
            try:
                snap = await asyncio.to_thread(read_snapshot, Path(directory))
                if snap is not None:
                    state = snapshots.restore(snap.state)
            except (StorageError, ProtocolError) as exc:
                problem = StorageError(f"group {config.group}: unusable snapshot: {exc}")
                snap = None
        replica.state = state
        indexer = replica._indexer
        glog = await GroupLog.open(
            directory, config.group, writer, segment_bytes=segment_bytes, indexer=indexer
        )
        cls.__init__(
            replica,
            config,
            glog,
            state,
            send,
            propose_timeout=propose_timeout,
            address_of=address_of,
            snapshots=snapshots,
        )
        rec = glog.recovered
        if snap is not None and snap.instance > glog.chosen_up_to:
            # A snapshot install from a peer was cut off before its log record: finish it.
            await glog.reset_to(snap.instance, snap.checksum)
        base = 0 if snap is None else snap.instance
        if problem is None and snapshots is not None and glog.first_instance - 1 > base:
            problem = StorageError(
                f"group {config.group}: the log starts at {glog.first_instance} but the "
                f"snapshot covers only up to {base}: needs a snapshot from a peer"
            )
        recovered = RecoveredState(
            promised=Ballot(*rec.promised),
            max_round=rec.max_round,
            accepted={
                i: (Ballot(*b), v) for i, (b, v) in rec.accepted.items() if i > glog.chosen_up_to
            },
            chosen_up_to=glog.chosen_up_to,
            checksum=glog.checksum,
        )
        replica.paxos = PaxosNode(config, recovered, time.monotonic())
        if problem is not None:
            replica.failed = problem
            log.error("%s: not serving or voting", problem.message)
        elif glog.needs_repair:
            # A corrupt region may have held a promise: voting now could break it. The replica
            # neither serves nor votes in this group until it is rebuilt from its peers.
            replica.hold(
                "repairing",
                f"group {config.group}: damaged log ranges {rec.damaged}; repairing from peers",
            )
            log.error("group %d: damaged log %s: not serving or voting", config.group, rec.damaged)
        return replica

    # ------------------------------------------------------------ rejoin (phxq.store.rejoin)

    def hold(self, kind: str, message: str) -> None:
        """Stop serving and voting until :meth:`resume` (``kind``: why, see ``repair``)."""
        self.repair = kind
        self.failed = StorageError(message, {"repair": kind})
        metrics.REPLICA_NOT_VOTING.labels(str(self.group)).set(1)

    def resume(self) -> None:
        """The log holds everything this replica may have forgotten (see ``rejoin``): rebuild
        the Paxos core from it and vote again."""
        glog = self.glog
        recovered = RecoveredState(
            promised=Ballot(*glog.promised),
            max_round=max(glog.max_round, glog.promised[0]),
            accepted={i: (Ballot(*b), v) for i, (b, v) in glog.accepted_values().items()},
            chosen_up_to=glog.chosen_up_to,
            checksum=glog.checksum,
        )
        self.paxos = PaxosNode(self.config, recovered, time.monotonic())
        was = self.repair
        self.repair = None
        self.repair_reason = ""
        self.failed = None
        metrics.REPLICA_NOT_VOTING.labels(str(self.group)).set(0)
        log.log(
            logging.INFO if was == "probing" else logging.WARNING,
            "group %d: votes (after %s; promised %s, chosen_up_to %d)",
            self.group,
            was,
            recovered.promised,
            recovered.chosen_up_to,
        )
        self.after_input(self)

    async def install_snapshot_for_repair(self, data: bytes) -> bool:
        """Install a peer's snapshot while rebuilding (the Paxos core is rebuilt afterwards)."""
        if self.snapshots is None:
            return False
        return await self._install_snapshot(data, rebuilding=True)

    # ------------------------------------------------------------------ the indexer seam

    def _indexer(self, instance: int, value: bytes) -> Iterable[tuple[Any, int, float]]:
        """Called by the PLog for every chosen instance, in order, at recovery and on
        ``append_chosen``: applies it to the state machine and returns its index entries."""
        items = decode_batch(value)
        results = self.state.apply(instance, items)
        self._last_results = (instance, results)
        return self.state.index_entries(instance, items)

    # ---------------------------------------------------------------------------- inputs

    def on_message(self, msg: Any) -> None:
        if self.failed is None:
            self.execute(self.paxos.on_message(msg, time.monotonic()))

    def on_tick(self, now: float) -> None:
        if self.failed is None:
            self.execute(self.paxos.on_tick(now))

    def next_deadline(self) -> float | None:
        # A replica that does not run its core has no deadline (else the tick loop would spin
        # on an election deadline in the past that on_tick never consumes).
        return self.paxos.next_deadline() if self.failed is None else None

    async def propose(self, item: bytes) -> Any:
        """Propose one item; returns its apply result once chosen and applied here."""
        return await self.propose_nowait(item)

    def propose_nowait(self, item: bytes) -> asyncio.Future[Any]:
        """Propose one item now (raises NotMaster or StorageError at once); the future gets its
        apply result once chosen and applied here, or fails with ``Unavailable`` after
        ``propose_timeout`` (outcome unknown). Cancelling the future only stops waiting."""
        if self.failed is not None:
            raise self.failed
        if not self.paxos.is_master:
            raise NotMaster(hint=self.master_address())
        pid = self._next_pid
        self._next_pid += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters[pid] = future
        # One timer, no wait_for/shield tasks: this runs once per proposed entry.
        timer = loop.call_later(self._propose_timeout, self._expire, future)
        future.add_done_callback(functools.partial(self._proposal_done, (pid,), timer))
        self.execute(self.paxos.propose(pid, item, time.monotonic()))
        return future

    def propose_batch(self, items: Sequence[bytes]) -> asyncio.Future[list[Any]]:
        """:meth:`propose_nowait` for several items at once, with one future for all their
        results (in order; it fails as soon as one item's proposal fails). The items share
        Paxos instances (one while they fit ``max_batch_*``) instead of each taking its own
        slot of the window, and cost one future and one timer, not one per item."""
        if self.failed is not None:
            raise self.failed
        if not self.paxos.is_master:
            raise NotMaster(hint=self.master_address())
        loop = asyncio.get_running_loop()
        batch = _Batch(loop.create_future(), len(items))
        if not items:
            batch.future.set_result([])
            return batch.future
        pids = tuple(range(self._next_pid, self._next_pid + len(items)))
        self._next_pid += len(items)
        for index, pid in enumerate(pids):
            self._waiters[pid] = _BatchSlot(batch, index)
        timer = loop.call_later(self._propose_timeout, self._expire, batch.future)
        batch.future.add_done_callback(functools.partial(self._proposal_done, pids, timer))
        self.execute(self.paxos.propose_many(list(zip(pids, items, strict=True)), time.monotonic()))
        return batch.future

    def _expire(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            future.set_exception(
                Unavailable(
                    f"group {self.group}: not chosen within {self._propose_timeout}s (outcome "
                    "unknown; retry with the same dedup id)"
                )
            )

    def _proposal_done(
        self, pids: tuple[int, ...], timer: asyncio.TimerHandle, future: asyncio.Future[Any]
    ) -> None:
        timer.cancel()
        for pid in pids:
            self._waiters.pop(pid, None)
        if not future.cancelled():
            future.exception()  # retrieved here: nobody may be awaiting a failed proposal

    async def wait_applied(self, timeout: float) -> None:
        """Return when this replica applies its next chosen instance, or after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            self._applied_waited = True
            await asyncio.wait_for(self._applied_event.wait(), timeout)

    def master_address(self) -> str | None:
        master = self.paxos.master
        return None if master is None else self._address_of(master)

    @property
    def serving(self) -> bool:
        """True when this replica is master and has applied everything chosen before it became
        master, so its applied state (cursors, dedup, queue index) is current."""
        return self.failed is None and self.paxos.is_master and self.paxos.ready

    # --------------------------------------------------------------------------- effects

    def execute(self, effects: list[Any]) -> None:
        self._execute(effects)
        self.after_input(self)

    def _execute(self, effects: list[Any]) -> None:
        sent: Any = None
        payload = b""
        for effect in effects:
            if isinstance(effect, Send):
                if effect.msg is not sent:  # a broadcast is encoded once
                    sent, payload = effect.msg, encode_message(effect.msg)
                    if trace.ON:
                        trace.mark(f"out.{type(sent).__name__}")
                # Nothing waits on a Chosen promptly (followers only learn earlier): it may ride
                # with the next message to that peer instead of costing a write of its own.
                self._send(effect.to, payload, type(sent) is Chosen)
            elif isinstance(effect, Persist):
                self._persist(effect)
            elif isinstance(effect, Learned):
                self._learn(effect)
            elif isinstance(effect, ProposalFailed):
                self._fail(effect)
            elif isinstance(effect, ServeCatchup):
                self._spawn(self._serve_catchup(effect))
            elif isinstance(effect, RoleChanged):
                log.info(
                    "group %d: %s (master=%s ballot=%s)",
                    self.group,
                    "became master" if effect.is_master else "follower",
                    effect.master,
                    effect.ballot,
                )
            elif isinstance(effect, Divergence):
                self.diverged = effect
                metrics.DIVERGENCE.labels(str(self.group)).inc()
                log.critical(
                    "group %d: DIVERGENCE at instance %d: local checksum %x, peer %d has %x",
                    self.group,
                    effect.instance,
                    effect.local_checksum,
                    effect.peer,
                    effect.remote_checksum,
                )

    def _persist(self, effect: Persist) -> None:
        if trace.ON:
            trace.mark("persist")
        futures: list[asyncio.Future[None]] = []
        for record in effect.records:
            if isinstance(record, PromiseRecord):
                futures.append(self.glog.append_promise((record.ballot.round, record.ballot.node)))
            elif isinstance(record, AcceptRecord):
                b = record.ballot
                futures.append(
                    self.glog.append_accept(record.instance, (b.round, b.node), record.value)
                )
        token = effect.token
        if not futures:
            self.execute(self.paxos.on_persisted(token, time.monotonic()))
            return
        # Records of one group are made durable in submission order, so the last one's
        # completion means all of them are on disk (and its failure reports theirs: the
        # others' are only retrieved, or asyncio logs them as never retrieved).
        for earlier in futures[:-1]:
            earlier.add_done_callback(_retrieve)
        futures[-1].add_done_callback(lambda f: self._persisted(token, f))

    def _persisted(self, token: int, future: asyncio.Future[None]) -> None:
        exc = future.exception()
        if exc is not None:
            self._storage_failed(exc)
            return
        if trace.ON:
            trace.mark("persisted")
        if self.failed is None:
            self.execute(self.paxos.on_persisted(token, time.monotonic()))

    def _storage_failed(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = exc if isinstance(exc, StorageError) else StorageError(str(exc))
            metrics.STORAGE_FAILURES.labels(str(self.group)).inc()
            log.error("group %d: storage failed, replica stops serving: %s", self.group, exc)
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(self.failed)

    def _learn(self, effect: Learned) -> None:
        if trace.ON:
            trace.mark("learn")
        ballot = None if effect.ballot is None else (effect.ballot.round, effect.ballot.node)
        self._last_results = None
        # Not urgent: the client is answered once the instance is chosen (durably accepted by a
        # majority); a chosen mark lost in a crash is learned again from peers.
        written = self.glog.append_chosen(
            effect.instance, ballot, effect.checksum, effect.value, urgent=False
        )
        written.add_done_callback(self._chosen_written)
        if self._last_results is None or self._last_results[0] != effect.instance:
            raise AssertionError("the PLog did not index a chosen instance synchronously")
        results = self._last_results[1]
        if trace.ON:
            trace.mark("applied")
        for pid, result in zip(effect.proposals, results, strict=False):
            future = self._waiters.get(pid)
            if future is not None and not future.done():
                future.set_result(result)
        if self._applied_waited:  # an Event per instance only while a long poll waits
            self._applied_waited = False
            self._applied_event.set()
            self._applied_event = asyncio.Event()
        metrics.BATCH_ITEMS.observe(len(results))
        lag = self.paxos.known_chosen - effect.instance
        if lag != self._lag_reported:
            self._lag_reported = lag
            if self._lag_gauge is None:
                self._lag_gauge = metrics.CATCHUP_LAG.labels(str(self.group))
            self._lag_gauge.set(lag)

    def _chosen_written(self, future: asyncio.Future[None]) -> None:
        exc = future.exception()
        if exc is not None:
            self._storage_failed(exc)

    def _fail(self, effect: ProposalFailed) -> None:
        hint = None if effect.master_hint is None else self._address_of(effect.master_hint)
        for pid in effect.pids:
            future = self._waiters.get(pid)
            if future is None or future.done():
                continue
            if effect.reason == "not_master":
                future.set_exception(NotMaster(hint=hint))
            else:
                future.set_exception(
                    Unavailable(
                        f"group {self.group}: master changed while proposing (outcome unknown; "
                        "retry with the same dedup id)",
                        {"hint": hint},
                    )
                )

    async def _serve_catchup(self, effect: ServeCatchup) -> None:
        try:
            records = await self.glog.read_chosen(
                effect.from_instance, effect.max_count, CATCHUP_MAX_BYTES
            )
        except PhxqError as exc:
            if isinstance(exc, StorageError) and exc.data.get("reason") == "truncated":
                await self._send_snapshot(effect.to)
                return
            log.warning(
                "group %d: cannot serve catch-up from %d: %s", self.group, effect.from_instance, exc
            )
            return
        entries = tuple(ChosenEntry(r.instance, r.value, r.checksum) for r in records)
        reply = CatchupReply(
            group=self.group,
            sender=self.config.node_id,
            entries=entries,
            chosen_up_to=self.paxos.chosen_up_to,
        )
        self._send(effect.to, encode_message(reply))

    # ------------------------------------------------------------ snapshots and truncation

    async def _send_snapshot(self, to: int) -> None:
        """``to`` asked for instances our log no longer holds: send it our snapshot (the state
        at our first_instance - 1); it then catches up on the retained log from there."""
        now = time.monotonic()
        if self.snapshots is None or now - self._snapshot_sent.get(to, -1e9) < SNAPSHOT_RESEND:
            return
        self._snapshot_sent[to] = now
        try:
            snap = await asyncio.to_thread(read_snapshot, self.glog.directory)
        except StorageError as exc:
            log.error("group %d: cannot send a snapshot to %d: %s", self.group, to, exc)
            return
        if snap is None:
            return
        log.info("group %d: sending node %d our snapshot at %d", self.group, to, snap.instance)
        self.snapshots.send(to, self.group, encode_snapshot(snap))

    async def install_snapshot(self, data: bytes) -> bool:
        """Install a peer's snapshot when our log is behind it (see :meth:`_send_snapshot`):
        persist it, restart the log after it, switch state and learner in one step."""
        if self.snapshots is None or self.failed is not None:
            return False
        return await self._install_snapshot(data, rebuilding=False)

    async def _install_snapshot(self, data: bytes, *, rebuilding: bool) -> bool:
        """The common part of both installs. False when ``data`` is malformed (warned at a
        limited rate: anyone who reaches the port can send one) or brings no progress. While
        ``rebuilding`` the Paxos core is left alone (it is rebuilt from the log afterwards);
        otherwise it learns on from the snapshot, and a master never installs one."""
        assert self.snapshots is not None
        async with self._snapshot_lock:
            try:
                snap = decode_snapshot(data)
                state = self.snapshots.restore(snap.state)
            except ProtocolError as exc:
                suppressed = self._bad_snapshot_log.allow()
                if suppressed is not None:
                    log.warning(
                        "group %d: ignored a malformed snapshot: %s (%d more suppressed)",
                        self.group,
                        exc,
                        suppressed,
                    )
                return False
            if snap.instance <= self.glog.chosen_up_to:
                return False  # no progress: the caller backs off and asks again
            if not rebuilding and self.paxos.is_master:
                return False
            await asyncio.to_thread(write_snapshot, self.glog.directory, snap)
            if snap.instance <= self.glog.chosen_up_to:  # learned meanwhile
                return False
            if not await self.glog.reset_to(snap.instance, snap.checksum):
                return False
            self.state = state  # no await between the log reset and here
            if not rebuilding:
                self.execute(
                    self.paxos.install_snapshot(snap.instance, snap.checksum, time.monotonic())
                )
            log.warning("group %d: installed a peer's snapshot at %d", self.group, snap.instance)
            await self.glog.truncate_below(snap.instance + 1)  # drop the old segments
            return True

    async def compact(self, floor: int) -> int:
        """Truncate the log below ``floor`` as far as whole segments allow, after persisting the
        state as of the new first instance - 1 (the previous snapshot plus the instances that go).
        Returns the first retained instance."""
        if self.snapshots is None or self.failed is not None:
            return self.glog.first_instance
        async with self._snapshot_lock:
            glog = self.glog
            point = glog.truncation_point(floor)
            if point <= glog.first_instance:
                return glog.first_instance
            base = glog.first_instance - 1
            snap = await asyncio.to_thread(read_snapshot, glog.directory)
            if snap is None and base == 0:
                state: Any = self.snapshots.fresh()
                checksum = 0
            elif snap is not None and snap.instance >= base:
                state = self.snapshots.restore(snap.state)
                checksum = snap.checksum
            else:
                raise StorageError(f"group {self.group}: no snapshot at {base} to compact from")
            if state.applied_up_to >= point - 1:
                # A snapshot at or past the point is already durable (a crash came between
                # writing it and truncating): it covers what goes.
                first = await glog.truncate_below(point)
                self._forget_below(first)
                return first
            nxt = state.applied_up_to + 1
            while nxt < point:
                records = await glog.read_chosen(nxt, point - nxt, CATCHUP_MAX_BYTES)
                if not records:
                    raise StorageError(f"group {self.group}: cannot read {nxt} to compact")
                await asyncio.to_thread(_apply_records, state, records)
                checksum = records[-1].checksum
                nxt = records[-1].instance + 1
            new = Snapshot(point - 1, checksum, state.snapshot())
            await asyncio.to_thread(write_snapshot, glog.directory, new)
            first = await glog.truncate_below(point)
            self._forget_below(first)
            return first

    def _forget_below(self, first: int) -> None:
        forget = getattr(self.state, "forget_below", None)
        if forget is not None:
            forget(first)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(Unavailable(f"group {self.group}: replica shutting down"))
        await self.glog.close()


class _Batch:
    """The results of one :meth:`GroupReplica.propose_batch`: ``future`` gets them all."""

    __slots__ = ("future", "left", "results")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.results: list[Any] = [None] * count
        self.left = count


class _BatchSlot:
    """One item of a :class:`_Batch`, answering like the future a single proposal has (the
    replica resolves and fails proposals only through ``done``/``set_result``/``set_exception``)."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch = batch
        self.index = index

    def done(self) -> bool:
        return self.batch.future.done()

    def set_result(self, result: Any) -> None:
        batch = self.batch
        batch.results[self.index] = result
        batch.left -= 1
        if not batch.left and not batch.future.done():
            batch.future.set_result(batch.results)

    def set_exception(self, exc: BaseException) -> None:
        if not self.batch.future.done():
            self.batch.future.set_exception(exc)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed future's exception as seen (it is reported through another one)."""
    if not future.cancelled():
        future.exception()
