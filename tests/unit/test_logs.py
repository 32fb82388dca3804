"""phxq.logs: JSON log lines and the rate-limited traceback log."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from phxq.logs import JsonFormatter, RateLimitedLog


def test_a_json_line_carries_the_fields_and_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "phxq.x", logging.WARNING, __file__, 1, "a %s", ("b",), exc_info=sys.exc_info()
        )
    row = json.loads(JsonFormatter("store1").format(record))
    assert row["level"] == "WARNING" and row["daemon"] == "store1" and row["message"] == "a b"
    assert "ValueError: boom" in row["traceback"] and row["time"].endswith("+00:00")


def test_one_record_per_interval_per_key_and_the_next_counts_the_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limited = RateLimitedLog(logging.getLogger("phxq.test"), interval=10.0)
    with caplog.at_level(logging.INFO, "phxq.test"):
        assert limited.log("h", logging.WARNING, "failed %d", 1, now=100.0)
        assert not limited.log("h", logging.WARNING, "failed %d", 2, now=105.0)
        assert not limited.log("h", logging.WARNING, "failed %d", 3, now=109.9)
        assert limited.log("other", logging.WARNING, "other %d", 1, now=106.0)
        assert limited.log("h", logging.WARNING, "failed %d", 4, now=110.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "failed 1",
        "other 1",
        "failed 4 (2 more like it in the last 10s not shown)",
    ]
