"""One node's replica of one Paxos group: it executes the sans-I/O core's effects, nothing else.

A :class:`GroupReplica` owns a :class:`~phxq.paxos.PaxosNode`, the group's log (a
:class:`~phxq.replication.storage.GroupStorage`, the PLog in the daemons) and the group's
:class:`~phxq.replication.machine.StateMachine`. Like etcd's raft loop (persist, send, apply),
for each list of effects the core returns it:

- ``Persist``: appends the records; only when they are durable is the core told
  (``on_persisted``), so no promise or accept reply ever leaves before its record is on disk;
- ``Send``: hands the encoded message to ``send(to, payload, lazy)`` (loss is tolerated);
- ``Learned``: **applies, then writes** -- :func:`~phxq.replication.machine.apply_instance` runs
  the state machine on the chosen instance, then the chosen record is appended together with
  the index entries that apply produced, and this node's waiting proposals get their results
  (:class:`~phxq.replication.proposals.Proposals`). The client is answered once the instance is
  chosen (durably accepted by a majority); the chosen record itself need not be synced first (a
  chosen mark lost in a crash is learned again from peers);
- ``ProposalFailed``: fails the waiters (``NotMaster``, or ``Unavailable``: outcome unknown);
- ``ServeCatchup``: reads chosen values off the event loop and answers (our snapshot when the
  peer is behind our log); ``RoleChanged``/``Divergence``: logged (divergence loudly).

Recovery (:meth:`GroupReplica.open`) restores the group's snapshot (or starts empty), opens
the log, and replays every retained chosen record through the same ``apply_instance``, handing
each instance's index entries back to the log: the storage never calls into the runtime. The
on-disk format is unchanged by this (index entries are not stored), so data directories of
earlier versions recover as before.

Snapshots (compaction, a peer's snapshot ahead of our log) are in
:mod:`phxq.replication.snapshots`; rebuilding a replica that forgot what it voted for is in
:mod:`phxq.replication.rejoin` (``hold``/``resume`` here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic

from phxq import metrics, trace
from phxq.errors import NotMaster, PhxqError, StorageError, Unavailable
from phxq.paxos import (
    AcceptRecord,
    Ballot,
    CatchupReply,
    Chosen,
    ChosenEntry,
    Divergence,
    Effect,
    GroupConfig,
    Learned,
    Message,
    PaxosNode,
    Persist,
    PromiseRecord,
    ProposalFailed,
    RecoveredState,
    RoleChanged,
    Send,
    ServeCatchup,
    encode_message,
)
from phxq.replication.durable import Durability
from phxq.replication.machine import M, Machines, apply_instance
from phxq.replication.proposals import Proposals
from phxq.replication.snapshots import CATCHUP_MAX_BYTES, SendSnapshot, Snapshots
from phxq.replication.storage import GroupStorage
from phxq.tasks import TaskScope

__all__ = ["CATCHUP_MAX_BYTES", "GroupReplica", "SendPaxos"]

log = logging.getLogger("phxq.replica")

SendPaxos = Callable[[int, bytes, bool], None]  # (to, encoded message, lazy)


def _ignore(replica: Any) -> None:
    pass


def _recovered_state(glog: GroupStorage) -> RecoveredState:
    return RecoveredState(
        promised=Ballot(*glog.promised),
        max_round=max(glog.max_round, glog.promised[0]),
        accepted={i: (Ballot(*b), v) for i, (b, v) in glog.accepted_values().items()},
        chosen_up_to=glog.chosen_up_to,
        checksum=glog.checksum,
    )


def _replay(state: Any, glog: GroupStorage) -> None:
    """Blocking: every retained chosen record through the same apply as live operation."""
    for instance, value in glog.iter_chosen_blocking():
        glog.restore_index(instance, apply_instance(state, instance, value).index)


class GroupReplica(Generic[M]):
    """One group's replica on this node. Create with :meth:`open`."""

    def __init__(
        self,
        config: GroupConfig,
        glog: GroupStorage,
        state: M,
        send: SendPaxos,
        snapshots: Snapshots[M],
        *,
        propose_timeout: float = 1.5,
        address_of: Callable[[int], str | None] = lambda node: None,
        clock: Callable[[], float] = time.monotonic,
        after_input: Callable[[GroupReplica[M]], None] = _ignore,
    ) -> None:
        self.config = config
        self.group = config.group
        self.glog = glog
        self.state = state
        self.snapshots = snapshots
        self.proposals = Proposals(config.group, propose_timeout)
        self.failed: StorageError | None = None
        # Why ``failed`` is set while the replica rebuilds from its peers ("probing", "joining",
        # "repairing", "diverged"; see ``phxq.replication.rejoin``), None otherwise.
        self.repair: str | None = None
        self.repair_reason = ""  # why it cannot vote yet (status, logs)
        self.diverged: Divergence | None = None
        # Called after every input the core processed (its next deadline may have moved).
        self.after_input = after_input
        self._send = send
        self._address_of = address_of
        self._clock = clock
        self._tasks = TaskScope(f"group {config.group}", log)
        self._applied_event = asyncio.Event()  # replaced (after being set) on every apply
        self._applied_waited = False  # someone waits on _applied_event
        self._lag_reported: int | None = None
        self._lag_gauge: Any = None
        self._snapshot_lock = asyncio.Lock()  # one compaction or snapshot install at a time
        self.durable = Durability(self._persisted)  # persists not yet reported to the core
        self.paxos = PaxosNode(config, _recovered_state(glog), clock())

    @classmethod
    async def open(
        cls,
        config: GroupConfig,
        directory: Path,
        open_log: Callable[[], Awaitable[GroupStorage]],
        machines: Machines[M],
        send: SendPaxos,
        send_snapshot: SendSnapshot,
        *,
        propose_timeout: float = 1.5,
        address_of: Callable[[int], str | None] = lambda node: None,
        clock: Callable[[], float] = time.monotonic,
        after_input: Callable[[GroupReplica[M]], None] = _ignore,
    ) -> GroupReplica[M]:
        """Recover the replica: the snapshot's state (or an empty one), the log
        (``await open_log()``), then every retained chosen instance replayed through the
        state machine. A replica whose snapshot or log is unusable is opened ``failed`` or
        held for repair (it neither serves nor votes)."""
        snapshots = Snapshots(config.group, directory, machines, send_snapshot)
        state, snap, problem = await snapshots.load()
        glog = await open_log()
        if snap is not None and snap.instance > glog.chosen_up_to:
            # A snapshot install from a peer was cut off before its log record: finish it.
            await glog.reset_to(snap.instance, snap.checksum)
        base = 0 if snap is None else snap.instance
        if problem is None and glog.first_instance - 1 > base:
            problem = StorageError(
                f"group {config.group}: the log starts at {glog.first_instance} but the "
                f"snapshot covers only up to {base}: needs a snapshot from a peer"
            )
        if problem is None:
            try:
                await asyncio.to_thread(_replay, state, glog)
            except StorageError as exc:
                problem = exc
        replica = cls(
            config,
            glog,
            state,
            send,
            snapshots,
            propose_timeout=propose_timeout,
            address_of=address_of,
            clock=clock,
            after_input=after_input,
        )
        if problem is not None:
            replica.failed = problem
            log.error("%s: not serving or voting", problem.message)
        elif glog.needs_repair:
            # A corrupt region may have held a promise: voting now could break it. The replica
            # neither serves nor votes in this group until it is rebuilt from its peers.
            replica.hold(
                "repairing",
                f"group {config.group}: damaged log ranges {glog.damaged}; repairing from peers",
            )
            log.error("group %d: damaged log %s: not serving or voting", config.group, glog.damaged)
        return replica

    # ------------------------------------------------------- rejoin (phxq.replication.rejoin)

    def hold(self, kind: str, message: str) -> None:
        """Stop serving and voting until :meth:`resume` (``kind``: why, see ``repair``)."""
        self.repair = kind
        self.failed = StorageError(message, {"repair": kind})
        metrics.REPLICA_NOT_VOTING.labels(str(self.group)).set(1)

    def resume(self) -> None:
        """The log holds everything this replica may have forgotten (see ``rejoin``): rebuild
        the Paxos core from it and vote again."""
        recovered = _recovered_state(self.glog)
        self.paxos = PaxosNode(self.config, recovered, self._clock())
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

    # ---------------------------------------------------------------------------- inputs

    def on_message(self, msg: Message) -> None:
        if self.failed is None:
            self.execute(self.paxos.on_message(msg, self._clock()))

    def on_tick(self, now: float) -> None:
        if self.failed is None:
            self.execute(self.paxos.on_tick(now))

    def next_deadline(self) -> float | None:
        # A replica that does not run its core has no deadline (else the tick loop would spin
        # on an election deadline in the past that on_tick never consumes).
        return self.paxos.next_deadline() if self.failed is None else None

    def propose(self, items: Sequence[bytes]) -> asyncio.Future[list[Any]]:
        """Propose ``items`` now (raises ``NotMaster`` or ``StorageError`` at once). The future
        gets their apply results, in order, once chosen and applied here (see
        :class:`~phxq.replication.proposals.Proposals`). Proposed together, the items share
        Paxos instances (while they fit ``max_batch_*``) instead of each taking a slot of the
        window."""
        if self.failed is not None:
            raise self.failed
        if not self.paxos.is_master:
            raise NotMaster(hint=self.master_address())
        pids, future = self.proposals.open(len(items))
        if pids:
            self.execute(
                self.paxos.propose_many(list(zip(pids, items, strict=True)), self._clock())
            )
        return future

    async def propose_one(self, item: bytes) -> Any:
        """:meth:`propose` of a batch of one: its apply result."""
        return (await self.propose((item,)))[0]

    async def wait_applied(self, timeout: float) -> None:
        """Return when this replica applies its next chosen instance, or after ``timeout``."""
        try:
            self._applied_waited = True
            await asyncio.wait_for(self._applied_event.wait(), timeout)
        except TimeoutError:
            pass  # the caller re-checks what it waits for either way

    def master_address(self) -> str | None:
        master = self.paxos.master
        return None if master is None else self._address_of(master)

    @property
    def serving(self) -> bool:
        """True when this replica is master and has applied everything chosen before it became
        master, so its applied state (cursors, dedup, queue index) is current."""
        return self.failed is None and self.paxos.is_master and self.paxos.ready

    # --------------------------------------------------------------------------- effects

    def execute(self, effects: list[Effect]) -> None:
        """Carry out the core's ``effects`` in order, then tell the host (``after_input``)."""
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
                self._send(effect.to, payload, isinstance(sent, Chosen))
            elif isinstance(effect, Persist):
                self._persist(effect)
            elif isinstance(effect, Learned):
                self._learn(effect)
            elif isinstance(effect, ProposalFailed):
                self._fail(effect)
            elif isinstance(effect, ServeCatchup):
                self._tasks.spawn(self._serve_catchup(effect), name="catch-up")
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
        self.after_input(self)

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
        if not futures:
            self.execute(self.paxos.on_persisted(effect.token, self._clock()))
            return
        # One group's records are made durable in submission order: the last one's completion
        # means all are on disk (its failure reports theirs: the others' are only retrieved).
        for earlier in futures[:-1]:
            earlier.add_done_callback(_retrieve)
        self.durable.add(futures[-1], effect.token)  # see phxq.replication.durable

    def _persisted(self, token: int, future: asyncio.Future[None]) -> None:
        exc = future.exception()
        if exc is not None:
            self._storage_failed(exc)
            return
        if trace.ON:
            trace.mark("persisted")
        if self.failed is None:
            self.execute(self.paxos.on_persisted(token, self._clock()))

    def _storage_failed(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = exc if isinstance(exc, StorageError) else StorageError(str(exc))
            metrics.STORAGE_FAILURES.labels(str(self.group)).inc()
            log.error("group %d: storage failed, replica stops serving: %s", self.group, exc)
        self.proposals.fail_all(self.failed)

    def apply_and_write(
        self, instance: int, ballot: tuple[int, int] | None, checksum: int, value: bytes
    ) -> tuple[Sequence[Any], asyncio.Future[None]]:
        """Apply chosen ``instance`` to the state machine, then append its chosen record with
        the index entries the apply produced. (apply results, the record's durable future)."""
        applied = apply_instance(self.state, instance, value)
        written = self.glog.append_chosen(
            instance, ballot, checksum, value, index=applied.index, urgent=False
        )
        return applied.results, written

    def _learn(self, effect: Learned) -> None:
        if trace.ON:
            trace.mark("learn")
        ballot = None if effect.ballot is None else (effect.ballot.round, effect.ballot.node)
        try:
            results, written = self.apply_and_write(
                effect.instance, ballot, effect.checksum, effect.value
            )
        except StorageError as exc:  # a gap in what the state machine was given
            self._storage_failed(exc)
            return
        written.add_done_callback(self._chosen_written)
        if trace.ON:
            trace.mark("applied")
        self.proposals.resolve(effect.proposals, results)
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
        error: PhxqError
        if effect.reason == "not_master":
            error = NotMaster(hint=hint)
        else:
            error = Unavailable(
                f"group {self.group}: master changed while proposing (outcome unknown; "
                "retry with the same dedup id)",
                {"hint": hint},
            )
        self.proposals.fail(effect.pids, error)

    async def _serve_catchup(self, effect: ServeCatchup) -> None:
        try:
            records = await self.glog.read_chosen(
                effect.from_instance, effect.max_count, CATCHUP_MAX_BYTES
            )
        except PhxqError as exc:
            if isinstance(exc, StorageError) and exc.data.get("reason") == "truncated":
                await self.snapshots.offer(effect.to, self._clock())
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
        self._send(effect.to, encode_message(reply), False)

    # ------------------------------------------------------------ snapshots and truncation

    async def install_snapshot(self, data: bytes, *, rebuilding: bool = False) -> bool:
        """Install a peer's snapshot when our log is behind it: persist it, restart the log
        after it, switch state (and, unless ``rebuilding``, the learner) in one step. False
        when ``data`` is malformed or brings no progress, on a master, or on a failed replica
        that is not ``rebuilding`` (a rebuild's Paxos core is rebuilt from the log later)."""
        if self.failed is not None and not rebuilding:
            return False
        async with self._snapshot_lock:
            decoded = self.snapshots.decode(data)
            if decoded is None:
                return False
            snap, state = decoded
            if snap.instance <= self.glog.chosen_up_to:
                return False  # no progress: the caller backs off and asks again
            if not rebuilding and self.paxos.is_master:
                return False
            await self.snapshots.persist(snap)
            if snap.instance <= self.glog.chosen_up_to:  # learned meanwhile
                return False
            if not await self.glog.reset_to(snap.instance, snap.checksum):
                return False
            self.state = state  # no await between the log reset and here
            if not rebuilding:
                self.execute(
                    self.paxos.install_snapshot(snap.instance, snap.checksum, self._clock())
                )
            log.warning("group %d: installed a peer's snapshot at %d", self.group, snap.instance)
            await self.glog.truncate_below(snap.instance + 1)  # drop the old segments
            return True

    async def compact(self, floor: int) -> int:
        """Truncate the log below ``floor`` as far as whole segments allow, after persisting the
        state as of the new first instance - 1. Returns the first retained instance."""
        if self.failed is not None:
            return self.glog.first_instance
        async with self._snapshot_lock:
            point = self.glog.truncation_point(floor)
            if point <= self.glog.first_instance:
                return self.glog.first_instance
            await self.snapshots.build(self.glog, point)
            first = await self.glog.truncate_below(point)
            self.state.forget_below(first)
            return first

    async def close(self) -> None:
        await self._tasks.aclose()
        self.proposals.fail_all(Unavailable(f"group {self.group}: replica shutting down"))
        await self.glog.close()


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed future's exception as seen (it is reported through another one)."""
    if not future.cancelled():
        future.exception()
