"""Where a message goes and how its position is written: keys -> queues -> groups, and offsets.

Public API (pure functions, shared by the store, the client and the tools)::

    queue_for_key(key: str, queues: int) -> int       # crc32(utf-8 key) % queues; stable forever
    group_for_queue(queue: int, groups: int) -> int   # queue % groups (DESIGN §3)
    make_offset(instance: int, index: int) -> int     # (instance << 20) | index
    split_offset(offset: int) -> tuple[int, int]      # inverse of make_offset
    MAX_MESSAGES_PER_INSTANCE = 1 << 20               # index is in [0, MAX_MESSAGES_PER_INSTANCE)

A key must map to the same queue in every process and every Python version, so the hash is
CRC-32 (zlib) of the key's UTF-8 bytes, never :func:`hash` (salted per process).

An offset names a message by the Paxos instance that chose its batch and its ordinal among all
messages of that batch (docs/contracts.md "Offsets"). Offsets of one queue increase with the
log but are sparse, because the other queues of the group share it. Invalid arguments raise
:class:`phxq.errors.BadArgument`.
"""

from __future__ import annotations

import zlib

from phxq import validate

__all__ = [
    "INDEX_BITS",
    "MAX_MESSAGES_PER_INSTANCE",
    "group_for_queue",
    "make_offset",
    "queue_for_key",
    "split_offset",
]

INDEX_BITS = 20
MAX_MESSAGES_PER_INSTANCE = 1 << INDEX_BITS
_INDEX_MASK = MAX_MESSAGES_PER_INSTANCE - 1


def queue_for_key(key: str, queues: int) -> int:
    """The queue in ``[0, queues)`` that ``key`` always maps to (for a fixed ``queues``)."""
    if type(key) is not str or type(queues) is not int or queues < 1:  # (one test when valid)
        validate.integer(queues, "queues", minimum=1, maximum=None)
        validate.text(key, "key")
    return zlib.crc32(key.encode("utf-8")) % queues


def group_for_queue(queue: int, groups: int) -> int:
    """The Paxos group that stores ``queue`` (of any topic): ``queue % groups``."""
    if type(queue) is not int or type(groups) is not int or queue < 0 or groups < 1:
        validate.integer(groups, "groups", minimum=1, maximum=None)  # (one test when valid)
        validate.integer(queue, "queue", maximum=None)
    return queue % groups


def make_offset(instance: int, index: int) -> int:
    """The offset of the ``index``-th message of the batch chosen at ``instance``."""
    validate.integer(instance, "instance", maximum=None)
    validate.integer(index, "index", maximum=MAX_MESSAGES_PER_INSTANCE - 1)
    return (instance << INDEX_BITS) | index


def split_offset(offset: int) -> tuple[int, int]:
    """``(instance, index)`` of ``offset``; ``make_offset(*split_offset(o)) == o``."""
    validate.integer(offset, "offset", maximum=None)
    return offset >> INDEX_BITS, offset & _INDEX_MASK
