"""The values the client hands out: :class:`Ack`, :class:`Message`, :class:`ClusterMap`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from phxq.errors import Unavailable

__all__ = ["Ack", "ClusterMap", "ConsumedMessage", "Message"]


@dataclass(frozen=True, slots=True)
class Ack:
    """An acknowledged enqueue: the message is chosen (durable on a majority).

    A delayed or scheduled message (``delay=`` / ``deliver_at=``) has no offset yet (None: it
    gets one when it is released) and a ``scheduled_id`` for ``Client.cancel_scheduled``."""

    topic: str
    queue: int
    offset: int | None
    duplicate: bool = False
    scheduled_id: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message read back from a queue."""

    topic: str
    queue: int
    offset: int
    payload: bytes
    key: str | None
    headers: dict[str, str]
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class ConsumedMessage(Message):
    """A message from ``Client.consume``: ``group`` consumes it under the queue's lock, whose
    fencing ``token`` its commit carries. With ``auto_commit=False``, ``await msg.ack()`` marks
    it processed (the queue's next message comes after that)."""

    group: str = ""
    token: int = 0
    _ack: Callable[[], Awaitable[None]] | None = field(default=None, repr=False, compare=False)

    async def ack(self) -> None:
        """Mark this message processed and return once the group's cursor is committed past
        it, with the queue lock's fencing token. Raises ``StaleToken`` if this consumer lost
        the queue's lock first (the next owner gets the message again). Idempotent; with
        ``auto_commit`` the loop moving on marks it (and the commit follows within
        ``commit_interval``, or at the handoff)."""
        if self._ack is not None:
            await self._ack()


@dataclass(slots=True)
class ClusterMap:
    """What any store says about the cluster: Paxos groups, store and lock node addresses,
    topics (queues each) and the masters it knows."""

    groups: int
    nodes: dict[int, str]
    topics: dict[str, int]
    masters: dict[int, int]
    locks: list[str] = field(default_factory=list)

    @classmethod
    def from_wire(cls, data: Any) -> ClusterMap:
        try:
            return cls(
                groups=int(data["groups"]),
                nodes={int(k): str(v) for k, v in data["nodes"].items()},
                topics={str(k): int(v) for k, v in data["topics"].items()},
                masters={int(k): int(v) for k, v in data["masters"].items() if v is not None},
                locks=[str(a) for a in data.get("locks", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Unavailable(f"malformed cluster map: {exc!r}") from exc
