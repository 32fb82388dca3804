"""Queue moves, the pure parts: the move entries' codec, seal/cancel/adopt in the store state
machine (phxq.store.move_state), and the cluster map's move records and segment history."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phxq.config import parse_config
from phxq.errors import BadArgument, ProtocolError, QueueMoved, StaleMap
from phxq.mapstore import load_local
from phxq.routing import INDEX_BITS, make_offset
from phxq.store.entries import decode_entry, peek_entry
from phxq.store.move_entries import AdoptEntry, CancelMoveEntry, SealEntry, encode_move
from phxq.store.move_state import MAX_INDEX, Adopted, MoveCancelled, Sealed
from phxq.store.state import Committed, Enqueued, Rejected, StoreState
from phxq.topology import Topology

from .test_store_state import Log, commit, enq

SEAL = encode_move(SealEntry("t", 0, "m1", 2))


def error_of(result: object) -> Exception:
    assert isinstance(result, Rejected), result
    return result.error


def adopt_of(sealed: Sealed, end: int | None, **kw: object) -> bytes:
    fields: dict[str, object] = {"cursors": (), "dedup": (), "move_id": "m1", "source": 1}
    fields.update(kw)
    return encode_move(AdoptEntry("t", 0, sealed=sealed.sealed, end=end, **fields))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ entries


def test_move_entries_round_trip_through_the_store_codec() -> None:
    entries = [
        SealEntry("t", 3, "m1", 2),
        CancelMoveEntry("t", 3, "m1"),
        AdoptEntry("t", 3, "m1", 1, 99 << 20, 98 << 20, (("g", 5, 7),), ((1.5, "d1", 4),)),
        AdoptEntry("t", 0, "m2", 2, 5, None, (), ()),
    ]
    for entry in entries:
        data = encode_move(entry)
        assert decode_entry(data) == entry
        assert peek_entry(data) == entry


@pytest.mark.parametrize(
    "fields",
    [
        [13, "t", 0, "m1"],  # a field short
        [13, "t", -1, "m1", 2],  # negative queue
        [13, "t", 0, "", 2],  # empty move id
        [13, "t", 0, "x" * 200, 2],  # move id too long
        [14, "t", 0, 5],  # move id not a string
        [15, "t", 0, "m", 1, 5, None, [["g", 1]], []],  # a cursor short
        [15, "t", 0, "m", 1, 5, None, [], [[float("nan"), "d", 1]]],  # NaN time
        [15, "t", 0, "m", 1, 5, None, {}, []],  # cursors not an array
        [15, "t", 0, "m", 1, "5", None, [], []],  # sealed not an int
    ],
)
def test_malformed_move_entries_are_protocol_errors(fields: list[object]) -> None:
    with pytest.raises(ProtocolError):
        peek_entry(msgpack.packb(fields, use_bin_type=True))


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(st.sampled_from([13, 14, 15]), st.lists(_VALUES, max_size=10))
def test_no_field_values_crash_the_move_decoder(tag: int, values: list[object]) -> None:
    data = msgpack.packb([tag, *values], use_bin_type=True)
    try:
        entry = peek_entry(data)
    except ProtocolError:
        return
    assert decode_entry(encode_move(entry)) == entry  # what decodes is a well-formed entry


# -------------------------------------------------------------------------------- state


def test_seal_refuses_enqueues_after_it_and_is_idempotent() -> None:
    log = Log()
    log.apply(enq("t", 0, "a"), enq("t", 1, None))
    [first] = log.apply(SEAL)
    assert isinstance(first, Sealed) and first.target == 2
    assert first.sealed == make_offset(2, MAX_INDEX)  # above every message of instance <= 2
    # The same item in the same instance as an enqueue: earlier items are in, later are out.
    results = log.apply(enq("t", 0, "b"), SEAL, enq("t", 0, "c"), enq("t", 1, "x"))
    assert isinstance(results[0], Rejected) and isinstance(results[0].error, QueueMoved)
    assert results[1] == first  # sealing again answers the same seal
    moved = error_of(results[2])
    assert isinstance(moved, QueueMoved) and isinstance(moved, StaleMap)
    assert moved.data == {"set": 2, "sealed": first.sealed, "move": "m1"}
    assert isinstance(results[3], Enqueued)  # another queue of the group is untouched
    # Another move of a sealed queue, and a cancel of the sealed move, are refused.
    assert isinstance(error_of(log.apply(encode_move(SealEntry("t", 0, "m2", 3)))[0]), BadArgument)
    assert "cannot be cancelled" in str(
        error_of(log.apply(encode_move(CancelMoveEntry("t", 0, "m1")))[0])
    )
    # Commits still work on the sealed queue, up to its last message.
    assert log.apply(commit(make_offset(1, 0), 1))[0] == Committed(make_offset(1, 0))
    # Reads: up to the seal only, then nothing (the service answers QueueMoved).
    moves = log.state.moves
    pos, last, tenure = moves.read_window(("t", 0), None)
    assert pos is None and last == 2 and tenure is not None and tenure.sealed == first.sealed
    pos, last, tenure = moves.read_window(("t", 0), first.sealed)
    assert last == 2 and tenure is not None and tenure.sealed == first.sealed


def test_a_cancelled_move_is_never_sealed() -> None:
    log = Log()
    log.apply(enq("t", 0, "a"))
    assert log.apply(encode_move(CancelMoveEntry("t", 0, "m1"))) == [MoveCancelled("m1")]
    assert "cancelled" in str(error_of(log.apply(SEAL)[0]))
    assert isinstance(log.apply(enq("t", 0, "b"))[0], Enqueued)  # the queue lives on here


def test_adopt_continues_offsets_above_the_seal_with_cursors_and_dedup() -> None:
    source = Log()
    for i in range(5):
        source.apply(enq("t", 0, f"d{i}"))
    source.apply(commit(make_offset(3, 0), 7))
    [sealed] = source.apply(SEAL)
    assert isinstance(sealed, Sealed)
    target = Log()  # a fresh group: its instances are far below the source's
    target.apply(enq("t", 1, None))
    adopt = adopt_of(
        sealed,
        make_offset(5, 0),
        cursors=(("g", make_offset(3, 0), 7),),
        dedup=((1000.0, "d4", make_offset(5, 0)),),
    )
    [done] = target.apply(adopt)
    assert isinstance(done, Adopted) and done.start == 2
    assert done.delta == (sealed.sealed >> INDEX_BITS) + 1 - 2
    assert target.apply(adopt) == [done]  # idempotent: the same move adopted once
    assert target.state.cursor("g", "t", 0) == make_offset(3, 0)
    [fresh, dup] = target.apply(enq("t", 0, "new"), enq("t", 0, "d4"))
    assert isinstance(fresh, Enqueued) and fresh.offsets[0] > sealed.sealed
    assert dup == Enqueued((make_offset(5, 0),), (True,))  # dedup carried over
    assert target.state.end_offset("t", 0) == fresh.offsets[0]
    # Reads on the target translate offsets back to log positions of its own tenure.
    moves = target.state.moves
    pos, last, _ = moves.read_window(("t", 0), make_offset(3, 0))  # a source offset
    assert pos == (1, MAX_INDEX) and last is None  # from the adopt on
    pos, _, _ = moves.read_window(("t", 0), fresh.offsets[0])
    assert pos == (4, 0)  # the instance it is stored at (4) and its index
    assert moves.offset(("t", 0), 4, 0) == fresh.offsets[0]
    # A commit above the seal moves the adopted cursor on; fencing tokens still apply.
    assert isinstance(target.apply(commit(fresh.offsets[0], 6))[0], Rejected)
    assert target.apply(commit(fresh.offsets[0], 8)) == [Committed(fresh.offsets[0])]


def test_a_queue_moved_away_and_back_keeps_its_segments_apart() -> None:
    a, b = Log(), Log()
    a.apply(enq("t", 0, None))
    [s1] = a.apply(SEAL)
    assert isinstance(b.apply(adopt_of(s1, make_offset(1, 0)))[0], Adopted)
    [on_b] = b.apply(enq("t", 0, None))
    [s2] = b.apply(encode_move(SealEntry("t", 0, "m2", 1)))
    assert isinstance(s2, Sealed) and s2.sealed > on_b.offsets[0] > s1.sealed  # type: ignore[union-attr]
    [back] = a.apply(adopt_of(s2, on_b.offsets[0], move_id="m2", source=2))  # type: ignore[union-attr]
    assert isinstance(back, Adopted)
    [again] = a.apply(enq("t", 0, None))
    assert isinstance(again, Enqueued) and again.offsets[0] > s2.sealed
    moves = a.state.moves
    # A read in the first segment stops at its seal; past it, it starts after the re-adopt.
    assert moves.read_window(("t", 0), None)[1] == 2
    pos, last, _ = moves.read_window(("t", 0), s2.sealed)
    assert pos == (back.start - 1, MAX_INDEX) and last is None


def test_snapshots_keep_moves() -> None:
    source = Log()
    source.apply(enq("t", 0, "a"))
    source.apply(encode_move(CancelMoveEntry("t", 0, "old")))
    [sealed] = source.apply(SEAL)
    target = Log()
    target.apply(adopt_of(sealed, make_offset(1, 0)))
    for log in (source, target):
        restored = StoreState.restore(log.state.snapshot())
        assert restored.snapshot() == log.state.snapshot()
        assert restored.moves.tenures == log.state.moves.tenures
        assert restored.moves.sealed.keys() == log.state.moves.sealed.keys()
        assert restored.moves.shift == log.state.moves.shift
    restored = StoreState.restore(source.state.snapshot())
    assert isinstance(restored.apply(2 + 1, [enq("t", 0, "z")])[0], Rejected)


# ---------------------------------------------------------------------------- the map

CONFIG = (
    """
