"""An in-memory, synchronous cluster of ``PaxosNode`` replicas, for tests and benchmarks.

``LoopbackCluster(n, group=0, **config)``: every ``Send`` is queued and delivered in FIFO order
by ``run()``; every ``Persist`` completes at once (or is held while ``hold_persists`` is set,
see ``complete_persists``); ``ServeCatchup`` is answered from the node's learned log. Learned
effects are collected per node in ``learned[node] -> list[Learned]`` and proposal outcomes in
``acked`` (pid -> instance) and ``failed`` (pid -> reason). ``down`` nodes neither tick nor
talk; ``isolated`` nodes tick but every message to or from them is lost. ``elect(node)`` makes a node master
by advancing the virtual clock past its election timeout. Not used in production code.

Effect-list helpers for tests: ``sent(effects, MessageType, to=None)`` -> the messages sent,
``of(effects, EffectType)`` -> the effects of a type, ``persist_all(node, effects, now)``
completes every ``Persist`` in the list and returns what that released, ``campaign(node, now)``
ticks ``node`` at ``now`` and grants its pre-vote from every peer (the effects of both: phase 1
has started, its promise is not yet durable).
"""

from __future__ import annotations

from collections import deque
from typing import Any, TypeVar

from phxq.paxos.ballot import ZERO
from phxq.paxos.config import GroupConfig
from phxq.paxos.effects import (
    Effect,
    Learned,
    Persist,
    ProposalFailed,
    Send,
    ServeCatchup,
)
from phxq.paxos.messages import CatchupReply, ChosenEntry, Message, PreVote, PreVoteReply
from phxq.paxos.node import PaxosNode

T = TypeVar("T")


def sent(effects: list[Any], kind: type[T], to: int | None = None) -> list[T]:
    """The messages of type ``kind`` sent in ``effects`` (to ``to``, if given)."""
    return [
        e.msg
        for e in effects
        if isinstance(e, Send) and isinstance(e.msg, kind) and (to is None or e.to == to)
    ]


def of(effects: list[Any], kind: type[T]) -> list[T]:
    """The effects of type ``kind``."""
    return [e for e in effects if isinstance(e, kind)]


def persist_all(node: PaxosNode, effects: list[Any], now: float = 0.0) -> list[Any]:
    """Complete every Persist in ``effects`` in order; returns the effects that released."""
    out: list[Any] = []
    for p in of(effects, Persist):
        out.extend(node.on_persisted(p.token, now))
    return out


def campaign(node: PaxosNode, now: float) -> list[Any]:
    """Tick ``node`` at ``now`` and answer its ``PreVote`` with a yes from every peer."""
    effects = node.on_tick(now)
    for ask in sent(effects, PreVote):
        for peer in node.config.peers:
            yes = PreVoteReply(
                group=ask.group,
                sender=peer,
                ballot=ask.ballot,
                granted=True,
                promised=ZERO,
                chosen_up_to=0,
            )
            effects += node.on_message(yes, now)
        break
    return effects


class LoopbackCluster:
    """Replicas wired together through an in-memory FIFO network with instant disks."""

    def __init__(self, n: int = 3, group: int = 0, now: float = 0.0, **config: Any) -> None:
        members = tuple(range(1, n + 1))
        self.now = now
        self.nodes = {
            m: PaxosNode(GroupConfig(group=group, node_id=m, members=members, **config), None, now)
            for m in members
        }
        self.inbox: deque[tuple[int, Message]] = deque()
        self.learned: dict[int, list[Learned]] = {m: [] for m in members}
        self.acked: dict[int, int] = {}
        self.failed: dict[int, str] = {}
        self.down: set[int] = set()  # crashed-like: no ticks, no messages
        self.isolated: set[int] = set()  # running (ticks) but cut off from every peer
        self.hold_persists = False
        self.held: dict[int, list[Persist]] = {m: [] for m in members}
        self.effects: dict[int, list[Effect]] = {m: [] for m in members}

    def execute(self, node: int, effects: list[Effect]) -> None:
        self.effects[node].extend(effects)
        for e in effects:
            if isinstance(e, Send):
                self.inbox.append((e.to, e.msg))
            elif isinstance(e, Persist):
                if self.hold_persists:
                    self.held[node].append(e)
                else:
                    self.execute(node, self.nodes[node].on_persisted(e.token, self.now))
            elif isinstance(e, Learned):
                self.learned[node].append(e)
                for pid in e.proposals:
                    self.acked[pid] = e.instance
            elif isinstance(e, ProposalFailed):
                for pid in e.pids:
                    self.failed[pid] = e.reason
            elif isinstance(e, ServeCatchup):
                log = self.learned[node]
                entries = tuple(
                    ChosenEntry(x.instance, x.value, x.checksum)
                    for x in log[e.from_instance - 1 : e.from_instance - 1 + e.max_count]
                )
                reply = CatchupReply(
                    group=self.nodes[node].config.group,
                    sender=node,
                    entries=entries,
                    chosen_up_to=self.nodes[node].chosen_up_to,
                )
                self.inbox.append((e.to, reply))

    def complete_persists(self, node: int) -> None:
        """Complete every held persist of ``node``, in order."""
        held, self.held[node] = self.held[node], []
        for p in held:
            self.execute(node, self.nodes[node].on_persisted(p.token, self.now))

    def run(self, max_messages: int = 1_000_000) -> int:
        """Deliver queued messages (and those they cause) until the network is quiet."""
        delivered = 0
        inbox, nodes, down, cut = self.inbox, self.nodes, self.down, self.isolated
        while inbox and delivered < max_messages:
            to, msg = inbox.popleft()
            if to in down or msg.sender in down or to in cut or msg.sender in cut:
                continue
            delivered += 1
            self.execute(to, nodes[to].on_message(msg, self.now))
        return delivered

    def tick(self, dt: float) -> None:
        """Advance the clock by ``dt`` and tick every live node, then deliver."""
        self.now += dt
        for m, node in self.nodes.items():
            if m not in self.down:
                self.execute(m, node.on_tick(self.now))
        self.run()

    def elect(self, node: int, max_time: float = 30.0) -> None:
        """Advance time in heartbeat steps until ``node`` is master (and ready)."""
        step = self.nodes[node].config.heartbeat_interval
        deadline = self.now + max_time
        while not (self.nodes[node].is_master and self.nodes[node].ready):
            if self.now > deadline:
                raise AssertionError(f"node {node} not elected within {max_time}s")
            self.tick(step)

    def propose(self, node: int, pid: int, item: bytes) -> None:
        self.execute(node, self.nodes[node].propose(pid, item, self.now))

    def master(self) -> int:
        masters = [m for m, n in self.nodes.items() if n.is_master and m not in self.down]
        assert len(masters) == 1, masters
        return masters[0]
