"""``SegmentFile``: one segment file of one group, shared by the loop (which queues records on
it) and the writer thread (which writes and syncs them): see :mod:`phxq.plog.writer`."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from phxq.errors import StorageError
from phxq.plog.records import BATCH_RECORD

if TYPE_CHECKING:
    from phxq.plog.writer import LogWriter

__all__ = ["SegmentFile"]


class SegmentFile:
    """One segment file of one group, as the writer sees it.

    Loop side: :meth:`append` (offsets are chosen by the caller, the :class:`GroupLog`, which
    tracks ``size`` and its own append position). Writer side: everything else. ``durable_end``
    is the end of the bytes known to be on disk (written and synced)."""

    def __init__(
        self,
        path: Path,
        number: int,
        size: int,
        *,
        predecessor: SegmentFile | None = None,
        existing: bool = False,
        written_end: int = 0,
    ) -> None:
        self.path = path
        self.number = number
        self.size = size
        self.max_instance = 0
        self.append_pos = written_end  # loop: end of everything queued
        self.predecessor = predecessor
        self.existing = existing
        self.lock = threading.Lock()
        self.data: list[bytes] = []
        self.futures: list[asyncio.Future[None] | None] = []
        self.queued = False  # in the writer's queue (its data will be taken in a coming pass)
        self.lazy_since = 0.0  # monotonic time its oldest lazy-only data was queued, 0 if none
        self.failed: StorageError | None = None
        self.sealed = False  # no more appends after what is queued
        self.rolled = False  # sealed because the log moved on: wants a record table when closed
        self.fd: int | None = None
        self.write_pos = written_end  # writer: end of what it has written
        self.durable_end = written_end
        self.zeroed_to = written_end if existing else 0
        self.journal_name: bytes | None = None  # path relative to the journal's directory
        self.journal_gen = 0  # journal generation of its last journaled write (0: none)

    def append(
        self,
        writer: LogWriter,
        record: bytes,
        future: asyncio.Future[None] | None,
        urgent: bool = True,
    ) -> int:
        """Queue one record (loop thread) right after everything queued before; returns its
        offset. The caller checks ``room`` first. A non-urgent record waits for the next urgent
        one (or ``lazy_delay``)."""
        with self.lock:
            if not self.data:
                self.data.append(BATCH_RECORD)
                self.futures.append(None)
                self.append_pos += len(BATCH_RECORD)
            offset = self.append_pos
            self.data.append(record)
            self.futures.append(future)
            self.append_pos += len(record)
            ready = urgent and not self.queued
            lazy = not urgent and not self.queued and not self.lazy_since
            if ready:
                self.queued = True
            elif lazy:
                self.lazy_since = time.monotonic()
        if ready:
            writer._ready(self)
        elif lazy:
            writer._lazy.append(self)
        return offset

    def room(self, length: int) -> bool:
        """Whether a record of ``length`` bytes still fits (counting a possible batch header)."""
        return self.append_pos + len(BATCH_RECORD) + length <= self.size

    def take(self) -> tuple[list[bytes], list[asyncio.Future[None] | None]]:
        with self.lock:
            data, futures = self.data, self.futures
            self.data, self.futures = [], []
            self.queued = False
            self.lazy_since = 0.0
        return data, futures

    def __repr__(self) -> str:
        return f"SegmentFile({self.path.name}, durable_end={self.durable_end})"