[cluster]
groups = 4
"""
    + "".join(
        f'[[store]]\nid = {i}\nset = {1 + (i - 1) // 3}\naddr = "127.0.0.1:{7200 + i}"\ndata = "s{i}"\n'
        for i in range(1, 7)
    )
    + """
[[topic]]
name = "t"
queues = 4
"""
)


def test_the_map_records_moves_and_segments_and_round_trips() -> None:
    topo = Topology.from_config(parse_config(CONFIG))
    assert topo.placement["t"] == (1, 2, 1, 2)
    moving = topo.with_move("t", 0, 2, "m1", 10.0)
    assert moving.version == topo.version + 1 and moving.move_of("t", 0).target == 2  # type: ignore[union-attr]
    assert moving.with_move("t", 0, 2, "m1", 11.0) is moving  # the same move: unchanged
    with pytest.raises(BadArgument, match="already moving"):
        moving.with_move("t", 0, 2, "m9", 11.0)
    with pytest.raises(BadArgument, match="already"):
        topo.with_move("t", 1, 2, "m2", 1.0)  # on set 2 already
    with pytest.raises(BadArgument, match="no store set 3"):
        topo.with_move("t", 0, 3, "m2", 1.0)
    assert Topology.from_wire(moving.to_wire()) == moving
    done = moving.moved("t", 0, "m1", 1000)
    assert done.placement["t"][0] == 2 and done.move_of("t", 0) is None
    assert done.moved("t", 0, "m1", 1000) is done  # completing twice: a no-op
    assert done.segments("t", 0) == [(1, 1000), (2, None)]
    assert [done.set_for_offset("t", 0, a) for a in (None, 5, 999, 1000, 2000)] == [1, 1, 1, 2, 2]
    back = done.with_move("t", 0, 1, "m2", 20.0).moved("t", 0, "m2", 5000)
    assert back.segments("t", 0) == [(1, 1000), (2, 5000), (1, None)]
    assert [back.set_for_offset("t", 0, a) for a in (999, 1000, 4999, 5000)] == [1, 2, 2, 1]
    assert Topology.from_wire(back.to_wire()) == back
    assert moving.with_move("t", 2, 2, "m3", 1.0).without_move("t", 2, "m3").moves == moving.moves


@pytest.mark.parametrize(
    "damage",
    [
        lambda w: w["moves"].append(
            {"id": "x", "topic": "nope", "queue": 0, "from": 1, "to": 2, "started_at": 0}
        ),
        lambda w: w["moves"].append(
            {"id": "x", "topic": "t", "queue": 9, "from": 1, "to": 2, "started_at": 0}
        ),
        lambda w: w["moves"].append(
            {"id": "x", "topic": "t", "queue": 0, "from": 1, "to": 7, "started_at": 0}
        ),
        lambda w: w["moves"].append(
            {"id": "", "topic": "t", "queue": 0, "from": 1, "to": 2, "started_at": 0}
        ),
        lambda w: w["moves"].append({"topic": "t"}),
        lambda w: w["history"].update({"t": {"0": [[1, 5], [2, 3]]}}),  # seals must increase
        lambda w: w["history"].update({"t": {"7": [[1, 5]]}}),
        lambda w: w["history"].update({"zz": {"0": [[1, 5]]}}),
        lambda w: w["history"].update({"t": {"0": [[1]]}}),
    ],
)
def test_a_damaged_map_is_a_protocol_error(damage: object) -> None:
    wire = Topology.from_config(parse_config(CONFIG)).to_wire()
    damage(wire)  # type: ignore[operator]
    with pytest.raises(ProtocolError):
        Topology.from_wire(wire)


def test_admin_status_lists_the_moves_of_the_newest_map() -> None:
    from phxq.admin import ClusterStatus

    move = {"id": "m1", "topic": "t", "queue": 0, "from": 1, "to": 2, "started_at": 1.0}
    stores = {
        1: {"map_version": 3, "moves": []},  # behind: the move is newer than its map
        2: {"map_version": 4, "moves": [move]},
        3: {"error": "Unavailable: down"},
    }
    status = ClusterStatus(stores)
    row = {**move, "waiting": None}
    assert status.moves() == [row] and status.to_json()["moves"] == [row]
    assert ClusterStatus({1: {"error": "down"}}).moves() == []


async def test_concurrent_map_adoptions_save_one_at_a_time(tmp_path: Path) -> None:
    from phxq.store.mapfollow import MapFollower

    cfg = parse_config(CONFIG)
    seen: list[int] = []
    follower = MapFollower(cfg, tmp_path, None, lambda t: seen.append(t.version))
    base = Topology.from_config(cfg)
    maps = [replace(base, version=v) for v in (3, 1, 2, 5, 4)]
    results = await asyncio.gather(*(follower.adopt(t) for t in maps))
    assert follower.version == 5 and seen == sorted(seen) and results.count(True) == len(seen)
    assert load_local(tmp_path / "cluster-map.json") == maps[3]


def test_the_seal_carries_the_queues_own_dedup_ids_newest_first_within_a_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from phxq.store import move_service

    log = Log()
    positions: list[tuple[int, int]] = []
    for i in range(6):
        log.apply(enq("t", 0, f"q0-{i}"), enq("t", 1, f"q1-{i}"))
        positions.append((i + 1, 0))  # queue 0's message is index 0 of each instance
    [sealed] = log.apply(SEAL)

    class Glog:  # the queue index of queue 0 (what GroupLog.positions answers)
        def positions(
            self, key: object, after: tuple[int, int] | None, limit: int
        ) -> list[tuple[int, int]]:
            assert key == ("t", 0)
            return [p for p in positions if after is None or p > after][:limit]

    class Replica:
        state = log.state
        glog = Glog()

    rows = move_service._dedup_rows(Replica(), ("t", 0), sealed.sealed)  # type: ignore[union-attr]
    assert [r[1] for r in rows] == [f"q0-{i}" for i in range(6)]  # not queue 1's ids
    assert [r[2] for r in rows] == [make_offset(i + 1, 0) for i in range(6)]
    monkeypatch.setattr(move_service, "DEDUP_BYTES", 2 * (len("q0-0") + 24))
    rows = move_service._dedup_rows(Replica(), ("t", 0), sealed.sealed)  # type: ignore[union-attr]
    assert [r[1] for r in rows] == ["q0-4", "q0-5"]  # the newest ones
