"""Durable file-system steps shared by the PLog and the store's small state files.

- ``fsync_dir(directory)``: make the directory's entries (created, renamed, deleted files)
  durable.
- ``replace_durably(path, data)``: atomically replace ``path`` with ``data``: a temporary file
  beside it, written whole and ``fdatasync``\\ ed, renamed over ``path``, then the directory
  fsynced. A crash leaves either the old file or the new one (and perhaps the temporary file).

Both block (run them in a thread from the event loop) and raise ``OSError``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "replace_durably"]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
