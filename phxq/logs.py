"""How daemons log: :func:`setup_logging` (``--log-format text|json``, or ``PHXQ_LOG_FORMAT``)
and :class:`RateLimitedLog` for messages that can repeat at message rate.

Text: ``2026-01-01 12:00:00,123 store1 INFO phxq.host: ...``. JSON: one object per line,
``{"time": "2026-01-01T12:00:00.123+00:00", "level": "INFO", "daemon": "store1", "logger":
"phxq.host", "message": "...", "traceback": "..."}`` (``traceback`` only with an exception), for
log shippers that want fields, not regexes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["LOG_FORMATS", "JsonFormatter", "RateLimitedLog", "setup_logging"]

LOG_FORMATS: Final = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def __init__(self, daemon: str) -> None:
        super().__init__()
        self.daemon = daemon

    def format(self, record: logging.LogRecord) -> str:
        row: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "daemon": self.daemon,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            row["traceback"] = self.formatException(record.exc_info)
        return json.dumps(row, default=str)


def setup_logging(daemon: str, log_format: str = "text", level: int = logging.INFO) -> None:
    """Log every record of this process to stderr, naming ``daemon`` (``store1``, ...)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(daemon))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {daemon} %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RateLimitedLog:
    """At most one full record (with its traceback) per ``interval`` seconds per key; the
    ones in between are counted and the next full record says how many were left out. For
    failures that can repeat per message (a handler raising on every delivery)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(
        self,
        key: str,
        level: int,
        msg: str,
        *args: object,
        exc_info: Any = None,
        now: float | None = None,
    ) -> bool:
        """Log (True) unless ``key`` logged within ``interval`` (False: counted instead)."""
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return False
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        if skipped:
            msg += f" ({skipped} more like it in the last {now - (last or now):.0f}s not shown)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True
