"""The on-disk record format of the PLog (pure: bytes in, values out).

Every record is one frame::

    offset  size  field
    0       4     length     u32 LE, the whole record (header + payload), >= HEADER_SIZE
    4       4     crc        u32 LE, CRC32C of bytes [0:4] followed by bytes [8:length]
    8       1     kind       see ``Kind``
    9       8     instance   u64 LE
    17      8     round      u64 LE  \\ ballot
    25      4     node       u32 LE  /
    29      ...   payload    kind-specific

The checksum is CRC32C (Castagnoli): it detects every burst error up to 32 bits and all odd
bit-flip counts in a frame, and the ``crc32c`` package computes it with the SSE4.2/ARMv8 CRC
instruction (about 0.3 µs per 4 KiB here), so checking every record on every read and at every
start-up costs next to nothing. It covers the length field too, so a corrupted length can never
make the scanner accept a frame of the wrong size. A cryptographic hash would add latency for no
gain: we guard against media and torn-write errors, not an adversary with write access.

A length word of zero is never valid (the minimum is ``HEADER_SIZE``); preallocated segment space
is zero-filled, so a zero word means "nothing written here".

Kinds and payloads:

``BATCH``       constant 29-byte header that starts every batch the writer thread writes and
                syncs in one go (see ``writer``); recovery uses it to tell a torn tail from
                corruption in the middle.
``CHECKPOINT``  first record of every segment: the group's state when the segment was opened
                (instance = chosen_up_to, ballot = promised, payload = checksum u64, max_round
                u64, first_instance u64, checksum at first_instance - 1 u64), so a segment can
                be read without the ones before it.
``PROMISE``     ballot = promised ballot.
``ACCEPT``      instance, ballot, payload = value.
``CHOSEN``      a mark: instance chosen with the value of this log's ACCEPT(instance, ballot);
                payload = chain checksum u64.
``CHOSEN_VALUE``  instance chosen with this value (learned without a local accept); ballot may be
                (0, 0); payload = chain checksum u64 + value.
``TRUNCATED``   instance = the new lowest retained instance; payload = the chain checksum of
                the instance just below it u64.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from crc32c import crc32c

__all__ = [
    "BATCH_RECORD",
    "HEADER_SIZE",
    "Kind",
    "Record",
    "encode",
    "encode_accept",
    "encode_checkpoint",
    "encode_chosen_mark",
    "encode_chosen_value",
    "encode_promise",
    "encode_truncated",
    "parse_at",
]

Ballot = tuple[int, int]

_HEADER = struct.Struct("<IIBQQI")
HEADER_SIZE = _HEADER.size  # 29
_LEN = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CHECKPOINT = struct.Struct("<QQQQ")
MAX_RECORD = (1 << 32) - 1


class Kind(enum.IntEnum):
    BATCH = 1
    CHECKPOINT = 2
    PROMISE = 3
    ACCEPT = 4
    CHOSEN = 5
    CHOSEN_VALUE = 6
    TRUNCATED = 7


_KINDS = frozenset(int(k) for k in Kind)


def encode(kind: int, instance: int, ballot: Ballot, payload: bytes = b"") -> bytes:
    """One framed record. The hot path: one ``struct.pack``, one concatenation, one CRC."""
    length = HEADER_SIZE + len(payload)
    if length > MAX_RECORD:
        raise ValueError(f"record of {length} bytes exceeds the frame limit")
    body = _HEADER.pack(length, 0, kind, instance, ballot[0], ballot[1]) + payload
    crc = crc32c(memoryview(body)[8:], crc32c(body[:4]))
    return body[:4] + _LEN.pack(crc) + body[8:]


BATCH_RECORD = encode(Kind.BATCH, 0, (0, 0))


def encode_promise(ballot: Ballot) -> bytes:
    return encode(Kind.PROMISE, 0, ballot)


def encode_accept(instance: int, ballot: Ballot, value: bytes) -> bytes:
    return encode(Kind.ACCEPT, instance, ballot, value)


def encode_chosen_mark(instance: int, ballot: Ballot, checksum: int) -> bytes:
    return encode(Kind.CHOSEN, instance, ballot, _U64.pack(checksum))


def encode_chosen_value(instance: int, ballot: Ballot, checksum: int, value: bytes) -> bytes:
    return encode(Kind.CHOSEN_VALUE, instance, ballot, _U64.pack(checksum) + value)


def encode_checkpoint(
    chosen_up_to: int,
    checksum: int,
    promised: Ballot,
    max_round: int,
    first_instance: int,
    floor_checksum: int,
) -> bytes:
    return encode(
        Kind.CHECKPOINT,
        chosen_up_to,
        promised,
        _CHECKPOINT.pack(checksum, max_round, first_instance, floor_checksum),
    )


def encode_truncated(first_instance: int, floor_checksum: int) -> bytes:
    return encode(Kind.TRUNCATED, first_instance, (0, 0), _U64.pack(floor_checksum))


@dataclass(frozen=True, slots=True)
class Record:
    """One valid record found at ``offset`` of a buffer; ``payload`` is a zero-copy view."""

    offset: int
    length: int
    kind: Kind
    instance: int
    ballot: Ballot
    payload: memoryview

    @property
    def checksum(self) -> int:
        """Chain checksum (CHOSEN, CHOSEN_VALUE, CHECKPOINT)."""
        return int(_U64.unpack_from(self.payload, 0)[0])

    @property
    def value(self) -> memoryview:
        """The value bytes (ACCEPT, CHOSEN_VALUE)."""
        return self.payload[8:] if self.kind == Kind.CHOSEN_VALUE else self.payload

    def checkpoint(self) -> tuple[int, int, int, int]:
        """(checksum, max_round, first_instance, floor checksum) of a CHECKPOINT record."""
        a, b, c, d = _CHECKPOINT.unpack_from(self.payload, 0)
        return int(a), int(b), int(c), int(d)


_MIN_PAYLOAD = {
    Kind.CHOSEN: 8,
    Kind.CHOSEN_VALUE: 8,
    Kind.CHECKPOINT: _CHECKPOINT.size,
    Kind.TRUNCATED: 8,
}


def parse_at(buf: memoryview, offset: int, end: int | None = None) -> Record | None:
    """The valid record starting at ``offset`` of ``buf`` (ending by ``end``), or None when the
    bytes there are not a whole record whose CRC holds (zeros, garbage, a torn write)."""
    limit = len(buf) if end is None else end
    if offset + HEADER_SIZE > limit:
        return None
    length, crc, kind, instance, rnd, node = _HEADER.unpack_from(buf, offset)
    if length < HEADER_SIZE or offset + length > limit or kind not in _KINDS:
        return None
    if crc32c(buf[offset + 8 : offset + length], crc32c(buf[offset : offset + 4])) != crc:
        return None
    k = Kind(kind)
    payload = buf[offset + HEADER_SIZE : offset + length]
    if len(payload) < _MIN_PAYLOAD.get(k, 0):
        return None
    return Record(offset, length, k, instance, (rnd, node), payload)


def iter_records(buf: memoryview, offset: int = 0) -> Iterator[Record]:
    """Valid records from ``offset`` on, stopping at the first position that holds none."""
    while True:
        rec = parse_at(buf, offset)
        if rec is None:
            return
        yield rec
        offset += rec.length
