"""The delivery window: strict order, per-key parallelism, and a cursor that only advances
over a contiguous prefix of finished messages."""

from __future__ import annotations

import random

import pytest

from phxq.consumer.window import DeliveryWindow
from phxq.errors import BadArgument


def drain_ready(window: DeliveryWindow) -> list[int]:
    out = []
    while (offset := window.next_ready()) is not None:
        out.append(offset)
    return out


def test_strict_order_is_one_at_a_time_in_offset_order() -> None:
    w = DeliveryWindow("strict", 1, capacity=8)
    w.add([(10, "a"), (20, "b"), (30, None)])
    assert drain_ready(w) == [10]
    w.finish(10)
    assert w.advance() == 10
    assert drain_ready(w) == [20]
    w.finish(20)
    assert drain_ready(w) == [30]
    assert w.advance() == 20
    w.finish(30)
    assert w.advance() == 30 and len(w) == 0


def test_per_key_runs_different_keys_in_parallel_up_to_concurrency() -> None:
    w = DeliveryWindow("per_key", 3, capacity=16)
    w.add([(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "d")])
    assert drain_ready(w) == [1, 2, 4]  # 3 waits for 1 (same key); the limit is 3
    w.finish(2)
    assert drain_ready(w) == [5]


def test_per_key_keeps_each_keys_order() -> None:
    w = DeliveryWindow("per_key", 4, capacity=16)
    w.add([(1, "a"), (2, "a"), (3, "a")])
    assert drain_ready(w) == [1]
    w.finish(1)
    assert drain_ready(w) == [2]


def test_cursor_advances_only_over_a_contiguous_finished_prefix() -> None:
    w = DeliveryWindow("per_key", 4, capacity=16)
    w.add([(1, "a"), (2, "b"), (3, "c"), (4, "d")])
    assert drain_ready(w) == [1, 2, 3, 4]
    w.finish(3)
    w.finish(4)
    assert w.advance() is None  # 1 and 2 are still in flight
    w.finish(1)
    assert w.advance() == 1
    w.finish(2)
    assert w.advance() == 4
    assert w.advanced == 4


def test_messages_without_a_key_are_independent() -> None:
    w = DeliveryWindow("per_key", 3, capacity=16)
    w.add([(1, None), (2, None), (3, None)])
    assert drain_ready(w) == [1, 2, 3]


@pytest.mark.parametrize("seed", range(20))
def test_random_completion_order_never_commits_past_an_unfinished_message(seed: int) -> None:
    rng = random.Random(seed)
    w = DeliveryWindow("per_key", rng.randint(1, 6), capacity=64)
    keys = [rng.choice("abcde") for _ in range(60)]
    w.add((i, k) for i, k in enumerate(keys))
    finished: set[int] = set()
    started_per_key: dict[str, list[int]] = {}
    in_flight: list[int] = []
    cursor = None
    while len(finished) < 60:
        ready = drain_ready(w)
        for offset in ready:
            # A key's messages start in offset order, never while an earlier one is unfinished.
            assert all(o in finished for o in started_per_key.get(keys[offset], []))
            started_per_key.setdefault(keys[offset], []).append(offset)
        in_flight += ready
        assert len(in_flight) <= w.concurrency
        done = in_flight.pop(rng.randrange(len(in_flight)))
        w.finish(done)
        finished.add(done)
        advanced = w.advance()
        if advanced is not None:
            cursor = advanced
        if cursor is not None:
            assert all(o in finished for o in range(cursor + 1))
    assert cursor == 59


def test_misuse_is_refused() -> None:
    with pytest.raises(BadArgument):
        DeliveryWindow("strict", 2)
    with pytest.raises(BadArgument):
        DeliveryWindow("random", 1)
    w = DeliveryWindow("strict", 1, capacity=2)
    w.add([(5, None)])
    with pytest.raises(BadArgument):
        w.add([(5, None)])  # not after the last one
    with pytest.raises(BadArgument):
        w.finish(5)  # not in flight
    w.add([(6, None)])
    with pytest.raises(BadArgument):
        w.add([(7, None)])  # full


def test_clear_forgets_everything_but_the_advanced_count() -> None:
    w = DeliveryWindow("strict", 1, capacity=4)
    w.add([(1, None), (2, None)])
    w.finish(drain_ready(w)[0])
    w.advance()
    w.clear()
    assert len(w) == 0 and w.in_flight == 0 and w.last_added is None and w.advanced == 1
    w.add([(1, None)])  # a replay may read the same offsets again
