"""Crash at any byte: every synced record comes back intact, nothing never written appears.

A Hypothesis state machine drives a real GroupLog on real files. The writer's ``pwrite`` seam is
a gate: while the gate is shut the writer thread blocks inside a write, so records pile up
behind it exactly as they do behind a slow disk. ``sync`` opens the gate until every future has
resolved. ``crash`` lets the blocked write land *torn* — nothing, a prefix, a prefix followed by
garbage, or with a hole (page writeback out of order) — and then fails every later write and
sync, like a power cut before ``fdatasync`` returned. The log is then reopened and checked.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from phxq.plog import GroupLog, LogWriter


class Disk:
    """Syscall seams with a gate and a one-shot torn write."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.tear: tuple[str, float, float] | None = None
        self.dead = False

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        self.open.wait()
        if self.dead:
            raise OSError(errno.EIO, "power cut")
        if self.tear is not None:
            self.dead = True
            mode, a, b = self.tear
            blob = bytes(data)
            cut = int(len(blob) * a)
            if mode == "prefix":
                os.pwrite(fd, blob[:cut], offset)
            elif mode == "garbage":
                junk = bytes((i * 151 + 7) % 256 for i in range(len(blob) - cut))
                os.pwrite(fd, blob[:cut] + junk, offset)
            elif mode == "hole":
                end = cut + int((len(blob) - cut) * b)
                os.pwrite(fd, blob[:cut] + bytes(end - cut) + blob[end:], offset)
            raise OSError(errno.EIO, "power cut")
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        if self.dead:
            raise OSError(errno.EIO, "power cut")
        os.fdatasync(fd)


def chosen_value(instance: int) -> bytes:
    return b"chosen-%d-" % instance + bytes(instance % 7)


class CrashMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="plog-crash-"))
        self.written: set[tuple[int, tuple[int, int], bytes]] = set()  # every accept submitted
        self.synced_accepts: dict[int, tuple[int, int]] = {}  # instance -> highest synced ballot
        self.synced_promise = (0, 0)
        self.synced_chosen = 0
        self.max_chosen_submitted = 0
        self.pending: list[tuple[asyncio.Future[None], tuple[str, object]]] = []
        self.crashes = 0

    def run(self, coro: object) -> object:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    async def _open(self) -> None:
        self.disk = Disk()
        self.writer = LogWriter(fsync=self.disk.fsync, pwrite=self.disk.pwrite)
        await self.writer.start()
        self.disk.open.set()  # recovery and the segment header go through freely
        self.glog = await GroupLog.open(self.dir, 1, self.writer, segment_bytes=4096)
        await self.glog.append_promise(self.glog.recovered.promised)
        self.disk.open.clear()

    @initialize()
    def start(self) -> None:
        self.run(self._open())

    def teardown(self) -> None:
        async def stop() -> None:
            self.disk.open.set()
            await self.glog.close()
            await self.writer.close()

        self.run(stop())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------------------- actions

    @rule(round_=st.integers(1, 20))
    def promise(self, round_: int) -> None:
        ballot = (round_, 1)
        self.pending.append((self.glog.append_promise(ballot), ("promise", ballot)))

    @rule(ahead=st.integers(0, 3), round_=st.integers(1, 20), value=st.binary(max_size=300))
    def accept(self, ahead: int, round_: int, value: bytes) -> None:
        instance = self.glog.chosen_up_to + 1 + ahead
        ballot = (round_, 1)
        self.written.add((instance, ballot, value))
        future = self.glog.append_accept(instance, ballot, value)
        self.pending.append((future, ("accept", (instance, ballot))))

    @rule(with_accept=st.booleans())
    def choose(self, with_accept: bool) -> None:
        instance = self.glog.chosen_up_to + 1
        value = chosen_value(instance)
        ballot = None
        if with_accept:
            ballot = (21, 1)
            self.written.add((instance, ballot, value))
            future = self.glog.append_accept(instance, ballot, value)
            self.pending.append((future, ("accept", (instance, ballot))))
        future = self.glog.append_chosen(instance, ballot, instance * 3, value)
        self.max_chosen_submitted = max(self.max_chosen_submitted, instance)
        self.pending.append((future, ("chosen", instance)))

    def _account(self) -> None:
        for future, (kind, what) in self.pending:
            if not future.done() or future.exception() is not None:
                continue
            if kind == "promise":
                assert isinstance(what, tuple)
                self.synced_promise = max(self.synced_promise, what)
            elif kind == "accept":
                instance, ballot = what  # type: ignore[misc]
                old = self.synced_accepts.get(instance, (0, 0))
                self.synced_accepts[instance] = max(old, ballot)
            else:
                assert isinstance(what, int)
                self.synced_chosen = max(self.synced_chosen, what)
        self.pending = [p for p in self.pending if not p[0].done()]

    @rule()
    def sync(self) -> None:
        async def flush() -> None:
            self.disk.open.set()
            await asyncio.gather(*(f for f, _ in self.pending), return_exceptions=True)
            self.disk.open.clear()

        self.run(flush())
        self._account()

    @precondition(lambda self: self.crashes < 4)
    @rule(
        mode=st.sampled_from(["nothing", "prefix", "garbage", "hole"]),
        a=st.floats(0, 1),
        b=st.floats(0, 1),
    )
    def crash(self, mode: str, a: float, b: float) -> None:
        self.crashes += 1
        self._account()  # futures resolved before the power cut were synced

        async def power_cut() -> None:
            self.disk.tear = (mode, a, b)
            self.disk.open.set()
            await asyncio.gather(*(f for f, _ in self.pending), return_exceptions=True)
            await self.glog.close()
            await self.writer.close()

        self.run(power_cut())
        self._account()  # a future cannot succeed after the cut; this must add nothing new
        self.pending = []
        self.run(self._open())
        self.check_recovered()

    # ----------------------------------------------------------------------- properties

    def check_recovered(self) -> None:
        rec = self.glog.recovered
        assert not self.glog.needs_repair, (rec.corrupt, rec.damaged)
        assert rec.promised >= self.synced_promise
        assert self.synced_chosen <= rec.chosen_up_to <= self.max_chosen_submitted
        for instance, ballot in self.synced_accepts.items():
            if instance > rec.chosen_up_to:
                assert instance in rec.accepted, f"synced accept {instance} lost"
                assert rec.accepted[instance][0] >= ballot
        for instance, (ballot, value) in rec.accepted.items():
            assert (instance, ballot, value) in self.written, "an accept never written appeared"
        if rec.chosen_up_to:
            got = self.run(self.glog.read_chosen(1, 10_000, 1 << 30))
            assert isinstance(got, list)
            assert [r.instance for r in got] == list(range(1, rec.chosen_up_to + 1))
            for r in got:
                assert r.value == chosen_value(r.instance) and r.checksum == r.instance * 3
            assert rec.checksum == rec.chosen_up_to * 3
        # Accepts above the recovered chosen point may now be re-proposed; forget older ones.
        self.synced_accepts = {i: b for i, b in self.synced_accepts.items() if i > rec.chosen_up_to}

    @invariant()
    def chosen_prefix_is_contiguous(self) -> None:
        if hasattr(self, "glog"):
            assert self.glog.chosen_up_to >= self.synced_chosen


CrashMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPlogCrash = CrashMachine.TestCase
