"""Where a replica's log lives: the interface the runtime needs, and the PLog behind it.

:class:`GroupStorage` is everything the replication runtime (replica, rejoin, snapshots) and a
daemon's read paths use of one group's durable log; :class:`~phxq.plog.GroupLog` implements it,
and the runtime simulation (``tests/sim``) runs the same replica code over an in-memory log
that loses unsynced writes on a crash. :class:`Storage` is one node's set of group logs: the
daemons use :class:`PlogStorage` (one ``LogWriter`` thread and one locked data directory).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, final

from phxq import metrics
from phxq.errors import StorageError
from phxq.plog import ChosenRecord, GroupLog, IndexEntry, LogWriter

__all__ = ["GroupStorage", "PlogStorage", "Storage"]

Ballot = tuple[int, int]


class GroupStorage(Protocol):
    """One group's durable Paxos log (see :mod:`phxq.plog` for the contract of each member)."""

    @property
    def directory(self) -> Path: ...
    @property
    def chosen_up_to(self) -> int: ...
    @property
    def checksum(self) -> int: ...
    @property
    def first_instance(self) -> int: ...
    @property
    def damaged(self) -> list[tuple[int, int]]: ...
    @property
    def needs_repair(self) -> bool: ...
    @property
    def has_state(self) -> bool: ...
    @property
    def promised(self) -> Ballot: ...
    @property
    def max_round(self) -> int: ...

    def append_promise(self, ballot: Ballot) -> asyncio.Future[None]: ...
    def append_accept(
        self, instance: int, ballot: Ballot, value: bytes
    ) -> asyncio.Future[None]: ...
    def append_chosen(
        self,
        instance: int,
        ballot: Ballot | None,
        checksum: int,
        value: bytes,
        *,
        index: Iterable[IndexEntry] = (),
        urgent: bool = True,
    ) -> asyncio.Future[None]: ...
    def iter_chosen_blocking(self) -> Iterator[tuple[int, bytes]]: ...
    def restore_index(self, instance: int, entries: Iterable[IndexEntry]) -> None: ...
    def accepted_values(self) -> dict[int, tuple[Ballot, bytes]]: ...
    def checksum_at(self, instance: int) -> int | None: ...
    async def read_chosen(
        self, from_instance: int, max_count: int, max_bytes: int
    ) -> list[ChosenRecord]: ...
    async def read_value(self, instance: int) -> bytes: ...
    def positions(
        self, queue_key: Hashable, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int]]: ...
    def instance_at_time(self, t: float) -> int | None: ...
    def retention_floor(
        self, *, keep_from: int, max_age: float | None, max_bytes: int | None, now_wall: float
    ) -> tuple[int, bool]: ...
    def truncation_point(self, instance: int) -> int: ...
    async def truncate_below(self, instance: int) -> int: ...
    async def reset_to(self, instance: int, checksum: int) -> bool: ...
    async def mark_repaired(self) -> None: ...
    def disk_bytes(self) -> int: ...
    async def close(self) -> None: ...


class Storage(Protocol):
    """One node's group logs."""

    async def start(self) -> None:
        """Claim the node's storage (``StorageError`` if another process holds it)."""
        ...

    async def close(self) -> None: ...

    def groups_without_log(self, groups: int) -> set[int]:
        """Blocking, before any group is opened: groups whose log is absent (lost or new)."""
        ...

    def group_directory(self, group: int) -> Path:
        """Where ``group``'s log and snapshot live."""
        ...

    async def open_group(self, group: int) -> GroupStorage:
        """Open (and recover) ``group``'s log."""
        ...

    def on_durable(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` on the loop each time appends became durable (or failed), right
        after their futures were resolved and in the same loop callback, so the runtime can
        act on them at once (their done callbacks run a loop turn later)."""
        ...


@final
class PlogStorage:
    """The PLog in ``data``: ``g0000/`` ... per group, one writer thread (group commit across
    every group, with the shared journal when there is more than one group) and an exclusive
    lock on ``data/LOCK`` while started (two daemons on one log would corrupt it)."""

    def __init__(
        self, data: Path, *, groups: int, segment_bytes: int = 64 << 20, journal_bytes: int = 0
    ) -> None:
        self.data = data
        self._groups = groups
        self._segment_bytes = segment_bytes
        self._journal_bytes = journal_bytes
        self._lock_fd: int | None = None
        self.writer: LogWriter | None = None

    async def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.data)
        self.writer = LogWriter(
            on_fsync=metrics.FSYNC_LATENCY.observe,
            # One group: every batch touches one segment file, and the journal would only
            # add a write (the lock service's single group, or a 1-group store cluster). A
            # journal left by an earlier run is redone all the same (journal_bytes 0).
            journal_dir=self.data,
            journal_bytes=self._journal_bytes if self._groups > 1 else 0,
        )
        await self.writer.start()

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def groups_without_log(self, groups: int) -> set[int]:
        return {g for g in range(groups) if not any(self.group_directory(g).glob("*.plog"))}

    def group_directory(self, group: int) -> Path:
        return self.data / f"g{group:04d}"

    def on_durable(self, hook: Callable[[], None]) -> None:
        assert self.writer is not None, "start() first"
        self.writer.after_resolve = hook

    async def open_group(self, group: int) -> GroupStorage:
        assert self.writer is not None, "start() first"
        return await GroupLog.open(
            self.group_directory(group), group, self.writer, segment_bytes=self._segment_bytes
        )


def _lock_directory(data: Path) -> int:
    """Take an exclusive advisory lock on ``data/LOCK`` for this process's life."""
    fd = os.open(data / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StorageError(
            f"data directory {data} is in use by another process ({exc.strerror}); "
            "two daemons must never share one"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
