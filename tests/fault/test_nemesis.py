"""The seeded nemesis against real store, lock and consumer processes, checked end to end.

CI runs three short schedules (fixed seeds) that together inject every fault kind at least
once; ``-m slow`` adds longer schedules with every kind. A failure prints the violations, the
history file and the command that replays the seed (``scripts/torture``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phxq.fault.nemesis import KINDS
from phxq.fault.torture import RunOptions, RunReport, run_once

pytestmark = pytest.mark.integration

# Every kind in exactly one CI schedule.
CI_SCHEDULES = [
    (101, KINDS[0:4]),
    (102, KINDS[4:8]),
    (103, KINDS[8:12]),
]


def _explain(report: RunReport, duration: float) -> str:
    lines = [report.summary(), *report.result.violations, *report.problems]
    lines.append(f"history: {report.history_path}")
    lines.append(
        f"replay: scripts/torture --runs 1 --seed {report.seed} --duration {duration:g} -v"
        " (with the same required kinds: see tests/fault/test_nemesis.py)"
    )
    return "\n".join(lines)


async def _run(tmp_path: Path, seed: int, kinds: tuple[str, ...], duration: float) -> RunReport:
    opts = RunOptions(seed=seed, duration=duration, out=tmp_path, require=kinds)
    report = await run_once(opts, echo=lambda *a: None)
    assert report.ok, _explain(report, duration)
    return report


@pytest.mark.parametrize(("seed", "kinds"), CI_SCHEDULES, ids=[str(s) for s, _ in CI_SCHEDULES])
async def test_no_acked_message_is_lost_under_a_seeded_schedule(
    tmp_path: Path, seed: int, kinds: tuple[str, ...]
) -> None:
    report = await _run(tmp_path, seed, kinds, duration=22.0)
    f = report.result.figures()
    assert f["acked"] > 100 and f["lost"] == 0
    assert f["delivered"] >= f["acked"]
    assert f["leases"] > 0 and f["fenced_ok"] > 0
    skippable = (
        {"disk_full"} if "disk_full" in kinds and "disk_full" not in report.injected else set()
    )
    if skippable:  # only without permission to mount a tmpfs (the harness logs it)
        pytest.skip("disk_full: mounting a tmpfs is not permitted here")
    assert set(kinds) <= set(report.injected), f"injected only {report.injected}"


def test_ci_schedules_cover_every_fault_kind() -> None:
    assert {k for _, kinds in CI_SCHEDULES for k in kinds} == set(KINDS)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [201, 202, 203])
async def test_long_schedule_with_every_fault_kind(tmp_path: Path, seed: int) -> None:
    report = await _run(tmp_path, seed, KINDS, duration=90.0)
    assert report.result.lost == 0
