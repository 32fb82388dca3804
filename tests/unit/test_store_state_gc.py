"""The dedup window may remember millions of ids: the cyclic GC must not have to walk them
(a full collection walked every id, stalling the replica ~0.1-0.7 s per million)."""

from __future__ import annotations

import gc

from phxq.store.entries import encode_enqueue
from phxq.store.state import StoreState


def _gc_walk() -> int:
    """References a full collection follows: every tracked object's referents."""
    return sum(len(gc.get_referents(o)) for o in gc.get_objects())


def test_remembered_dedup_ids_leave_no_objects_for_the_gc_to_walk() -> None:
    state = StoreState(0, dedup_window=3600.0)
    gc.collect()
    before = _gc_walk()
    n = 20_000
    for i in range(1, n + 1):
        item = encode_enqueue("t", i % 4, 1000.0 + i / 1000, [[b"p", None, {}, f"id-{i}"]])
        state.apply(i, [item])
    gc.collect()
    gc.collect()  # a container is untracked once its contents were (at the next collection)
    grown = _gc_walk() - before
    # Bounded by the open tail of the expiry order (at most one chunk), not by n.
    assert grown < 4_000, grown
    # Every id is still remembered (nothing expired within the hour).
    again = encode_enqueue("t", 0, 1000.0 + n / 1000, [[b"p", None, {}, "id-1"]])
    result = state.apply(n + 1, [again])[0]
    assert getattr(result, "duplicates", None) == (True,)
