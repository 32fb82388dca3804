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
