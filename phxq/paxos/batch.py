"""Batch values: one chosen instance carries a batch of opaque items.

- ``encode_batch(items) -> bytes``: ``b""`` for no items (the no-op), else a msgpack array of
  bin values.
- ``decode_batch(value) -> list[bytes]``: the inverse; ``b""`` decodes to ``[]``. Raises
  ``ProtocolError`` on anything that is not a well-formed batch.
- ``take_batch(pending, max_bytes, max_items)``: pops the items that form the next instance from
  a queue of ``(pid, item)`` (at least one item, even if it alone exceeds ``max_bytes``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import msgpack

from phxq.errors import ProtocolError

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def encode_batch(items: Sequence[bytes]) -> bytes:
    """Encode items as one instance value; no items is the no-op ``b""``."""
    if not items:
        return b""
    out = _packb(list(items), use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def decode_batch(value: bytes) -> list[bytes]:
    """Decode an instance value into its items (``b""`` -> ``[]``); ``ProtocolError`` if bad."""
    if not value:
        return []
    try:
        items = _unpackb(value, raw=False, use_list=True)
    except Exception as exc:
        raise ProtocolError(f"malformed batch value: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ProtocolError("malformed batch value: not a non-empty array")
    for item in items:
        if type(item) is not bytes:
            raise ProtocolError("malformed batch value: item is not bytes")
    return items


def take_batch(
    pending: deque[tuple[int, bytes]], max_bytes: int, max_items: int
) -> tuple[tuple[int, ...], list[bytes], int]:
    """Pop the next batch from ``pending``: ``(pids, items, item_bytes)``. Takes items in order
    while both bounds hold, and always at least one item."""
    pids: list[int] = []
    items: list[bytes] = []
    size = 0
    while pending and len(items) < max_items:
        item = pending[0][1]
        if items and size + len(item) > max_bytes:
            break
        pid, item = pending.popleft()
        pids.append(pid)
        items.append(item)
        size += len(item)
    return tuple(pids), items, size
