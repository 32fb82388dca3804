"""Regression tests for bugs the fault suite found (each names the fault and seed)."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

from phxq.errors import StorageError
from phxq.paxos import Ballot
from phxq.paxos.effects import AcceptRecord, Persist, PromiseRecord
from phxq.store.replica import GroupReplica


class _FullDisk:
    """A GroupLog whose every append fails, as on a full disk (after the write is queued)."""

    def _failing(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(
            future.set_exception, StorageError("write failed: [Errno 28] No space left on device")
        )
        return future

    def append_promise(self, ballot: Any) -> asyncio.Future[None]:
        return self._failing()

    def append_accept(self, instance: int, ballot: Any, value: bytes) -> asyncio.Future[None]:
        return self._failing()


async def test_a_failed_persist_of_several_records_logs_no_never_retrieved_future() -> None:
    """disk_full (seed 5): a Persist of a promise and accepts failed with ENOSPC; only the last
    record's future was looked at, so asyncio logged "Future exception was never retrieved"
    for each of the others, on every failure."""
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    replica = GroupReplica(
        SimpleNamespace(group=0),  # type: ignore[arg-type]
        _FullDisk(),  # type: ignore[arg-type]
        state=None,  # type: ignore[arg-type]
        send=lambda *a: None,
        propose_timeout=1.0,
        address_of=lambda node: None,
    )
    ballot = Ballot(1, 1)
    records = (PromiseRecord(ballot), AcceptRecord(1, ballot, b"a"), AcceptRecord(2, ballot, b"b"))
    replica._persist(Persist(1, records))
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    assert isinstance(replica.failed, StorageError)
    assert [c["message"] for c in unhandled] == []
