"""The values the client hands out: :class:`Ack`, :class:`Message`, :class:`ClusterMap`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from phxq.errors import Unavailable

__all__ = ["Ack", "ClusterMap", "ConsumedMessage", "Message", "Route"]


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


Route = tuple[int, int]  # (store set, Paxos group): where a queue's requests go


@dataclass(slots=True)
class ClusterMap:
    """What any store says about the cluster: Paxos groups (per set), every store's address
    and set, topics (queues each), the store set of every queue (``placement``), the cluster
    map's ``version``, and the masters the client knows per (set, group)."""

    groups: int
    nodes: dict[int, str]
    topics: dict[str, int]
    masters: dict[Route, int]
    locks: list[str] = field(default_factory=list)
    sets: dict[int, int] = field(default_factory=dict)  # node id -> its store set
    placement: dict[str, list[int]] = field(default_factory=dict)  # topic -> set of each queue
    version: int = 0
    # topic -> queue -> sealed segments [(set, last offset)], oldest first (queue moves)
    history: dict[str, dict[int, list[tuple[int, int]]]] = field(default_factory=dict)

    def set_for(self, topic: str, queue: int, after: int | None) -> int:
        """The set holding ``queue``'s messages just after offset ``after`` (None: from the
        start): a sealed segment if ``after`` is below its seal, else the queue's set."""
        for number, sealed in self.history.get(topic, {}).get(queue, ()):
            if after is None or after < sealed:
                return number
        return self.route(topic, queue)[0]

    def moved(self, topic: str, queue: int) -> bool:
        """Whether ``queue`` has sealed segments on other sets (it was moved)."""
        return bool(self.history.get(topic, {}).get(queue))

    def route(self, topic: str, queue: int) -> Route:
        """``(set, group)`` of ``queue`` of ``topic`` (set 1 if the map does not say)."""
        placed = self.placement.get(topic)
        home = placed[queue] if placed is not None and queue < len(placed) else 1
        return home, queue % self.groups

    def set_nodes(self, number: int) -> list[int]:
        """The ids of the stores of set ``number``, ascending."""
        return sorted(n for n in self.nodes if self.sets.get(n, 1) == number)

    @classmethod
    def from_wire(cls, data: Any) -> ClusterMap:
        try:
            home = int(data.get("set", 1))
            topo = data.get("map")
            placement = (
                {str(k): [int(s) for s in v["placement"]] for k, v in topo["topics"].items()}
                if topo is not None
                else {}
            )
            return cls(
                groups=int(data["groups"]),
                nodes={int(k): str(v) for k, v in data["nodes"].items()},
                topics={str(k): int(v) for k, v in data["topics"].items()},
                masters={
                    (home, int(k)): int(v) for k, v in data["masters"].items() if v is not None
                },
                locks=[str(a) for a in data.get("locks", [])],
                sets={int(k): int(v) for k, v in data.get("sets", {}).items()},
                placement=placement,
                version=0 if topo is None else int(topo["version"]),
                history={
                    str(t): {int(q): [(int(a), int(b)) for a, b in segs] for q, segs in qs.items()}
                    for t, qs in ((topo or {}).get("history") or {}).items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Unavailable(f"malformed cluster map: {exc!r}") from exc
