"""``tail(from_=TIME)`` finds the first message enqueued at or after a time, also when the time
is the message's own enqueue time written to the microsecond (an ISO string rounds)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from phxq.client.timeindex import after_time
from phxq.client.types import Message
from phxq.routing import MAX_MESSAGES_PER_INSTANCE, make_offset


class FakeQueue:
    """One queue: one message per instance 1..n, enqueued at ``times[i]``."""

    def __init__(self, times: list[float]) -> None:
        self.messages = [
            Message("t", 0, make_offset(i + 1, 0), b"m%d" % i, None, {}, t)
            for i, t in enumerate(times)
        ]

    async def dequeue(self, group: Any, topic: str, *, queue: int, after: Any, limit: int) -> Any:
        return [m for m in self.messages if after is None or m.offset > after][:limit]


async def test_an_iso_time_that_rounds_up_still_finds_its_own_message() -> None:
    base = 1765090000.0
    times = [base + i * 0.1234567 for i in range(40)]
    queue = FakeQueue(times)
    for i in (1, 17, 39):
        when = datetime.fromisoformat(datetime.fromtimestamp(times[i]).isoformat()).timestamp()
        after = await after_time(queue, "t", 0, when, chosen_up_to=40)  # type: ignore[arg-type]
        first = await queue.dequeue(None, "t", queue=0, after=after, limit=1)
        assert first[0].payload == b"m%d" % i, (i, when - times[i])
    assert await after_time(queue, "t", 0, base - 5, chosen_up_to=40) is None  # type: ignore[arg-type]
    past = await after_time(queue, "t", 0, base + 100, chosen_up_to=40)  # type: ignore[arg-type]
    assert past == 41 * MAX_MESSAGES_PER_INSTANCE - 1  # after everything there is
