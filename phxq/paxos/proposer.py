"""The master's phase-2 bookkeeping and the phase-1 merge rule (pure data, no effects).

- ``merge_promises(entries, from_instance)``: the values a new master must re-propose for
  ``from_instance..highest reported``: per instance the value with the highest accepted ballot,
  ``b""`` (no-op) for holes.
- ``Window``: the instances in flight (assigned, not yet chosen), bounded by ``window`` count and
  ``window_bytes``; the queue of client items waiting for a slot; the queue of re-proposals that
  go first. ``take_next()`` forms the next instance value: a re-proposal, or one batch of
  everything queued (bounded by ``max_batch_bytes``/``max_batch_items``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from phxq.paxos.ballot import ZERO, Ballot
from phxq.paxos.batch import encode_batch, take_batch
from phxq.paxos.config import GroupConfig
from phxq.paxos.messages import AcceptedEntry


def merge_promises(entries: Iterable[AcceptedEntry], from_instance: int) -> list[bytes]:
    """Values to re-propose for instances ``from_instance, from_instance + 1, ...``."""
    best: dict[int, tuple[Ballot, bytes]] = {}
    for e in entries:
        if e.instance >= from_instance and e.ballot > best.get(e.instance, (ZERO, b""))[0]:
            best[e.instance] = (e.ballot, e.value)
    if not best:
        return []
    return [best[i][1] if i in best else b"" for i in range(from_instance, max(best) + 1)]


class Slot:
    """One instance in flight: its value, the local proposal ids in it, and votes so far."""

    __slots__ = ("pids", "sent_at", "value", "votes")

    def __init__(self, value: bytes, pids: tuple[int, ...], now: float) -> None:
        self.value = value
        self.pids = pids
        self.votes: set[int] = set()
        self.sent_at = now


class Window:
    """Pipelining window and proposal queue of a master."""

    def __init__(self, config: GroupConfig, first_instance: int, reproposals: list[bytes]) -> None:
        self.config = config
        self.next_instance = first_instance
        self.recovery_end = first_instance + len(reproposals) - 1
        self.reproposals: deque[bytes] = deque(reproposals)
        self.pending: deque[tuple[int, bytes]] = deque()
        self.inflight: dict[int, Slot] = {}
        self.inflight_bytes = 0

    def has_room(self) -> bool:
        c = self.config
        return len(self.inflight) < c.window and self.inflight_bytes < c.window_bytes

    def take_next(self, now: float) -> tuple[int, Slot] | None:
        """Assign the next instance if the window has room and there is something to send."""
        if not self.has_room():
            return None
        pids: tuple[int, ...] = ()
        if self.reproposals:
            value = self.reproposals.popleft()
        elif self.pending:
            c = self.config
            room = c.window_bytes - self.inflight_bytes
            pid_list, items, _ = take_batch(
                self.pending, min(c.max_batch_bytes, room), c.max_batch_items
            )
            value, pids = encode_batch(items), pid_list
        else:
            return None
        instance = self.next_instance
        self.next_instance += 1
        slot = Slot(value, pids, now)
        self.inflight[instance] = slot
        self.inflight_bytes += len(value)
        return instance, slot

    def skip_learned(self, chosen_up_to: int) -> None:
        """Never assign an instance already learned (e.g. through catch-up while re-proposing):
        its re-proposal is dropped; queued client items just move to later instances."""
        while self.next_instance <= chosen_up_to:
            if self.reproposals:
                self.reproposals.popleft()
            self.next_instance += 1

    def remove(self, instance: int) -> Slot | None:
        slot = self.inflight.pop(instance, None)
        if slot is not None:
            self.inflight_bytes -= len(slot.value)
        return slot

    def all_pids(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(queued pids never sent, pids in unchosen instances) — for failing on step-down."""
        queued = tuple(pid for pid, _ in self.pending)
        sent = tuple(pid for slot in self.inflight.values() for pid in slot.pids)
        return queued, sent
