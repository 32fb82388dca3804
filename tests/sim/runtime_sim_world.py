"""The runtime simulation's world: virtual time, in-memory disks and a seeded network.

- :class:`VirtualLoop`: an asyncio event loop on a virtual clock that jumps to the next timer
  when every task is idle (trio's ``MockClock(autojump_threshold=0)``); work handed to threads
  runs inline, so a run is deterministic;
- :class:`MemoryLog` / :class:`MemoryStorage`: a ``GroupStorage`` whose appends become durable,
  in order, after a seeded disk delay, and lose everything not yet durable on a crash;
- :class:`SimNet` / :class:`SimPeers`: ``Peers`` with seeded delay, loss and cut links.

``world`` is the simulation (``tests.sim.runtime_sim.RuntimeSim``): it provides ``rng``,
``disk_delay()``, ``observe_chosen(instance, value)`` and ``nodes``.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

from phxq.errors import Unavailable
from phxq.plog import ChosenRecord, IndexEntry, QueueIndex, TimeIndex

Ballot = tuple[int, int]


class RuntimeViolation(AssertionError):
    """An invariant failed; the message names the seed and ends with the trace tail."""


# ------------------------------------------------------------------------- virtual time


class _Clock:
    now = 0.0


class _VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: a wait of ``timeout`` moves the virtual clock instead."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeViolation("the simulation deadlocked: nothing is scheduled")
        if timeout > 0:
            self.clock.now += timeout
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time; blocking work handed to threads runs inline."""

    def __init__(self) -> None:
        self.clock = _Clock()
        super().__init__(_VirtualSelector(self.clock))

    def _run_once(self) -> None:
        # Every pass of the loop costs a nanosecond, as a real one costs CPU time: asyncio runs
        # a timer up to its clock resolution early, and code that waits for a deadline a few
        # ulps away would otherwise find the clock never reaching it.
        self.clock.now += 1e-9
        super()._run_once()  # type: ignore[misc]

    def time(self) -> float:
        return self.clock.now

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:  # type: ignore[override]
        future: asyncio.Future[Any] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to the awaiting code, as a thread's would be
            future.set_exception(exc)
        return future


# ----------------------------------------------------------------------- memory storage


class MemoryDisk:
    """What survives a crash of one node: the durable records of each group."""

    def __init__(self) -> None:
        self.records: dict[int, list[tuple[Any, ...]]] = {}


class MemoryLog:
    """A ``GroupStorage`` in memory (see the module docstring); folds its durable records on
    open as the PLog's recovery does. No truncation and no snapshots."""

    def __init__(self, sim: Any, disk: MemoryDisk, group: int, directory: Path) -> None:
        self._sim = sim
        self.after_sync: Callable[[], None] = lambda: None
        self.directory = directory
        self.group = group
        self.first_instance = 1
        self.damaged: list[tuple[int, int]] = []
        self.needs_repair = False
        self.dead = False
        self._durable = disk.records.setdefault(group, [])
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._sync_at: float | None = None
        self.promised: Ballot = (0, 0)
        self.max_round = 0
        accepted: dict[int, dict[Ballot, bytes]] = {}
        self._chosen: dict[int, tuple[bytes, int]] = {}
        for record in self._durable:
            kind = record[0]
            if kind == "promise":
                self._promise(record[1])
            elif kind == "accept":
                _, i, ballot, value = record
                self._promise(ballot)
                accepted.setdefault(i, {})[ballot] = value
            else:
                _, i, ballot, checksum, value = record
                if ballot is not None:
                    self.max_round = max(self.max_round, ballot[0])
                self._chosen.setdefault(i, (value, checksum))
        self.chosen_up_to = 0
        while self.chosen_up_to + 1 in self._chosen:
            self.chosen_up_to += 1
        self.checksum = self._chosen[self.chosen_up_to][1] if self.chosen_up_to else 0
        self._accepted = {i: b for i, b in accepted.items() if i > self.chosen_up_to}
        self._queues = QueueIndex()
        self._times = TimeIndex()

    def _promise(self, ballot: Ballot) -> None:
        self.promised = max(self.promised, ballot)
        self.max_round = max(self.max_round, ballot[0])

    @property
    def has_state(self) -> bool:
        return bool(self.promised != (0, 0) or self._accepted or self.chosen_up_to)

    def _append(self, record: tuple[Any, ...]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._sync_at is None:
            delay = self._sim.disk_delay()
            self._sync_at = delay
            asyncio.get_running_loop().call_later(delay, self._sync)
        return future

    def _sync(self) -> None:
        """An fdatasync completes: everything queued so far is durable, in order."""
        self._sync_at = None
        if self.dead:
            return  # crashed meanwhile: the pending records are lost
        pending, self._pending = self._pending, []
        for record, future in pending:
            self._durable.append(record)
            if not future.done():
                future.set_result(None)
        self.after_sync()  # Storage.on_durable: in the same loop callback, as the PLog does

    def crash(self) -> None:
        self.dead = True
        self._pending.clear()

    def append_promise(self, ballot: Ballot) -> asyncio.Future[None]:
        self._promise(ballot)
        return self._append(("promise", ballot))

    def append_accept(self, instance: int, ballot: Ballot, value: bytes) -> asyncio.Future[None]:
        self._promise(ballot)
        if instance > self.chosen_up_to:
            self._accepted.setdefault(instance, {})[ballot] = value
        return self._append(("accept", instance, ballot, value))

    def append_chosen(
        self,
        instance: int,
        ballot: Ballot | None,
        checksum: int,
        value: bytes,
        *,
        index: Iterable[IndexEntry] = (),
        urgent: bool = True,
    ) -> asyncio.Future[None]:
        if instance != self.chosen_up_to + 1:
            raise ValueError(f"chosen instance {instance} after {self.chosen_up_to}")
        self._sim.observe_chosen(instance, value)
        self._accepted.pop(instance, None)
        self._chosen[instance] = (value, checksum)
        self.chosen_up_to, self.checksum = instance, checksum
        self.restore_index(instance, index)
        return self._append(("chosen", instance, ballot, checksum, value))

    def iter_chosen_blocking(self) -> Iterator[tuple[int, bytes]]:
        for i in range(1, self.chosen_up_to + 1):
            yield i, self._chosen[i][0]

    def restore_index(self, instance: int, entries: Iterable[IndexEntry]) -> None:
        entries = list(entries)
        if entries:
            self._queues.add(instance, entries)
            self._times.add(instance, min(t for _, _, t in entries))

    def accepted_values(self) -> dict[int, tuple[Ballot, bytes]]:
        out = {}
        for i, ballots in self._accepted.items():
            if i > self.chosen_up_to and ballots:
                top = max(ballots)
                out[i] = (top, ballots[top])
        return out

    def checksum_at(self, instance: int) -> int | None:
        if instance == 0:
            return 0
        if instance <= self.chosen_up_to:
            return self._chosen[instance][1]
        return None

    async def read_chosen(
        self, from_instance: int, max_count: int, max_bytes: int
    ) -> list[ChosenRecord]:
        out: list[ChosenRecord] = []
        total = 0
        last = min(self.chosen_up_to, from_instance + max_count - 1)
        for i in range(from_instance, last + 1):
            value, checksum = self._chosen[i]
            if out and total + len(value) > max_bytes:
                break
            out.append(ChosenRecord(i, value, checksum))
            total += len(value)
        return out

    async def read_value(self, instance: int) -> bytes:
        return self._chosen[instance][0]

    def positions(
        self, queue_key: Hashable, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int]]:
        return self._queues.positions(queue_key, after, limit)

    def instance_at_time(self, t: float) -> int | None:
        return self._times.instance_at(t)

    def retention_floor(self, **kw: Any) -> tuple[int, bool]:
        return self.first_instance, False

    def truncation_point(self, instance: int) -> int:
        return self.first_instance

    async def truncate_below(self, instance: int) -> int:
        return self.first_instance

    async def reset_to(self, instance: int, checksum: int) -> bool:
        raise AssertionError("no log is truncated in the simulation: no snapshot to install")

    async def mark_repaired(self) -> None:
        pass

    def disk_bytes(self) -> int:
        return 0

    async def close(self) -> None:
        pass  # a graceful close lets pending records become durable (a crash does not)


