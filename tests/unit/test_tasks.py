"""TaskScope: every task it spawns is cancelled and awaited on close, and no failure is lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from phxq.tasks import TaskScope


async def test_close_cancels_and_awaits_every_task() -> None:
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    async with TaskScope("t") as scope:
        tasks = [scope.spawn(forever(n), name=n) for n in "abc"]
        await asyncio.sleep(0)
        assert len(scope) == 3
    assert sorted(ended) == ["a", "b", "c"] and all(t.cancelled() for t in tasks)
    assert len(scope) == 0


async def test_an_unwatched_failure_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom() -> None:
        raise ValueError("bad batch")

    with caplog.at_level(logging.ERROR, logger="phxq.tasks"):
        async with TaskScope("client") as scope:
            scope.spawn(boom(), name="send")
            await asyncio.sleep(0.01)
    (record,) = [r for r in caplog.records if "send" in r.getMessage()]
    assert record.exc_info is not None and "bad batch" in str(record.exc_info[1])


async def test_a_watched_failure_is_left_to_the_owner(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise ValueError("read failed")

    async with TaskScope("tail") as scope:
        task = scope.spawn(boom(), watched=True)
        await asyncio.wait([task])
        with pytest.raises(ValueError, match="read failed"):
            task.result()
    assert not [r for r in caplog.records if "read failed" in r.getMessage()]


async def test_no_task_starts_after_close() -> None:
    scope = TaskScope("closed")
    await scope.aclose()

    async def never() -> None:
        raise AssertionError("ran")

    with pytest.raises(RuntimeError, match="closed"):
        scope.spawn(never())
