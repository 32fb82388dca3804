"""A queue move never seals a queue over pending delayed or transactional messages: the seal
entry is refused at apply time (``MoveBlocked``, with the counts) while the group holds any,
and goes through once they are released, cancelled or decided. After a seal, new delayed and
transactional messages of the queue are refused like enqueues (``QueueMoved``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phxq.errors import MoveBlocked, QueueMoved
from phxq.routing import make_offset
from phxq.store.apply_results import Scheduled
from phxq.store.move_entries import SealEntry, encode_move
from phxq.store.move_state import MAX_INDEX, Sealed
from phxq.store.schedule import Released, scheduled_id_of
from phxq.store.schedule_entries import encode_cancel, encode_release, encode_schedule
from phxq.store.state import Enqueued, Rejected, StoreState
from phxq.store.txn import TxnDiscarded, TxnPrepared
from phxq.store.txn_entries import (
    HELD,
    encode_decide,
    encode_discard,
    encode_prepare,
    encode_txn_release,
)

from .test_store_state import Log, enq

SEAL = encode_move(SealEntry("t", 0, "m1", 2))
DUE = 5000.0
WIRE = [[b"later", None, {}, None]]


def schedule(queue: int = 0) -> bytes:
    return encode_schedule("t", queue, 1000.0, [DUE], WIRE)


def prepare(txn: str = "x1", queue: int = 0) -> bytes:
    return encode_prepare(txn, 0, 0, 5.0, "pg", "t", queue, 1000.0, WIRE)


def blocked(result: object) -> MoveBlocked:
    assert isinstance(result, Rejected), result
    assert isinstance(result.error, MoveBlocked), result.error
    return result.error


def scheduled_id(result: object) -> int:
    assert isinstance(result, Scheduled), result
    return scheduled_id_of(result.refs[0])


def test_a_seal_over_pending_delayed_messages_is_refused_until_they_are_released() -> None:
    log = Log()
    [first, second] = log.apply(schedule(), schedule())
    [refused] = log.apply(SEAL)
    error = blocked(refused)
    assert error.data == {"move": "m1", "scheduled": 2, "transactional": 0}
    assert "2 scheduled and 0 transactional" in error.message
    assert not log.state.moves.sealed  # nothing changed: the queue takes messages as before
    assert isinstance(log.apply(enq("t", 0, None))[0], Enqueued)
    # One released, one cancelled by its producer: then the seal goes through, above both.
    ids = [scheduled_id(first), scheduled_id(second)]
    [released] = log.apply(encode_release("t", 0, DUE, ids[:1], [DUE], [WIRE[0][:3]]))
    assert isinstance(released, Released) and released.offsets == (make_offset(4, 0),)
    assert blocked(log.apply(SEAL)[0]).data["scheduled"] == 1
    log.apply(encode_cancel(ids[1], DUE))
    [sealed] = log.apply(SEAL)
    assert sealed == Sealed(make_offset(7, MAX_INDEX), 2)
    assert released.offsets[0] is not None and released.offsets[0] < sealed.sealed


def test_a_seal_over_an_undecided_transaction_part_is_refused_until_it_is_decided() -> None:
    log = Log()
    [prepared] = log.apply(prepare("x1"), prepare("x2"))[:1]
    assert isinstance(prepared, TxnPrepared) and len(prepared.ids) == 1
    assert blocked(log.apply(SEAL)[0]).data == {
        "move": "m1",
        "scheduled": 0,
        "transactional": 2,
    }
    # x1 commits and is released, x2 rolls back: nothing is pending any more.
    release = encode_txn_release("x1", "t", 0, 1001.0, list(prepared.ids), [HELD], [WIRE[0][:3]])
    results = log.apply(encode_decide("x1", True, 1001.0, "ok"), release)
    assert isinstance(results[1], Released) and results[1].offsets[0] is not None
    assert blocked(log.apply(SEAL)[0]).data["transactional"] == 1
    assert log.apply(encode_discard("x2", 1002.0)) == [TxnDiscarded(1)]
    assert isinstance(log.apply(SEAL)[0], Sealed)


def test_pending_messages_of_another_queue_of_the_group_block_the_seal_too() -> None:
    # The group's state does not record a pending message's queue: the check is per group.
    log = Log()
    log.apply(schedule(queue=1))
    assert blocked(log.apply(SEAL)[0]).data["scheduled"] == 1


def test_a_schedule_racing_the_seal_is_decided_by_log_order() -> None:
    log = Log()
    # The schedule first: the seal in the same instance is refused.
    results = log.apply(schedule(), SEAL)
    assert isinstance(results[0], Scheduled)
    blocked(results[1])
    log.apply(encode_cancel(scheduled_id(results[0]), DUE))
    # The seal first: the schedule and prepare after it are refused, nothing becomes pending.
    results = log.apply(SEAL, schedule(), prepare())
    assert isinstance(results[0], Sealed)
    for refused in results[1:]:
        assert isinstance(refused, Rejected) and isinstance(refused.error, QueueMoved)
    assert len(log.state.schedule) == 0 and not log.state.txns.open
    # A retried seal of the same move answers the same seal even with other queues' pending.
    log.apply(schedule(queue=1))
    assert log.apply(SEAL)[0] == results[0]


def test_a_refused_seal_leaves_the_snapshot_unchanged() -> None:
    log = Log()
    log.apply(prepare())
    before = log.state.snapshot()
    blocked(log.apply(SEAL)[0])
    after = log.state.snapshot()
    restored = StoreState.restore(after)
    assert restored.applied_up_to == 2
    restored.applied_up_to = 1  # only the applied instance moved on
    assert restored.snapshot() == before


def test_admin_status_shows_why_a_move_waits_as_the_store_driving_it_reports() -> None:
    from phxq.admin import ClusterStatus

    move = {"id": "m1", "topic": "t", "queue": 0, "from": 1, "to": 2, "started_at": 1.0}
    reason = "MoveBlocked: queue t/0 cannot be sealed yet: ..."
    stores = {
        1: {"map_version": 4, "moves": [move]},  # newest map, not the driver
        2: {"map_version": 3, "moves": [{**move, "waiting": reason}]},  # set 2's group master
    }
    assert ClusterStatus(stores).moves() == [{**move, "waiting": reason}]
    assert ClusterStatus({1: stores[1]}).to_json()["moves"] == [{**move, "waiting": None}]


def test_topic_describe_shows_each_moved_queues_segments_and_the_moves_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from phxq import admin
    from phxq.cli import cli
    from phxq.config import parse_config
    from phxq.topics import _row
    from phxq.topology import Topology

    from .test_queue_move import CONFIG

    topo = Topology.from_config(parse_config(CONFIG))
    topo = topo.with_move("t", 0, 2, "m1", 1.0).moved("t", 0, "m1", 1000)
    topo = topo.with_move("t", 0, 1, "m2", 2.0).moved("t", 0, "m2", 5000)
    topo = topo.with_move("t", 2, 2, "m3", 3.0)
    row = _row(topo, "t")
    assert row["segments"] == {"0": [[1, 1000], [2, 5000], [1, None]]}
    assert [(m["queue"], m["from"], m["to"], m["id"]) for m in row["moves"]] == [(2, 1, 2, "m3")]

    async def describe(cfg: object, name: str) -> dict[str, object]:
        return row

    monkeypatch.setattr(admin, "topic_describe", describe)
    path = tmp_path / "cluster.toml"
    path.write_text(CONFIG)
    result = CliRunner().invoke(cli, ["admin", "topic", "describe", "--config", str(path), "t"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == [
        "  queue 0 moved: set 1 up to offset 1000, then set 2 up to offset 5000, then set 1",
        "  queue 2 moving: set 1 -> set 2 (move m3)",
    ]


def test_a_blocked_move_can_still_be_cancelled() -> None:
    from phxq.store.move_entries import CancelMoveEntry
    from phxq.store.move_state import MoveCancelled

    log = Log()
    [pending] = log.apply(schedule())
    blocked(log.apply(SEAL)[0])
    assert log.apply(encode_move(CancelMoveEntry("t", 0, "m1"))) == [MoveCancelled("m1")]
    log.apply(encode_cancel(scheduled_id(pending), DUE))
    [refused] = log.apply(SEAL)  # nothing pending now, but the move was withdrawn
    assert isinstance(refused, Rejected) and "cancelled" in str(refused.error)
    assert not log.state.moves.sealed
