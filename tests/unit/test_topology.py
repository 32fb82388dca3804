"""Store sets in the config and the cluster map (phxq.topology): placement, changes, wire form."""

from __future__ import annotations

from pathlib import Path

import pytest

from phxq.config import ConfigError, TopicConfig, dump_config, parse_config
from phxq.config.check import check_config
from phxq.errors import BadArgument, ProtocolError, UnknownTopic
from phxq.topology import Topology, deal, least_loaded


def _stores(per_set: dict[int, int]) -> str:
    out, i = [], 0
    for number, count in per_set.items():
        for _ in range(count):
            i += 1
            out.append(
                f'[[store]]\nid = {i}\naddr = "127.0.0.1:{7100 + i}"\ndata = "s{i}"\n'
                f"set = {number}\n"
            )
    return "\n".join(out)


TOPICS = """
[[topic]]
name = "orders"
queues = 8

[[topic]]
name = "audit"
queues = 3
sets = [2]
"""


def test_stores_default_to_set_1_and_a_single_set_may_have_any_size() -> None:
    cfg = parse_config('[[store]]\nid = 1\naddr = "127.0.0.1:7101"\ndata = "s1"\n')
    assert cfg.stores[0].set == 1 and cfg.sets == (1,)


def test_two_sets_parse_and_round_trip_through_dump() -> None:
    cfg = parse_config(_stores({1: 3, 2: 3}) + TOPICS)
    assert cfg.sets == (1, 2)
    assert [s.id for s in cfg.set_stores(2)] == [4, 5, 6]
    assert cfg.topic("audit").sets == (2,) and cfg.topic("orders").sets is None
    assert parse_config(dump_config(cfg)) == cfg


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (_stores({1: 3, 2: 2}), "store[4].set", "store set 2 has 2 stores"),
        (_stores({1: 3, 2: 4}), "store[6].set", "store set 2 has 4 stores"),
        (_stores({1: 3, 2: 3}).replace("set = 2", "set = 0"), "store[3].set", "positive"),
        (_stores({1: 3}) + TOPICS, "topic[1].sets", "no [[store]] has set = 2"),
        (_stores({1: 3}) + TOPICS.replace("[2]", "[]"), "topic[1].sets", "non-empty array"),
        (_stores({1: 3}) + TOPICS.replace("[2]", "[1, 1]"), "topic[1].sets", "twice"),
        (
            _stores({1: 3}) + '[[lock]]\nid = 1\naddr = "127.0.0.1:7201"\ndata = "l"\nset = 1\n',
            "lock[0].set",
            "unknown key",
        ),
    ],
)
def test_set_config_errors_name_the_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.data["key"] == key
    assert problem in info.value.message


def test_the_seed_placement_deals_queues_round_robin_over_the_topic_sets() -> None:
    topo = Topology.from_config(parse_config(_stores({1: 3, 2: 3, 3: 3}) + TOPICS))
    assert topo.version == 0 and topo.sets == (1, 2, 3)
    assert topo.placement["orders"] == (1, 2, 3, 1, 2, 3, 1, 2)
    assert topo.placement["audit"] == (2, 2, 2)
    assert topo.route("orders", 5, 4) == (3, 1)
    assert topo.queues_on(2) == {"orders": [1, 4, 7], "audit": [0, 1, 2]}
    assert topo.load() == {1: 3, 2: 6, 3: 2}
    assert deal(4, [2, 1]) == (1, 2, 1, 2)
    with pytest.raises(UnknownTopic):
        topo.set_of("nope", 0)
    with pytest.raises(BadArgument):
        topo.set_of("orders", 8)


def test_new_queues_go_to_the_least_loaded_sets_and_old_ones_stay() -> None:
    topo = Topology.from_config(parse_config(_stores({1: 3, 2: 3, 3: 3}) + TOPICS))
    grown = topo.altered("orders", queues=12)
    assert grown.version == 1
    assert grown.placement["orders"][:8] == topo.placement["orders"]  # never moved
    assert grown.placement["orders"][8:] == (3, 1, 3, 1)  # loads were 3, 6, 2; ties: lowest
    assert least_loaded({1: 5, 2: 5}, [1, 2], 3) == [1, 2, 1]
    with pytest.raises(BadArgument, match="not removed"):
        topo.altered("orders", queues=4)
    created = grown.with_topic(TopicConfig("logs", 2, sets=(1, 2)))
    assert created.version == 2 and created.placement["logs"] == (1, 1)  # loads 5, 6
    with pytest.raises(BadArgument, match="already exists"):
        created.with_topic(TopicConfig("logs", 2))
    with pytest.raises(BadArgument, match="no store set 9"):
        created.with_topic(TopicConfig("x", 2, sets=(9,)))


def test_the_map_round_trips_its_wire_form_and_rejects_garbage() -> None:
    topo = Topology.from_config(parse_config(_stores({1: 3, 2: 3}) + TOPICS)).altered(
        "audit", queues=4, retention=60.0
    )
    assert Topology.from_wire(topo.to_wire()) == topo
    for bad in (None, {}, {"version": 1, "sets": [1], "topics": {"a": {"queues": 2}}}):
        with pytest.raises(ProtocolError):
            Topology.from_wire(bad)
    wire = topo.to_wire()
    wire["topics"]["audit"]["placement"] = [2]
    with pytest.raises(ProtocolError, match="placement"):
        Topology.from_wire(wire)


def test_config_check_counts_the_store_sets(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(_stores({1: 3, 2: 3}) + TOPICS)
    assert "6 stores in 2 store sets, 0 lock nodes" in str(check_config(path))