class MemoryStorage:
    """One incarnation's ``Storage``: a :class:`MemoryLog` per group on the node's disk."""

    def __init__(self, sim: Any, disk: MemoryDisk, data: Path) -> None:
        self._sim = sim
        self._disk = disk
        self._data = data
        self.logs: list[MemoryLog] = []
        self._hook: Callable[[], None] | None = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def on_durable(self, hook: Callable[[], None]) -> None:
        self._hook = hook

    def _after_sync(self) -> None:
        if self._hook is not None:
            self._hook()

    def groups_without_log(self, groups: int) -> set[int]:
        return set()  # every node is a member with its disk (MEMBER is written at first start)

    def group_directory(self, group: int) -> Path:
        return self._data / f"g{group:04d}"

    async def open_group(self, group: int) -> MemoryLog:
        glog = MemoryLog(self._sim, self._disk, group, self.group_directory(group))
        glog.after_sync = self._after_sync
        self.logs.append(glog)
        return glog

    def crash(self) -> None:
        for glog in self.logs:
            glog.crash()


# ---------------------------------------------------------------------------- network


class SimNet:
    """Seeded delay, loss and cut links between nodes (both directions)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.drop_rate = 0.0
        self.cut: set[frozenset[int]] = set()

    def linked(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self.cut

    def send(self, src: int, dst: int, method: str, params: Any) -> None:
        rng = self.sim.rng
        if not self.linked(src, dst) or rng.random() < self.drop_rate:
            return
        delay = rng.uniform(0.0002, 0.002) if rng.random() > 0.02 else rng.uniform(0.01, 0.05)
        asyncio.get_running_loop().call_later(delay, self._arrive, src, dst, method, params)

    def _arrive(self, src: int, dst: int, method: str, params: Any) -> None:
        node = self.sim.nodes[dst]
        if node.host is None or not node.up or not self.linked(src, dst):
            return
        node.host.on_notify(method, params)


class SimPeers:
    """One incarnation's ``Peers`` on the :class:`SimNet`."""

    def __init__(self, net: SimNet, me: int) -> None:
        self._net = net
        self._me = me
        self.alive = True

    def notify(self, to: int, method: str, params: Any, *, lazy: bool = False) -> None:
        if self.alive:
            self._net.send(self._me, to, method, params)

    async def call(self, to: int, method: str, params: Any, *, timeout: float) -> Any:
        raise Unavailable("no requests between nodes in the simulation (every node is a member)")

    async def close(self) -> None:
        self.alive = False
