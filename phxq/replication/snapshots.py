"""A replica's snapshots: loading one at start, building one to compact, sending and decoding.

The file format is :mod:`phxq.replication.snapshot`. :class:`Snapshots` holds what one group's
replica needs around it -- the group directory, the state machine factory, the peer link and
the rate limits -- so that the replica only decides *when* (compaction, a peer behind our log,
a peer's snapshot ahead of ours) and switches its state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic

from phxq.errors import ProtocolError, StorageError
from phxq.net.server import LogLimiter
from phxq.plog import ChosenRecord
from phxq.replication.machine import M, Machines, StateMachine, apply_instance
from phxq.replication.snapshot import (
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    read_snapshot,
    write_snapshot,
)
from phxq.replication.storage import GroupStorage

__all__ = ["CATCHUP_MAX_BYTES", "SNAPSHOT_RESEND", "Snapshots"]

log = logging.getLogger("phxq.replica")

CATCHUP_MAX_BYTES = 4 << 20
SNAPSHOT_RESEND = 2.0  # seconds before the same peer gets our snapshot again

SendSnapshot = Callable[[int, int, bytes], None]  # (to, group, encoded snapshot)


class Snapshots(Generic[M]):
    """Snapshot handling of one group's replica (see the module docstring)."""

    def __init__(
        self, group: int, directory: Path, machines: Machines[M], send: SendSnapshot
    ) -> None:
        self.group = group
        self.directory = directory
        self.machines = machines
        self._send = send
        self._sent: dict[int, float] = {}  # peer -> when we last sent it our snapshot
        self._bad_log = LogLimiter()  # malformed snapshots from the network

    async def load(self) -> tuple[M, Snapshot | None, StorageError | None]:
        """The state to recover from (restored from the group's snapshot, else empty), the
        snapshot, and why it is unusable (then the state is empty and the replica must not
        serve: the log below the snapshot may be gone)."""
        try:
            snap = await asyncio.to_thread(read_snapshot, self.directory)
            if snap is not None:
                return self.machines.restore(self.group, snap.state), snap, None
        except (StorageError, ProtocolError) as exc:
            problem = StorageError(f"group {self.group}: unusable snapshot: {exc}")
            return self.machines.fresh(self.group), None, problem
        return self.machines.fresh(self.group), None, None

    async def read(self) -> Snapshot | None:
        return await asyncio.to_thread(read_snapshot, self.directory)

    async def persist(self, snap: Snapshot) -> None:
        await asyncio.to_thread(write_snapshot, self.directory, snap)

    async def offer(self, to: int, now: float) -> None:
        """``to`` asked for instances our log no longer holds: send it our snapshot (the state
        at our first_instance - 1), at most every ``SNAPSHOT_RESEND`` seconds per peer."""
        if now - self._sent.get(to, -1e9) < SNAPSHOT_RESEND:
            return
        self._sent[to] = now
        try:
            snap = await self.read()
        except StorageError as exc:
            log.error("group %d: cannot send a snapshot to %d: %s", self.group, to, exc)
            return
        if snap is None:
            return
        log.info("group %d: sending node %d our snapshot at %d", self.group, to, snap.instance)
        self._send(to, self.group, encode_snapshot(snap))

    def decode(self, data: bytes) -> tuple[Snapshot, M] | None:
        """A peer's snapshot and the state it holds; None when malformed (warned at a limited
        rate: anyone who reaches the port can send one)."""
        try:
            snap = decode_snapshot(data)
            return snap, self.machines.restore(self.group, snap.state)
        except ProtocolError as exc:
            suppressed = self._bad_log.allow()
            if suppressed is not None:
                log.warning(
                    "group %d: ignored a malformed snapshot: %s (%d more suppressed)",
                    self.group,
                    exc,
                    suppressed,
                )
            return None

    async def build(self, glog: GroupStorage, point: int) -> None:
        """Make sure a durable snapshot covers everything below ``point`` (a truncation point
        above ``glog.first_instance``): the previous snapshot plus the instances that go."""
        base = glog.first_instance - 1
        snap = await self.read()
        if snap is None and base == 0:
            state = self.machines.fresh(self.group)
            checksum = 0
        elif snap is not None and snap.instance >= base:
            state = self.machines.restore(self.group, snap.state)
            checksum = snap.checksum
        else:
            raise StorageError(f"group {self.group}: no snapshot at {base} to compact from")
        if state.applied_up_to >= point - 1:
            return  # durable already (a crash came between writing it and truncating)
        nxt = state.applied_up_to + 1
        while nxt < point:
            records = await glog.read_chosen(nxt, point - nxt, CATCHUP_MAX_BYTES)
            if not records:
                raise StorageError(f"group {self.group}: cannot read {nxt} to compact")
            await asyncio.to_thread(_apply_all, state, records)
            checksum = records[-1].checksum
            nxt = records[-1].instance + 1
        await self.persist(Snapshot(point - 1, checksum, state.snapshot()))


def _apply_all(state: StateMachine, records: list[ChosenRecord]) -> None:
    for r in records:
        apply_instance(state, r.instance, r.value)
