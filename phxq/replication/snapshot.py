"""A group's durable state snapshot: the state machine as of the log's ``first_instance - 1``.

The PLog drops whole segments below a floor (retention); what those instances did to the state
(cursors, dedup window, replay ids) must survive them. Before truncating to ``first_instance =
F``, the replica builds the state as of ``F - 1`` (the previous snapshot plus the instances about
to go) and writes it here; recovery restores it and replays the retained log from ``F``. The same
bytes go to a peer that is behind every peer's floor (snapshot transfer).

File ``<group dir>/snapshot``: ``[u32 crc32c of body][body]``, body = msgpack ``[1, instance,
checksum, state]`` where ``checksum`` is the chain checksum at ``instance`` and ``state`` the
state machine's own snapshot bytes. Written to a temporary file, fdatasynced, renamed over the
old one, and the directory fsynced: a crash leaves the old or the new snapshot, never a mix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import crc32c
import msgpack

from phxq.errors import ProtocolError, StorageError
from phxq.plog.durable import replace_durably

FILE: Final = "snapshot"
_VERSION: Final = 1
_CRC = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine's bytes as of ``instance``, whose chain checksum is ``checksum``."""

    instance: int
    checksum: int
    state: bytes


def encode_snapshot(snap: Snapshot) -> bytes:
    body: bytes = msgpack.packb(
        [_VERSION, snap.instance, snap.checksum, snap.state], use_bin_type=True
    )
    return _CRC.pack(crc32c.crc32c(body)) + body


def decode_snapshot(data: bytes) -> Snapshot:
    """The snapshot in ``data``; ``ProtocolError`` if it is damaged or malformed (it may come
    from a peer)."""
    if len(data) < _CRC.size:
        raise ProtocolError("snapshot too short")
    (crc,) = _CRC.unpack_from(data)
    body = bytes(data[_CRC.size :])
    if crc32c.crc32c(body) != crc:
        raise ProtocolError("snapshot checksum mismatch")
    try:
        fields = msgpack.unpackb(body, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"undecodable snapshot: {type(exc).__name__}") from None
    if not (isinstance(fields, list) and len(fields) == 4 and fields[0] == _VERSION):
        raise ProtocolError("snapshot: unknown layout")
    _, instance, checksum, state = fields
    if not (
        isinstance(instance, int)
        and isinstance(checksum, int)
        and isinstance(state, bytes)
        and instance >= 0
        and 0 <= checksum < 1 << 64
    ):
        raise ProtocolError("snapshot: bad field types")
    return Snapshot(instance, checksum, state)


def write_snapshot(directory: Path, snap: Snapshot) -> None:
    """Durably replace ``directory``'s snapshot (blocking: run it in a thread)."""
    try:
        replace_durably(directory / FILE, encode_snapshot(snap))
    except OSError as exc:
        raise StorageError(f"cannot write snapshot in {directory}: {exc}") from exc


def read_snapshot(directory: Path) -> Snapshot | None:
    """``directory``'s snapshot, or None if it has none. ``StorageError`` if it is damaged: the
    log below its floor is gone, so the replica cannot serve without a snapshot from a peer."""
    try:
        data = (directory / FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read snapshot in {directory}: {exc}") from exc
    try:
        return decode_snapshot(data)
    except ProtocolError as exc:
        raise StorageError(f"damaged snapshot in {directory}: {exc.message}") from exc
