"""Several encoded Paxos messages for one peer in one body (one frame, one decode).

A node sends every group's messages for a peer that one loop turn produced (Accepts, Accepted,
Chosen, heartbeats of many groups) as one ``px`` notification instead of one each. The wire
form is a msgpack array whose elements are the messages' own encodings (each a tagged array,
see :mod:`phxq.paxos.messages`), so a bundle is built by prefixing the array header to the
concatenated encodings (no re-encoding) and unpacked by one msgpack call. A single message is
sent as itself: its first element is an int tag, a bundle's first element is an array, so
``unbundle`` accepts both (and peers that send single messages keep working).

- ``bundle(payloads) -> bytes``: ``payloads`` are ``encode_message`` outputs (1 to
  ``MAX_BUNDLE`` of them); one payload is returned unchanged.
- ``unbundle(data) -> (messages, error)``: every well-formed message, in order, and the
  ``ProtocolError`` of the first malformed one (None when all are well-formed). Undecodable
  msgpack, an empty or over-long bundle: no messages and the error. Never another exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from phxq.errors import ProtocolError
from phxq.paxos.messages import Message, decode_raw

__all__ = ["MAX_BUNDLE", "bundle", "unbundle"]

MAX_BUNDLE = 1 << 16  # messages in one bundle (a u16 array header at most)


def bundle(payloads: Sequence[bytes]) -> bytes:
    n = len(payloads)
    if n == 1:
        return payloads[0]
    if not 1 < n <= MAX_BUNDLE - 1:
        raise ValueError(f"a bundle holds 1 to {MAX_BUNDLE - 1} messages, not {n}")
    header = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return header + b"".join(payloads)


def unbundle(data: Any) -> tuple[list[Message], ProtocolError | None]:
    if not isinstance(data, bytes | bytearray | memoryview):
        return [], ProtocolError("message is not bytes")
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ...)
        return [], ProtocolError(f"undecodable message: {type(exc).__name__}")
    if type(raw) is not list or not raw:
        return [], ProtocolError("message is not a tagged array")
    if type(raw[0]) is not list:
        try:
            return [decode_raw(raw)], None
        except ProtocolError as exc:
            return [], exc
    if len(raw) >= MAX_BUNDLE:
        return [], ProtocolError(f"a bundle of {len(raw)} messages (at most {MAX_BUNDLE - 1})")
    out: list[Message] = []
    for item in raw:
        try:
            out.append(decode_raw(item))
        except ProtocolError as exc:
            return out, exc
    return out, None
