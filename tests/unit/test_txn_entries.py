"""Transaction log entries: they round-trip, and no malformed entry or snapshot raises anything
but ProtocolError; a half message is never cancelled and never released by a release entry."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq.errors import ProtocolError
from phxq.store.entries import Message, decode_entry, instance_messages, peek_entry
from phxq.store.schedule import Cancelled, Released
from phxq.store.schedule_entries import encode_cancel, encode_release, instance_scheduled
from phxq.store.state import StoreState
from phxq.store.txn import TxnBook
from phxq.store.txn_entries import (
    HELD,
    DecideEntry,
    DiscardEntry,
    PrepareEntry,
    TxnReleaseEntry,
    encode_prepare,
    encode_txn,
)

MSG = Message(b"p", "k", {"h": "v"}, None)


@pytest.mark.parametrize(
    "entry",
    [
        PrepareEntry("t1", 2, 3, 5.0, "pg", "orders", 1, 10.0, (MSG, MSG), ((2, 3), (0, 4))),
        PrepareEntry("t1", 0, 0, 0.5, None, "orders", 0, 10.0, (MSG,)),
        # Across store sets: the home on set 2, parts on other sets named by (group, part, set).
        PrepareEntry("t1", 1, 0, 0.5, None, "orders", 0, 10.0, (MSG,), (), 2),
        PrepareEntry("t1", 1, 0, 5.0, "pg", "o", 1, 10.0, (MSG,), ((1, 0), (1, 1, 2)), None),
        DecideEntry("t1", True, 11.0, "producer"),
        DecideEntry("t1", False, 11.0, "max_age"),
        TxnReleaseEntry("t1", "orders", 1, 12.0, (1 << 20,), (HELD,), (MSG,)),
        DiscardEntry("t1", 13.0),
    ],
)
def test_entries_round_trip(entry: object) -> None:
    assert decode_entry(encode_txn(entry)) == entry  # type: ignore[arg-type]


def test_half_messages_are_scheduled_and_a_release_is_readable() -> None:
    prepare = encode_prepare("t", 0, 1, 5.0, None, "orders", 2, 10.0, [[b"a", None, {}, None]])
    ((entry, msg, due),) = instance_scheduled([prepare])
    assert (entry.topic, entry.queue, msg.payload, due) == ("orders", 2, b"a", HELD)
    assert instance_messages([prepare]) == []  # invisible
    release = encode_txn(TxnReleaseEntry("t", "orders", 2, 12.0, (5,), (HELD,), (MSG,)))
    ((readable, m),) = instance_messages([release])
    assert readable.enqueued_at == 12.0 and m.payload == b"p"


def test_a_half_message_is_never_cancelled_nor_released_by_a_delayed_release() -> None:
    state = StoreState(0, dedup_window=0)
    prepare = encode_prepare("t", 0, 1, 5.0, None, "orders", 0, 10.0, [[b"a", None, {}, None]])
    state.apply(1, [prepare])
    (sid,) = state.txns.pending_ids("t", state.schedule)
    assert state.apply(2, [encode_cancel(sid, HELD)]) == [Cancelled(False)]
    release = encode_release("orders", 0, HELD * 2, [sid], [HELD], [[b"a", None, {}]])
    assert state.apply(3, [release]) == [Released((None,))]
    assert state.txns.pending_ids("t", state.schedule) == [sid]
    assert state.schedule.oldest_id() == sid  # retention keeps its record


TAGS = st.sampled_from([9, 10, 11, 12])
ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)
FIELDS = st.recursive(ATOMS, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(tag=TAGS, fields=st.lists(FIELDS, max_size=12))
def test_malformed_entries_raise_only_protocol_error(tag: int, fields: list[object]) -> None:
    data = msgpack.packb([tag, *fields], use_bin_type=True)
    for decoder in (decode_entry, peek_entry):
        with contextlib.suppress(ProtocolError):  # the only error allowed
            decoder(data)
    state = StoreState(0, dedup_window=1.0)
    (result,) = state.apply(1, [data])  # a bad item never stops the replica
    assert state.applied_up_to == 1
    del result


@settings(max_examples=200, deadline=None)
@given(value=FIELDS)
def test_malformed_transaction_book_snapshot_raises_only_protocol_error(value: object) -> None:
    with contextlib.suppress(ProtocolError):  # the only error allowed
        TxnBook.restore(value)


def test_a_prepare_entry_names_another_sets_home_only_in_a_thirteenth_field() -> None:
    wire = [[b"a", None, {}, None]]
    local = msgpack.unpackb(encode_prepare("t", 1, 0, 5.0, None, "o", 1, 10.0, wire, [[1, 0]]))
    assert len(local) == 12 and local[11] == [[1, 0]]  # bytes as before sets
    remote = encode_prepare("t", 1, 0, 5.0, None, "o", 1, 10.0, wire, (), home_set=3)
    assert msgpack.unpackb(remote)[12:] == [3]
    head = peek_entry(remote)
    assert (head.home, head.home_set) == (1, 3)
    for bad in ([*msgpack.unpackb(remote), 0], [*msgpack.unpackb(remote)[:12], -1]):
        with pytest.raises(ProtocolError):
            decode_entry(msgpack.packb(bad, use_bin_type=True))


def test_a_participant_of_another_sets_home_is_never_the_home_and_survives_a_snapshot() -> None:
    """Group 1 of set 1 holding a part of a transaction whose home is group 1 of set 2: not
    its home (the sweeper must not decide it there); the book's snapshot keeps the home set,
    and a book without one snapshots exactly as before sets (9-element rows)."""
    state = StoreState(1, dedup_window=60.0)
    wire = [[b"a", None, {}, None]]
    state.apply(1, [encode_prepare("x", 1, 1, 5.0, None, "o", 1, 10.0, wire, (), home_set=2)])
    expect = [[1, 0], [1, 1, 1]]
    state.apply(2, [encode_prepare("y", 1, 0, 5.0, None, "o", 1, 10.0, wire, expect)])
    book = state.txns
    assert not book.open["x"].is_home(1) and book.open["y"].is_home(1)
    rows = {row[0]: row for row in book.snapshot()[1]}
    assert len(rows["x"]) == 10 and rows["x"][9] == 2 and len(rows["y"]) == 9
    again = TxnBook.restore(book.snapshot())
    assert again.snapshot() == book.snapshot() and again.open["x"].home_set == 2
    assert again.open["y"].expect == {(1, 0), (1, 1, 1)}
