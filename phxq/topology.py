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
group create``). Wire key ``consumer_groups`` (:mod:`phxq.groupspecs`); a map written before
groups were in it reads as having none.

**Versions.** Every change makes a new value with ``version + 1``. The map derived from the
config alone is version 0; the lock service's copy (:mod:`phxq.mapstore`) starts at 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from phxq import validate
from phxq.config import ClusterConfig, ConsumerGroupConfig, TopicConfig
from phxq.errors import BadArgument, ProtocolError, UnknownTopic
from phxq.groupspecs import group_from_wire, group_to_wire

__all__ = ["Topology", "deal", "least_loaded"]

_NO_GROUPS: Mapping[str, ConsumerGroupConfig] = MappingProxyType({})


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

    # ------------------------------------------------------------------------------ wire

    def to_wire(self) -> dict[str, Any]:
        return {
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
            return cls(
                int(data["version"]),
                tuple(int(s) for s in data["sets"]),
                MappingProxyType(topics),
                MappingProxyType(placement),
                MappingProxyType(groups),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"malformed cluster map: {exc!r}") from None
