"""Run the real PLog recovery over a simulated replica's durable records.

``plog_recover(records)`` writes the records, in order, into a fresh ``GroupLog`` in a temporary
directory (real segment files, through the real ``LogWriter``; ``fdatasync`` is skipped, since
no machine crashes here and recovery reads what the files hold either way), reopens it, and
returns the ``RecoveredState`` the store runtime would hand its Paxos core
(``store.replica.GroupReplica``: promised, max_round, accepted above chosen_up_to, chosen_up_to,
checksum). About 10 ms for a few hundred records, so the simulator runs it on a sample of
restarts only.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

from phxq.paxos import AcceptRecord, Ballot, PromiseRecord, RecoveredState
from phxq.plog import GroupLog, LogWriter
from tests.sim.disk import ChosenMark, Record

SEGMENT_BYTES = 1 << 16  # small segments: a few hundred records already roll over


def _no_sync(fd: int) -> None:
    """Durability against power loss is not what is tested here (see the module docstring)."""


async def _write_and_recover(directory: Path, records: Sequence[Record]) -> RecoveredState:
    async with LogWriter(fsync=_no_sync, sync_threads=1) as writer:
        glog = await GroupLog.open(directory, 0, writer, segment_bytes=SEGMENT_BYTES)
        last = None
        for r in records:
            if isinstance(r, PromiseRecord):
                last = glog.append_promise((r.ballot.round, r.ballot.node))
            elif isinstance(r, AcceptRecord):
                last = glog.append_accept(r.instance, (r.ballot.round, r.ballot.node), r.value)
            else:
                assert isinstance(r, ChosenMark)
                b = None if r.ballot is None else (r.ballot.round, r.ballot.node)
                last = glog.append_chosen(r.instance, b, r.checksum, r.value, urgent=False)
        if last is not None:
            await last
        await glog.close()
        again = await GroupLog.open(directory, 0, writer, segment_bytes=SEGMENT_BYTES)
        try:
            rec = again.recovered
            if rec.corrupt or rec.damaged or rec.torn_bytes:
                raise AssertionError(f"PLog recovery found damage in a clean log: {rec}")
            return RecoveredState(
                promised=Ballot(*rec.promised),
                max_round=rec.max_round,
                accepted={
                    i: (Ballot(*b), v)
                    for i, (b, v) in rec.accepted.items()
                    if i > again.chosen_up_to
                },
                chosen_up_to=again.chosen_up_to,
                checksum=again.checksum,
            )
        finally:
            await again.close()


def plog_recover(records: Sequence[Record]) -> RecoveredState:
    """The state the real PLog recovers from ``records`` written in this order."""
    with tempfile.TemporaryDirectory(prefix="phxq-sim-plog-") as tmp:
        return asyncio.run(_write_and_recover(Path(tmp), records))
