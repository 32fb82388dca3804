"""Where a read-only reader starts for a point in time (``client.tail(from_=datetime)``).

:func:`after_time` answers, per queue, the ``after`` offset from which a ``dequeue`` returns
the first message enqueued at or after ``when`` (wall clock, the queue master's at enqueue),
without moving any cursor: a binary search over Paxos instances with one-message reads (about
``log2(instances)`` reads per queue, each answered by the queue's master). Offsets are sparse
(``instance << 20 | index``), so the search runs over instances, not offsets. It relies on
enqueue times growing with instances, as the store's own time index (``seek``) does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phxq.routing import MAX_MESSAGES_PER_INSTANCE, split_offset

if TYPE_CHECKING:
    from phxq.client.client import Client

RESOLUTION = 1e-6  # seconds: times compare at microsecond resolution


async def after_time(
    client: Client, topic: str, queue: int, when: float, chosen_up_to: int
) -> int | None:
    """The ``after`` offset (None: from the start) at which ``queue``'s messages enqueued at
    or after ``when`` begin; ``chosen_up_to`` is the queue's group's highest chosen instance
    (past it the search ends: those messages do not exist yet)."""

    async def first_from(instance: int) -> tuple[int, float] | None:
        """(instance, enqueued_at) of the queue's first message at ``instance`` or later."""
        after = None if instance == 0 else instance * MAX_MESSAGES_PER_INSTANCE - 1
        got = await client.dequeue(None, topic, queue=queue, after=after, limit=1)
        return None if not got else (split_offset(got[0].offset)[0], got[0].enqueued_at)

    # A time given to the microsecond (an ISO string) may round above the float it came from:
    # compare at microsecond resolution, or "at or after" would skip the message it names.
    when -= RESOLUTION
    first = await first_from(0)
    if first is None or first[1] >= when:
        return None
    # Invariant: the message at instance `lo` is older than `when`; nothing at or after `hi`
    # is (or nothing is there yet).
    lo, hi = first[0], max(chosen_up_to + 1, first[0] + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found = await first_from(mid)
        if found is None or found[1] >= when:
            hi = mid
        else:
            lo = found[0]
            if lo >= hi:  # chosen meanwhile past what we were told: widen
                hi = lo + 1
    return hi * MAX_MESSAGES_PER_INSTANCE - 1
