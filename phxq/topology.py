"""The cluster map: topics and where each queue lives (which store set), as one versioned value.

Pure data and functions, shared by the stores, the clients and the admin tools (DESIGN.md §5.1)::

    Topology.from_config(cfg) -> Topology           # version 0: the [[topic]] tables as written
    topo.set_of(topic, queue) -> int                # the store set holding that queue
    topo.route(topic, queue, groups) -> (set, group)
    topo.to_wire() / Topology.from_wire(data)       # msgpack/JSON-able; ProtocolError if malformed
    topo.with_topic(spec, sets) / topo.altered(name, ...) -> Topology   # version + 1
    deal(queues, sets) -> tuple[int, ...]           # seed placement: queue q on sets[q % len]

**Placement.** Every queue of a topic lives on exactly one store set, inside it in group
``q % groups`` (DESIGN §3). A topic's ``sets`` (TOML ``sets = [1, 2]``; default: every set of
the cluster) are the sets it may use. The first placement deals the queues round-robin over
them in ascending order (queue q on ``sets[q % len(sets)]``); queues added later go one by one
to the set that then holds the fewest queues of every topic (ties: the lowest set). Placement
of an existing queue never changes except by a queue move, so it is stored explicitly per queue
(``placement[topic][q]``), not recomputed.

**Consumer groups** (``groups``: name -> ``ConsumerGroupConfig``) are part of the map: the
config's ``[[consumer_group]]`` tables seed it, ``with_group`` adds one online (``phxq admin
group create``), ``without_group`` removes one (``phxq admin group delete``). Wire key
``consumer_groups`` (:mod:`phxq.groupspecs`); a map written before groups were in it reads as
having none.

**Keys from newer versions.** ``from_wire`` keeps the top-level keys it does not know in
``extra`` and ``to_wire`` writes them back unchanged, so a map a newer version wrote (with a
part this version does not understand) survives this version's rewrites (a topic created, a
queue moved) instead of losing that part.

**Versions.** Every change makes a new value with ``version + 1``. The map derived from the
config alone is version 0; the lock service's copy (:mod:`phxq.mapstore`) starts at 1.

**Queue moves** (``phxq admin queue move``, :mod:`phxq.store.mover`). ``moves`` holds the
moves in progress, one :class:`QueueMove` per queue at most (``with_move`` adds one,
``without_move`` cancels it, ``moved`` completes it). ``history[topic][q]`` lists the sealed
segments of a moved queue, oldest first: ``(set, sealed)`` means set ``set`` held every offset
``<= sealed`` not held by an earlier segment; offsets above the last seal live on
``placement[topic][q]``. ``set_for_offset`` routes a read or commit by offset; a queue moved
back and forth (1 -> 2 -> 1) simply has more segments::

    topo.with_move(topic, queue, to_set, move_id, now) / topo.without_move(topic, queue, id)
    topo.moved(topic, queue, move_id, sealed) -> Topology   # placement flips, history grows
    topo.move_of(topic, queue) -> QueueMove | None
    topo.set_for_offset(topic, queue, offset | None) -> int  # None: the oldest segment
    topo.segments(topic, queue) -> [(set, last offset or None)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from phxq import validate
from phxq.config import ClusterConfig, ConsumerGroupConfig, TopicConfig
from phxq.errors import BadArgument, NotFound, ProtocolError, UnknownTopic
from phxq.groupspecs import group_from_wire, group_to_wire

__all__ = ["QueueMove", "Topology", "deal", "least_loaded"]

_EMPTY: Mapping[Any, Any] = MappingProxyType({})

_NO_GROUPS: Mapping[str, ConsumerGroupConfig] = MappingProxyType({})

# The top-level keys to_wire writes; from_wire keeps any other in Topology.extra.
_WIRE_KEYS = frozenset({"version", "sets", "topics", "consumer_groups", "moves", "history"})


def deal(queues: int, sets: Iterable[int]) -> tuple[int, ...]:
    """The seed placement of ``queues`` queues over ``sets``: queue q on ``sets[q % len]``."""
    order = sorted(set(sets))
    if not order:
        raise BadArgument("a topic needs at least one store set")
    return tuple(order[q % len(order)] for q in range(queues))


def least_loaded(load: Mapping[int, int], allowed: Iterable[int], count: int) -> list[int]:
    """``count`` set numbers for new queues, each the one of ``allowed`` holding the fewest
    queues at that point (``load``: queues per set; ties: the lowest number)."""
    current = {s: load.get(s, 0) for s in allowed}
    if not current:
        raise BadArgument("a topic needs at least one store set")
    out = []
    for _ in range(count):
        best = min(current, key=lambda s: (current[s], s))
        out.append(best)
        current[best] += 1
    return out


@dataclass(frozen=True, slots=True)
class Topology:
    """One version of the cluster map (see the module docstring)."""

    version: int
    sets: tuple[int, ...]  # every store set of the cluster, ascending
    topics: Mapping[str, TopicConfig]
    placement: Mapping[str, tuple[int, ...]]  # topic -> the set of each queue
    groups: Mapping[str, ConsumerGroupConfig] = field(default_factory=lambda: _NO_GROUPS)
    moves: Mapping[tuple[str, int], QueueMove] = field(default_factory=lambda: _EMPTY)
    history: Mapping[str, Mapping[int, tuple[tuple[int, int], ...]]] = field(
        default_factory=lambda: _EMPTY
    )
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # keys of newer versions

    @classmethod
    def from_config(cls, cfg: ClusterConfig) -> Topology:
        """Version 0: the config's topics, each dealt over its ``sets`` (default: every set)."""
        sets = cfg.sets
        topics = {t.name: t for t in cfg.topics}
        placement = {t.name: deal(t.queues, t.sets or sets) for t in cfg.topics}
        groups = MappingProxyType({g.name: g for g in cfg.consumer_groups})
        return cls(0, sets, MappingProxyType(topics), MappingProxyType(placement), groups)

    # ----------------------------------------------------------------------------- queries

    def topic(self, name: str) -> TopicConfig:
        spec = self.topics.get(name) if isinstance(name, str) else None
        if spec is None:
            raise UnknownTopic(f"unknown topic {name!r}", {"topic": name})
        return spec

    def set_of(self, topic: str, queue: int) -> int:
        """The store set holding ``queue`` of ``topic`` (``UnknownTopic``, ``BadArgument``)."""
        spec = self.topic(topic)
        validate.integer(queue, "queue", maximum=spec.queues - 1)
        return self.placement[topic][queue]

    def route(self, topic: str, queue: int, groups: int) -> tuple[int, int]:
        """``(set, group)`` of ``queue``: its set, and group ``queue % groups`` there."""
        return self.set_of(topic, queue), queue % groups

    def queues_on(self, number: int) -> dict[str, list[int]]:
        """Per topic, its queues placed on set ``number``."""
        return {
            t: [q for q, s in enumerate(p) if s == number]
            for t, p in self.placement.items()
            if number in p
        }

    def load(self) -> dict[int, int]:
        """Queues per set, over every topic (every set of the cluster listed)."""
        out = dict.fromkeys(self.sets, 0)
        for p in self.placement.values():
            for s in p:
                out[s] = out.get(s, 0) + 1
        return out

    # ----------------------------------------------------------------------------- changes

    def with_topic(self, spec: TopicConfig) -> Topology:
        """A new topic, its queues on the least-loaded of ``spec.sets`` (default: every set)."""
        if spec.name in self.topics:
            raise BadArgument(f"topic {spec.name!r} already exists", {"topic": spec.name})
        allowed = self._allowed(spec.sets)
        placed = tuple(least_loaded(self.load(), allowed, spec.queues))
        return self._changed({**self.topics, spec.name: spec}, {spec.name: placed})

    def altered(self, name: str, **changes: Any) -> Topology:
        """``name`` with ``changes`` (queues, retention, max_message_bytes, retention_bytes,
        sets). Queues can only grow (a key's queue is ``hash % queues``: see docs/faq.md);
        added queues go to the least-loaded allowed sets, existing ones stay where they are."""
        spec = self.topic(name)
        new = replace(spec, **changes)
        if new.queues < spec.queues:
            raise BadArgument(
                f"topic {name!r} has {spec.queues} queues; queues can be added, not removed",
                {"topic": name},
            )
        allowed = self._allowed(new.sets)
        extra = least_loaded(self.load(), allowed, new.queues - spec.queues)
        placed = (*self.placement[name], *extra)
        return self._changed({**self.topics, name: new}, {name: placed})

    def with_group(self, spec: ConsumerGroupConfig) -> Topology:
        """A new consumer group (``BadArgument`` if it exists or its dead-letter topic does
        not; ``UnknownTopic`` if its topic does not)."""
        if spec.name in self.groups:
            raise BadArgument(f"consumer group {spec.name!r} already exists", {"group": spec.name})
        self.topic(spec.topic)
        if spec.dead_letter is not None and spec.dead_letter not in self.topics:
            raise BadArgument(
                f"no topic {spec.dead_letter!r} for the dead letters of {spec.name!r}",
                {"topic": spec.dead_letter},
            )
        groups = MappingProxyType({**self.groups, spec.name: spec})
        return replace(self, version=self.version + 1, groups=groups)

    def without_group(self, name: str) -> Topology:
        """Consumer group ``name`` removed (``NotFound`` if the map lacks it). Its topic and
        dead-letter topic stay: topics outlive the groups that read them."""
        if name not in self.groups:
            raise NotFound(f"no consumer group {name!r} in the cluster map", {"group": name})
        groups = MappingProxyType({n: g for n, g in self.groups.items() if n != name})
        return replace(self, version=self.version + 1, groups=groups)

    def _allowed(self, sets: tuple[int, ...] | None) -> tuple[int, ...]:
        if sets is None:
            return self.sets
        unknown = [s for s in sets if s not in self.sets]
        if unknown or not sets:
            raise BadArgument(
                f"no store set {unknown[0]} (sets: {', '.join(map(str, self.sets))})"
                if unknown
                else "a topic needs at least one store set"
            )
        return tuple(sorted(set(sets)))

    def _changed(
        self, topics: Mapping[str, TopicConfig], placement: Mapping[str, tuple[int, ...]]
    ) -> Topology:
        return replace(
            self,
            version=self.version + 1,
            topics=MappingProxyType(dict(topics)),
            placement=MappingProxyType({**self.placement, **placement}),
        )

    # ------------------------------------------------------------------------ queue moves

    def move_of(self, topic: str, queue: int) -> QueueMove | None:
        """The move of ``queue`` in progress, if any."""
        return self.moves.get((topic, queue))

    def segments(self, topic: str, queue: int) -> list[tuple[int, int | None]]:
        """``(set, last offset)`` of each segment of the queue, oldest first; the last one is
        the current set with ``None`` (open)."""
        sealed = self.history.get(topic, _EMPTY).get(queue, ())
        return [*sealed, (self.set_of(topic, queue), None)]

    def set_for_offset(self, topic: str, queue: int, offset: int | None) -> int:
        """The set holding the messages just after ``offset`` of the queue (a read's
        ``after``, a commit's offset belongs to the set holding it: use ``offset - 1``)
        (``None``: from the start, the oldest segment)."""
        segments: tuple[tuple[int, int], ...] = self.history.get(topic, _EMPTY).get(queue, ())
        for number, sealed in segments:
            if offset is None or offset < sealed:
                return number
        return self.set_of(topic, queue)

    def with_move(
        self, topic: str, queue: int, to_set: int, move_id: str, started_at: float
    ) -> Topology:
        """A move of ``queue`` to set ``to_set`` recorded as pending (``BadArgument`` if the
        queue is there already, the set does not exist or a move of it is in progress)."""
        source = self.set_of(topic, queue)
        if to_set not in self.sets:
            raise BadArgument(
                f"no store set {to_set} (sets: {', '.join(map(str, self.sets))})",
                {"set": to_set},
            )
        current = self.moves.get((topic, queue))
        if current is not None:
            if current.id == move_id:
                return self
            raise BadArgument(
                f"queue {queue} of topic {topic!r} is already moving to set {current.target} "
                f"(move {current.id}; cancel it with --cancel)",
                {"move": current.id},
            )
        if source == to_set:
            raise BadArgument(f"queue {queue} of topic {topic!r} is on set {to_set} already")
        move = QueueMove(move_id, topic, queue, source, to_set, float(started_at))
        return replace(
            self,
            version=self.version + 1,
            moves=MappingProxyType({**self.moves, (topic, queue): move}),
        )

    def without_move(self, topic: str, queue: int, move_id: str) -> Topology:
        """The map without move ``move_id`` (cancelled); unchanged if it is not pending."""
        current = self.moves.get((topic, queue))
        if current is None or current.id != move_id:
            return self
        moves = {k: v for k, v in self.moves.items() if k != (topic, queue)}
        return replace(self, version=self.version + 1, moves=MappingProxyType(moves))

    def moved(self, topic: str, queue: int, move_id: str, sealed: int) -> Topology:
        """Move ``move_id`` done: the source sealed the queue at offset ``sealed``, the target
        adopted it. Placement flips, the sealed segment joins the history; unchanged if the
        move is not pending (done already, or cancelled)."""
        move = self.moves.get((topic, queue))
        if move is None or move.id != move_id:
            return self
        old = self.history.get(topic, _EMPTY).get(queue, ())
        if old and sealed <= old[-1][1]:
            raise ProtocolError(f"seal offset {sealed} is not above the last one {old[-1][1]}")
        queues = dict(self.history.get(topic, _EMPTY))
        queues[queue] = (*old, (move.source, int(sealed)))
        placed = list(self.placement[topic])
        placed[queue] = move.target
        moves = {k: v for k, v in self.moves.items() if k != (topic, queue)}
        return replace(
            self,
            version=self.version + 1,
            placement=MappingProxyType({**self.placement, topic: tuple(placed)}),
            moves=MappingProxyType(moves),
            history=MappingProxyType({**self.history, topic: MappingProxyType(queues)}),
        )

    # ------------------------------------------------------------------------------ wire

    def to_wire(self) -> dict[str, Any]:
        return {
            **self.extra,
            "version": self.version,
            "sets": list(self.sets),
            "topics": {
                name: {
                    "queues": t.queues,
                    "retention": t.retention,
                    "max_message_bytes": t.max_message_bytes,
                    "retention_bytes": t.retention_bytes,
                    "sets": None if t.sets is None else list(t.sets),
                    "placement": list(self.placement[name]),
                }
                for name, t in self.topics.items()
            },
            "consumer_groups": {name: group_to_wire(g) for name, g in self.groups.items()},
            "moves": [m.to_wire() for m in self.moves.values()],
            "history": {
                name: {str(q): [list(seg) for seg in segs] for q, segs in queues.items()}
                for name, queues in self.history.items()
            },
        }

    @classmethod
    def from_wire(cls, data: Any) -> Topology:
        """The map ``to_wire`` made; ``ProtocolError`` if ``data`` is not one."""
        try:
            topics: dict[str, TopicConfig] = {}
            placement: dict[str, tuple[int, ...]] = {}
            for name, t in data["topics"].items():
                sets = t.get("sets")
                topics[str(name)] = TopicConfig(
                    name=str(name),
                    queues=int(t["queues"]),
                    retention=float(t["retention"]),
                    max_message_bytes=int(t["max_message_bytes"]),
                    retention_bytes=None
                    if t.get("retention_bytes") is None
                    else int(t["retention_bytes"]),
                    sets=None if sets is None else tuple(int(s) for s in sets),
                )
                placement[str(name)] = tuple(int(s) for s in t["placement"])
                if len(placement[str(name)]) != topics[str(name)].queues:
                    raise ValueError(f"topic {name}: placement does not cover its queues")
            groups = {
                str(name): group_from_wire(g)
                for name, g in (data.get("consumer_groups") or {}).items()
            }
            sets = tuple(int(s) for s in data["sets"])
            moves = {}
            for raw in data.get("moves") or []:
                move = QueueMove.from_wire(raw)
                if move.topic not in topics or move.queue >= topics[move.topic].queues:
                    raise ValueError(f"a move of an unknown queue: {move}")
                if move.target not in sets or move.source == move.target:
                    raise ValueError(f"a move to a bad set: {move}")
                moves[(move.topic, move.queue)] = move
            history: dict[str, Mapping[int, tuple[tuple[int, int], ...]]] = {}
            for name, queues in (data.get("history") or {}).items():
                if name not in topics:
                    raise ValueError(f"history of an unknown topic {name!r}")
                per_queue = {}
                for q, segs in queues.items():
                    segments = tuple((int(a), int(b)) for a, b in segs)
                    lasts = [b for _, b in segments]
                    if not 0 <= int(q) < topics[name].queues or lasts != sorted(set(lasts)):
                        raise ValueError(f"bad segments of {name}/{q}: {segs!r}")
                    per_queue[int(q)] = segments
                history[str(name)] = MappingProxyType(per_queue)
            extra = {str(k): v for k, v in data.items() if k not in _WIRE_KEYS}
            return cls(
                int(data["version"]),
                sets,
                MappingProxyType(topics),
                MappingProxyType(placement),
                MappingProxyType(groups),
                MappingProxyType(moves),
                MappingProxyType(history),
                MappingProxyType(extra),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"malformed cluster map: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class QueueMove:
    """A move of ``queue`` of ``topic`` from set ``source`` to set ``target`` in progress."""

    id: str
    topic: str
    queue: int
    source: int
    target: int
    started_at: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "queue": self.queue,
            "from": self.source,
            "to": self.target,
            "started_at": self.started_at,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> QueueMove:
        """``ValueError`` (or ``KeyError``/``TypeError``) if ``raw`` is not one."""
        move_id = raw["id"]
        if not isinstance(move_id, str) or not move_id:
            raise ValueError("a move id must be a non-empty string")
        queue = raw["queue"]
        if type(queue) is not int or queue < 0:
            raise ValueError("a move's queue must be an int >= 0")
        return cls(
            move_id,
            str(raw["topic"]),
            queue,
            int(raw["from"]),
            int(raw["to"]),
            float(raw["started_at"]),
        )
