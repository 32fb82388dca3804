"""A malformed snapshot from a peer is ignored -- by a member and by a rebuilding replica --
without touching the log or the state, and warned about at a limited rate."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from phxq.paxos import GroupConfig
from phxq.plog import GroupLog, LogWriter
from phxq.replication.replica import GroupReplica
from phxq.store.state import StoreMachines


def _send_snapshot(to: int, group: int, data: bytes) -> None:
    raise AssertionError("nothing is sent in this test")


@pytest.mark.parametrize("rebuilding", [False, True])
async def test_malformed_snapshots_are_ignored_and_warned_at_a_limited_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rebuilding: bool
) -> None:
    config = GroupConfig(group=0, node_id=1, members=(1, 2, 3))
    async with LogWriter() as writer:
        replica = await GroupReplica.open(
            config,
            tmp_path,
            lambda: GroupLog.open(tmp_path, 0, writer),
            StoreMachines(60.0),
            lambda *a: None,
            _send_snapshot,
        )
        try:
            state, first = replica.state, replica.glog.first_instance
            with caplog.at_level(logging.WARNING, logger="phxq.replica"):
                results = [
                    await replica.install_snapshot(
                        b"\x00garbage" + bytes([i]), rebuilding=rebuilding
                    )
                    for i in range(50)
                ]
            assert results == [False] * 50
            assert replica.state is state and replica.glog.first_instance == first
            assert not (tmp_path / "snapshot").exists()
            warned = [r for r in caplog.records if "malformed snapshot" in r.getMessage()]
            assert 1 <= len(warned) <= 10
        finally:
            await replica.close()
