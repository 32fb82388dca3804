"""PLog micro-benchmarks with pytest-benchmark: durable appends through the group-commit writer.

Run: ``.venv/bin/pytest bench/test_bench_plog_micro.py --benchmark-only``. Real files under
pytest's temporary directory (``--basetemp DIR`` to measure another disk; ``extra_info`` names
the filesystem, since on tmpfs an fdatasync costs nothing). ``bench/bench_plog.py`` is the
longer-running PLog benchmark with concurrency levels and recovery time.

- one 100 B accept appended and awaited (one write + one fdatasync per round);
- a burst of 64 accepts of 100 B to one group, all awaited (group commit: a few fdatasyncs);
- a burst of 64 accepts spread over 16 groups (one fdatasync per touched file, fanned out);
- reading back a chosen 4 KiB value (off the event loop, from the tail cache or the file).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phxq.benchmark import filesystem_type
from phxq.net.loop import loop_factory
from phxq.plog import GroupLog, LogWriter

BALLOT = (1, 1)


class Logs:
    """A LogWriter and ``groups`` GroupLogs on one long-lived event loop."""

    def __init__(self, directory: Path, groups: int) -> None:
        self.runner = asyncio.Runner(loop_factory=loop_factory)
        self.writer = LogWriter()
        self.runner.run(self.writer.__aenter__())
        self.logs = [
            self.runner.run(GroupLog.open(directory / f"g{g}", g, self.writer))
            for g in range(groups)
        ]
        for glog in self.logs:
            self.runner.run(_wait(glog.append_promise(BALLOT)))
        self.instances = itertools.count(1)

    def close(self) -> None:
        for glog in self.logs:
            self.runner.run(glog.close())
        self.runner.run(self.writer.__aexit__(None, None, None))
        self.runner.close()


async def _wait(future: asyncio.Future[None]) -> None:
    await future


@pytest.fixture
def logs1(tmp_path: Path) -> Iterator[Logs]:
    logs = Logs(tmp_path, 1)
    yield logs
    logs.close()


@pytest.fixture
def logs16(tmp_path: Path) -> Iterator[Logs]:
    logs = Logs(tmp_path, 16)
    yield logs
    logs.close()


def _info(benchmark: Any, path: Path, **extra: Any) -> None:
    benchmark.extra_info["filesystem"] = filesystem_type(path)
    benchmark.extra_info.update(extra)


def test_bench_append_one_durable(benchmark: Any, logs1: Logs, tmp_path: Path) -> None:
    value = os.urandom(100)
    glog = logs1.logs[0]

    rounds = 0

    async def one() -> None:
        nonlocal rounds
        rounds += 1
        await glog.append_accept(next(logs1.instances), BALLOT, value)

    fsyncs0 = logs1.writer.fsyncs
    benchmark.pedantic(lambda: logs1.runner.run(one()), rounds=200, warmup_rounds=10)
    assert logs1.writer.fsyncs - fsyncs0 >= rounds  # every round was made durable on its own
    _info(benchmark, tmp_path, records_per_round=1)


@pytest.mark.parametrize("groups", [1, 16])
def test_bench_append_burst_64(
    benchmark: Any, groups: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    logs: Logs = request.getfixturevalue(f"logs{groups}")
    value = os.urandom(100)

    rounds = 0

    async def burst() -> None:
        nonlocal rounds
        rounds += 1
        futures = [
            logs.logs[i % groups].append_accept(next(logs.instances), BALLOT, value)
            for i in range(64)
        ]
        await asyncio.gather(*futures)

    records0, fsyncs0 = logs.writer.records, logs.writer.fsyncs
    benchmark.pedantic(lambda: logs.runner.run(burst()), rounds=50, warmup_rounds=3)
    records = logs.writer.records - records0
    fsyncs = logs.writer.fsyncs - fsyncs0
    assert records == 64 * rounds
    _info(benchmark, tmp_path, groups=groups, records_per_fsync=round(records / max(1, fsyncs), 1))


def test_bench_read_chosen_value(benchmark: Any, logs1: Logs, tmp_path: Path) -> None:
    glog = logs1.logs[0]
    value = os.urandom(4096)
    instance = glog.chosen_up_to + 1

    async def setup() -> None:
        await glog.append_accept(instance, BALLOT, value)
        await glog.append_chosen(instance, BALLOT, 42, value)

    logs1.runner.run(setup())
    got = benchmark(lambda: logs1.runner.run(glog.read_value(instance)))
    assert got == value
    _info(benchmark, tmp_path, value_bytes=len(value))
