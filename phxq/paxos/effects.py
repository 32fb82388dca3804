"""Effects: what a ``PaxosNode`` asks its runtime to do. The runtime executes them in list order.

- ``Send(to, msg)``: send a message to node ``to`` (loss is tolerated).
- ``Persist(token, records)``: make ``records`` durable, **in submission order across all
  Persist effects of the node**, then call ``node.on_persisted(token, now)``. Replies that depend
  on them are held inside the node until then.
- ``PromiseRecord(ballot)``, ``AcceptRecord(instance, ballot, value)``: the persisted records.
- ``Learned(instance, value, checksum, ballot, proposals)``: instance chosen and learned, strictly
  in instance order, each once per node lifetime. ``ballot`` is ``None`` when learned via
  catch-up. ``proposals``: this node's proposal ids aligned with ``decode_batch(value)`` when it
  proposed exactly this value, else ``()``. The runtime appends it to the PLog and applies it.
- ``ProposalFailed(pids, reason, master_hint)``: ``"not_master"`` = never sent, certainly not
  chosen; ``"unknown"`` = may or may not be chosen (retry with the same dedup id).
- ``ServeCatchup(to, from_instance, max_count)``: read chosen instances ``from_instance..`` (at
  most ``max_count``) from the log and send ``CatchupReply`` to ``to``.
- ``RoleChanged(is_master, master, ballot)``: this node's role or its idea of the master changed.
- ``Divergence(instance, local_checksum, remote_checksum, peer)``: the chain checksums disagree;
  the node has stopped learning. Report loudly; repair needs an operator.
"""

from __future__ import annotations

from dataclasses import dataclass

from phxq.paxos.ballot import Ballot
from phxq.paxos.messages import Message


@dataclass(frozen=True, slots=True)
class Send:
    to: int
    msg: Message


@dataclass(frozen=True, slots=True)
class PromiseRecord:
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class AcceptRecord:
    instance: int
    ballot: Ballot
    value: bytes


@dataclass(frozen=True, slots=True)
class Persist:
    token: int
    records: tuple[PromiseRecord | AcceptRecord, ...]


@dataclass(frozen=True, slots=True)
class Learned:
    instance: int
    value: bytes
    checksum: int
    ballot: Ballot | None
    proposals: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ProposalFailed:
    pids: tuple[int, ...]
    reason: str
    master_hint: int | None


@dataclass(frozen=True, slots=True)
class ServeCatchup:
    to: int
    from_instance: int
    max_count: int


@dataclass(frozen=True, slots=True)
class RoleChanged:
    is_master: bool
    master: int | None
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Divergence:
    instance: int
    local_checksum: int
    remote_checksum: int
    peer: int


Effect = Send | Persist | Learned | ProposalFailed | ServeCatchup | RoleChanged | Divergence
