"""Human output of ``phxq admin topic list`` and ``phxq admin reconcile`` (issue 20): sizes
as MiB, plural as English has it, and no Python ``None`` or dict reprs in the lines. The
cluster calls are replaced by what they return (the commands' real rendering runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from phxq import admin as ops
from phxq.cli import cli
from phxq.devconfig import write_dev_config
from phxq.store.reconcile import Report


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_dev_config(tmp_path, nodes=3, groups=2)


def _returning(value: Any) -> Any:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return value

    return call


def _clean(text: str) -> None:
    for leak in ("None", "b'", "{", "}", "'"):
        assert leak not in text, f"{leak!r} in {text!r}"


def test_topic_list_reads_like_english(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {
            "name": "orders",
            "queues": 8,
            "retention": 7 * 86400.0,
            "max_message_bytes": 1 << 20,
            "sets": None,
            "placement": [1, 2] * 4,
            "map_version": 3,
        },
        {
            "name": "orders.dlq",
            "queues": 1,
            "retention": 3600.0,
            "max_message_bytes": 64 << 20,
            "sets": [2],
            "placement": [2],
            "map_version": 3,
        },
    ]
    monkeypatch.setattr(ops, "topic_list", _returning(rows))
    result = CliRunner().invoke(cli, ["admin", "topic", "list", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "orders: 8 queues, retention 7d, max message 1.0 MiB, on every set (map version 3)"
    )
    assert lines[1:3] == ["  set 1: queues 0,2,4,6", "  set 2: queues 1,3,5,7"]
    assert lines[3] == (
        "orders.dlq: 1 queue, retention 1h, max message 64.0 MiB, on sets 2 (map version 3)"
    )
    _clean(result.output)


def test_reconcile_without_consumer_groups_or_counts(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = Report(
        "orders",
        None,
        None,
        queues=[
            {"queue": 0, "enqueued": 3, "consumed": {"billing": 3, "audit": 1}},
            {"queue": 1, "enqueued": None, "consumed": {}},
        ],
        checksums=[],
        unreachable=[],
        mismatches=[],
    )
    monkeypatch.setattr(ops, "reconcile", _returning(report))
    args = ["admin", "reconcile", "--config", str(config), "--topic", "orders"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "queue 0: stored 3, consumed: billing 3, audit 1",
        "queue 1: stored -",
    ]
    _clean(result.output)


def test_queue_move_and_status_read_like_english(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = {
        "topic": "orders",
        "queue": 3,
        "move": "5f2a",
        "from": 1,
        "to": 2,
        "state": "done",
        "sealed": 123 << 20 | 0xFFFFF,
        "map_version": 7,
    }
    monkeypatch.setattr(ops, "queue_move", _returning(done))
    args = ["admin", "queue", "move", "--config", str(config), "--topic", "orders"]
    result = CliRunner().invoke(cli, [*args, "--queue", "3", "--to-set", "2"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"orders/3: moved from set 1 to set 2 (sealed at offset {done['sealed']}, map version 7)\n"
    )
    result = CliRunner().invoke(cli, [*args, "--queue", "3"])
    assert result.exit_code != 0 and "--to-set" in result.output  # neither --to-set nor --cancel
    cancelled = {**done, "state": "cancelled", "sealed": None}
    monkeypatch.setattr(ops, "queue_move_cancel", _returning(cancelled))
    result = CliRunner().invoke(cli, [*args, "--queue", "3", "--cancel"])
    assert result.output == "orders/3: move 5f2a to set 2 is cancelled\n"
    move = {"id": "5f2a", "topic": "orders", "queue": 3, "from": 1, "to": 2, "started_at": 0.0}
    move["waiting"] = "MoveBlocked: 3 scheduled and 1 transactional messages pending"
    status = ops.ClusterStatus({1: {"error": "Unavailable: down", "map_version": 7}})
    monkeypatch.setattr(ops.ClusterStatus, "moves", lambda self: [move])
    monkeypatch.setattr(ops, "status", _returning(status))
    result = CliRunner().invoke(cli, ["admin", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "queue moves in progress" in result.output
    assert "  orders/3: set 1 -> set 2 (move 5f2a, " in result.output
    assert f"    waiting: {move['waiting']}\n" in result.output
