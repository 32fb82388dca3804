"""Regression tests for bugs the fault suite found (each names the fault and seed)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

from phxq.errors import StorageError
from phxq.paxos import Ballot, GroupConfig
from phxq.paxos.effects import AcceptRecord, Persist, PromiseRecord
from phxq.plog import GroupLog, LogWriter
from phxq.replication.replica import GroupReplica
from phxq.store.state import StoreMachines


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


async def test_a_failed_persist_of_several_records_logs_no_never_retrieved_future(
    tmp_path: Path,
) -> None:
    """disk_full (seed 5): a Persist of a promise and accepts failed with ENOSPC; only the last
    record's future was looked at, so asyncio logged "Future exception was never retrieved"
    for each of the others, on every failure."""
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    config = GroupConfig(group=0, node_id=1, members=(1, 2, 3))
    async with LogWriter() as writer:
        replica = await GroupReplica.open(
            config,
            tmp_path,
            lambda: GroupLog.open(tmp_path, 0, writer),
            StoreMachines(60.0),
            lambda *a: None,
            lambda *a: None,
        )
        replica.glog = _FullDisk()  # type: ignore[assignment]
        ballot = Ballot(1, 1)
        records = (
            PromiseRecord(ballot),
            AcceptRecord(1, ballot, b"a"),
            AcceptRecord(2, ballot, b"b"),
        )
        replica._persist(Persist(1, records))
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    assert isinstance(replica.failed, StorageError)
    assert [c["message"] for c in unhandled] == []


class _RenewClient:
    """A LockClient stand-in whose renewals wait until the test answers them."""

    def __init__(self) -> None:
        self.renewing = asyncio.Event()
        self.answer: asyncio.Future[int] | None = None

    async def acquire(self, name: str, owner: str, ttl: float) -> int:
        return 7

    async def release(self, name: str, owner: str, token: int) -> bool:
        return True

    async def call(self, method: str, params: Any, **kw: Any) -> Any:
        assert method == "renew"
        if self.answer is not None:  # later renewals succeed at once, as a live master's do
            return 7
        self.answer = asyncio.get_running_loop().create_future()
        self.renewing.set()
        return await self.answer


async def test_leaving_hold_while_a_renewal_answer_arrives_stops_renewing() -> None:
    """Seeds 7 and 9 of ``scripts/torture --runs 10 --seed 1``: a lock client leaving
    ``hold()`` cancelled its renewal task just as a renewal answer arrived; Python 3.11's
    ``asyncio.wait_for`` then swallows the cancellation, the task kept renewing forever, the
    lock was never released (every other client got LockHeld) and leaving ``hold()`` hung."""
    from phxq.lock.client import _Hold

    client = _RenewClient()
    hold = _Hold(client, "n", "o", ttl=0.3)  # type: ignore[arg-type]
    await hold.__aenter__()
    await asyncio.wait_for(client.renewing.wait(), 2.0)
    assert client.answer is not None and len(hold._renewer) == 1
    (renewal,) = hold._renewer._tasks
    client.answer.set_result(7)  # the answer and the cancellation arrive together
    leaving = asyncio.get_running_loop().create_task(hold.__aexit__(None, None, None))
    await asyncio.wait({leaving}, timeout=2.0)
    assert leaving.done(), "leaving hold() hangs: the renewal task ignored its cancellation"
    assert renewal.cancelled()


async def test_consumer_event_waits_keep_a_cancellation_that_comes_with_the_event() -> None:
    """The same 3.11 ``wait_for`` race in the consumer's event waits: a pair worker cancelled
    (lease lost) just as the event it waited for was set would have carried on."""
    from phxq.consumer import delivery, member

    for wait in (member.wait_event, delivery.wait_event):
        event = asyncio.Event()
        task = asyncio.get_running_loop().create_task(wait(event, 5.0))
        await asyncio.sleep(0)  # the task now waits on the event
        event.set()  # the event's waiter is woken ...
        task.cancel()  # ... and the cancellation arrives in the same loop iteration
        await asyncio.wait({task}, timeout=2.0)
        assert task.cancelled(), f"{wait.__module__}.{wait.__name__} swallowed a cancellation"
