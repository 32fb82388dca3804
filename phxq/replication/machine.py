"""What the replication runtime asks of a replicated state machine, and the one apply it runs.

A group's replica feeds every chosen instance, strictly in instance order and once, to its
:class:`StateMachine` through :func:`apply_instance` -- live (``Learned``), in a rebuild from
peers, and when a restarted replica replays its retained log. The same pure function in all
three places is what makes recovery exact: the replica writes a chosen record together with
the index entries the apply produced, and on restart gets them back by applying the records
again.

A state machine is pure and deterministic (no I/O, clock or randomness: DESIGN §3.1 "decisions
inside the log are made at apply time"): the store's ``StoreState`` and the lock service's
``LockState`` are the two in phxq, and neither knows of the other or of this runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from phxq.paxos import decode_batch
from phxq.plog import IndexEntry

__all__ = ["Applied", "IndexEntry", "Machines", "StateMachine", "apply_instance"]


class StateMachine(Protocol):
    """A replicated state machine of one group (see the module docstring).

    - ``apply`` applies chosen ``instance`` (the one after ``applied_up_to``) and returns one
      result per item (what the proposer of that item is answered);
    - ``index_entries`` of an instance in ``[oldest retained, applied_up_to]``: the queue index
      entries it produced (``[]`` for a machine without a queue index). Called right after
      ``apply`` for the same instance, and alone for an instance a restored snapshot already
      covers (the replay after a restart re-indexes those without applying them twice);
    - ``snapshot`` are canonical bytes of the whole state, ``forget_below`` tells the machine
      the log below ``instance`` is gone (what only indexing it needed may go)."""

    @property
    def applied_up_to(self) -> int: ...

    def apply(self, instance: int, items: Sequence[bytes]) -> Sequence[Any]: ...

    def index_entries(self, instance: int, items: Sequence[bytes]) -> Sequence[IndexEntry]: ...

    def snapshot(self) -> bytes: ...

    def forget_below(self, instance: int) -> None: ...


M = TypeVar("M", bound=StateMachine)
M_co = TypeVar("M_co", bound=StateMachine, covariant=True)


class Machines(Protocol[M_co]):
    """Makes a group's state machine: empty, or from its ``snapshot()`` bytes."""

    def fresh(self, group: int) -> M_co:
        """The state as of instance 0."""
        ...

    def restore(self, group: int, data: bytes) -> M_co:
        """The state ``snapshot()`` captured; ``ProtocolError`` if ``data`` is malformed (it
        may come from a peer)."""
        ...


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one chosen instance produced: one result per item (empty when the state
    already covered the instance) and the instance's queue index entries."""

    results: Sequence[Any]
    index: Sequence[IndexEntry]


def apply_instance(machine: StateMachine, instance: int, value: bytes) -> Applied:
    """Apply chosen ``instance`` (batch ``value``) to ``machine``; an instance the machine
    already covers (a restored snapshot is ahead of the retained log) is only re-indexed."""
    items = decode_batch(value)
    if instance <= machine.applied_up_to:
        return Applied((), machine.index_entries(instance, items))
    results = machine.apply(instance, items)
    return Applied(results, machine.index_entries(instance, items))
