"""The client's delay / deliver_at arguments and scheduled ids: typed errors before anything is
sent, and the CLI's --delay / --at forms."""

from __future__ import annotations

import time

import pytest

from phxq.client.client import (
    MAX_SCHEDULE_SECONDS,
    _parse_scheduled_id,
    _when,
    parse_when,
)
from phxq.errors import BadArgument
from phxq.store import scheduler


def test_when_takes_one_of_delay_or_deliver_at() -> None:
    assert _when(None, None) is None
    assert _when(10, None) == ["delay", 10.0]
    assert _when(None, 1.5e9) == ["at", 1.5e9]  # in the past: released at once
    assert _when(40 * 86400, None) == ["delay", 40 * 86400.0]


@pytest.mark.parametrize(
    ("delay", "deliver_at"),
    [
        (1, 2.0),
        (-1, None),
        (float("nan"), None),
        (float("inf"), None),
        (MAX_SCHEDULE_SECONDS + 1, None),
        (True, None),
        ("10", None),
        (None, float("-inf")),
        (None, time.time() + MAX_SCHEDULE_SECONDS + 86400),  # collected long before it runs
    ],
)
def test_bad_delay_or_deliver_at_is_a_bad_argument(delay: object, deliver_at: object) -> None:
    with pytest.raises(BadArgument):
        _when(delay, deliver_at)  # type: ignore[arg-type]


def test_the_store_checks_the_same_limits() -> None:
    assert scheduler.MAX_SCHEDULE_SECONDS == MAX_SCHEDULE_SECONDS
    assert scheduler.due_time(["delay", 5], 100.0) == 105.0
    assert scheduler.due_time(["at", 50], 100.0) == 50.0
    for bad in (["delay", -1], ["at", float("nan")], ["soon", 1], [1, 2], "delay", ["delay"]):
        with pytest.raises(BadArgument):
            scheduler.due_time(bad, 100.0)


def test_scheduled_ids_round_trip_and_reject_garbage() -> None:
    assert _parse_scheduled_id("orders.eu/3/1048576") == ("orders.eu", 3, 1048576)
    for bad in ("", "orders/3", "orders/x/1", "/3/1", "orders/3/-1", 12):
        with pytest.raises(BadArgument):
            _parse_scheduled_id(bad)


def test_cli_forms_of_delay_and_at() -> None:
    assert parse_when("10m", None) == {"delay": 600.0}
    assert parse_when(None, "1700000000") == {"deliver_at": 1700000000.0}
    assert parse_when(None, "2030-01-01T00:00:00+00:00") == {"deliver_at": 1893456000.0}
    assert parse_when(None, None) == {}
    for delay, at in (("soon", None), (None, "tomorrow"), ("1m", "1700000000")):
        with pytest.raises(BadArgument):
            parse_when(delay, at)
