"""bench.regression: medians per side and a permutation test that separates a real slowdown
from run-to-run noise."""

from __future__ import annotations

import json
from pathlib import Path

from bench import regression


def _write(tmp: Path, label: str, i: int, msgs: float, p50: float) -> Path:
    run = {
        "name": "throughput",
        "messages": 1000,
        "msgs_per_s": msgs,
        "latency_ms": {"p50": p50},
        "params": {"groups": 1, "batching": True},
        "cpu_s": {"client": 0.01, "store1": 0.05},
    }
    path = tmp / f"{label}-{i}.json"
    path.write_text(json.dumps({"settings": {"label": label}, "runs": [run]}))
    return path


def _row(tmp: Path, before: list[float], after: list[float]) -> list[str]:
    paths = [_write(tmp, "g1before", i, v, 1.0) for i, v in enumerate(before)]
    paths += [_write(tmp, "g1after", i, v, 1.0) for i, v in enumerate(after)]
    lines = regression.table(regression.collect(paths, "before", "after"))
    (row,) = [line for line in lines if "msgs/s" in line and "µs" not in line]
    return [c.strip() for c in row.strip("|").split("|")]


def test_a_clear_slowdown_has_a_small_p(tmp_path: Path) -> None:
    cells = _row(tmp_path, [100, 101, 99, 102, 98, 100], [80, 81, 79, 82, 78, 80])
    assert cells[6] == "0.800"
    assert float(cells[7]) <= 0.02  # (all 6 after runs below all 6 before runs)


def test_overlapping_runs_are_noise(tmp_path: Path) -> None:
    cells = _row(tmp_path, [100, 120, 90, 110, 95], [105, 92, 118, 99, 108])
    assert float(cells[7]) > 0.3
    assert cells[4].startswith("100.00 (90.0 to 120.0) 5")


def test_other_labels_are_left_out(tmp_path: Path) -> None:
    paths = [_write(tmp_path, "nightly", 0, 50, 1.0), _write(tmp_path, "g1before", 0, 100, 1.0)]
    data = regression.collect(paths, "before", "after")
    assert list(data) == [((1, "throughput", True), "before")]
