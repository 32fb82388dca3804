"""Opt-in timestamps along an enqueue's critical path, for ``bench/trace_path.py``.

With ``PHXQ_TRACE=<prefix>`` in a process's environment, :func:`mark` records
``(time.monotonic_ns(), name)`` in memory and the process writes them to ``<prefix>.<pid>``
(one ``"<ns> <name>"`` line each) when it exits. ``CLOCK_MONOTONIC`` is one clock for every
process of the machine, so the client's and the stores' marks can be merged into one timeline.
Without the variable, call sites cost one attribute test: ``if trace.ON: trace.mark("...")``.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import Final

__all__ = ["ON", "mark"]

_PREFIX: Final = os.environ.get("PHXQ_TRACE", "")
ON: Final = bool(_PREFIX)
_LIMIT: Final = 2_000_000  # marks kept per process (~100 MB at most)
_marks: list[tuple[int, str]] = []


def mark(name: str) -> None:
    if len(_marks) < _LIMIT:
        _marks.append((time.monotonic_ns(), name))


def _dump() -> None:
    if _marks:
        with open(f"{_PREFIX}.{os.getpid()}", "w") as fh:
            fh.writelines(f"{t} {name}\n" for t, name in _marks)


if ON:
    atexit.register(_dump)
