"""The values the client hands out: :class:`Ack`, :class:`Message`, :class:`ClusterMap`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phxq.errors import Unavailable

__all__ = ["Ack", "ClusterMap", "Message"]


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


@dataclass(slots=True)
class ClusterMap:
    groups: int
    nodes: dict[int, str]
    topics: dict[str, int]
    masters: dict[int, int]

    @classmethod
    def from_wire(cls, data: Any) -> ClusterMap:
        try:
            return cls(
                groups=int(data["groups"]),
                nodes={int(k): str(v) for k, v in data["nodes"].items()},
                topics={str(k): int(v) for k, v in data["topics"].items()},
                masters={int(k): int(v) for k, v in data["masters"].items() if v is not None},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Unavailable(f"malformed cluster map: {exc!r}") from exc
