"""The fault checker's delayed-message properties on hand-built histories: a clean one passes,
and an early, lost, twice-released or cancelled-but-released message is reported."""

from __future__ import annotations

from typing import Any

from tools.fault.checker import check

GROUP = "g"
Op = dict[str, Any]


def _history(*, cancel_done: bool | None = None) -> list[Op]:
    """d0 (due at t=5) released at offset 40 of queue 1 and delivered at t=5.2; d1 scheduled
    too and cancelled (when ``cancel_done``) or released at offset 50."""
    ops: list[Op] = []
    for key, due in (("d0", 5.0), ("d1", 6.0)):
        base = {"type": "schedule", "key": key, "seq": 0, "payload": f"{key}:0", "t_due": due}
        ops.append({**base, "phase": "invoke", "t": 1.0})
        ops.append({**base, "phase": "ok", "queue": 1, "scheduled_id": f"t/1/{key}", "t": 1.1})
    released = [("d0:0", 40, 5.2)]
    if cancel_done is not None:
        ops.append({"type": "cancel", "phase": "ok", "key": "d1", "done": cancel_done, "t": 1.2})
    if not cancel_done:
        released.append(("d1:0", 50, 6.3))
    for payload, offset, at in released:
        ops.append({"type": "read", "topic": "t", "queue": 1, "offset": offset,
                    "payload": payload, "t": 100.0})  # fmt: skip
        ops.append({"type": "deliver", "group": GROUP, "topic": "t", "queue": 1, "attempt": 1,
                    "key": payload[:2], "offset": offset, "payload": payload,
                    "consumer": "c1#a", "token": 5, "t": at})  # fmt: skip
    return ops


def _violated(ops: list[Op]) -> set[str]:
    return check(ops, groups=[GROUP]).properties_violated()


def test_released_once_on_time_passes_and_a_cancelled_one_never_appears() -> None:
    assert _violated(_history()) == set()
    assert _violated(_history(cancel_done=True)) == set()
    assert _violated(_history(cancel_done=False)) == set()  # released before the cancel


def test_delivered_before_its_due_time_is_early() -> None:
    ops = _history()
    next(op for op in ops if op["type"] == "deliver" and op["payload"] == "d1:0")["t"] = 5.9
    assert _violated(ops) == {"delayed-early"}


def test_acked_and_never_released_is_lost() -> None:
    ops = [op for op in _history() if op.get("payload") != "d1:0" or op["type"] == "schedule"]
    assert _violated(ops) == {"delayed-lost"}


def test_released_after_a_successful_cancel_is_reported() -> None:
    ops = _history(cancel_done=True)
    ops.append({"type": "read", "topic": "t", "queue": 1, "offset": 60, "payload": "d1:0",
                "t": 100.0})  # fmt: skip
    assert _violated(ops) == {"delayed-cancelled"}


def test_released_twice_is_a_stored_duplicate() -> None:
    ops = _history()
    ops.append({"type": "read", "topic": "t", "queue": 1, "offset": 70, "payload": "d0:0",
                "t": 100.0})  # fmt: skip
    assert "stored-dup" in _violated(ops)
