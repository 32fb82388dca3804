"""Consumer groups in the cluster map (phxq.topology, phxq.groupspecs, phxq.mapstore): seeded
from the config idempotently, added online with the TOML's rules, and an older map without
groups still read."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from phxq import mapstore
from phxq.config import ConfigError, parse_config
from phxq.consumer.locking import MemoryLocks
from phxq.errors import BadArgument, ProtocolError, UnknownTopic
from phxq.groupadmin import _with_group
from phxq.groupspecs import group_from_table, group_from_wire, group_to_wire
from phxq.topology import Topology

BASE = """
[[store]]
id = 1
addr = "127.0.0.1:7101"
data = "s1"

[[topic]]
name = "orders"
queues = 4
"""
BILLING = """
[[consumer_group]]
name = "billing"
topic = "orders"
handler = "http://127.0.0.1:8080/hook"
rate_limit = 500
handler_timeout = "3s"
signing_secret_file = "/etc/phxq/secret"
"""


def test_groups_round_trip_the_wire_form_and_an_old_map_without_them_parses() -> None:
    cfg = parse_config(BASE + BILLING)
    topo = Topology.from_config(cfg)
    assert set(topo.groups) == {"billing"}
    (billing,) = cfg.consumer_groups
    assert group_from_wire(group_to_wire(billing)) == billing
    assert group_to_wire(billing)["signing_secret_file"] == "/etc/phxq/secret"
    assert Topology.from_wire(topo.to_wire()) == topo
    old = topo.to_wire()
    del old["consumer_groups"]  # a map written before groups were in it
    assert Topology.from_wire(old).groups == {}
    bad = topo.to_wire()
    bad["consumer_groups"]["billing"]["max_attempts"] = 0
    with pytest.raises(ProtocolError, match="max_attempts"):
        Topology.from_wire(bad)


async def test_seeding_adds_config_groups_once_and_keeps_the_maps_copy() -> None:
    locks = MemoryLocks()
    first = await mapstore.seed(locks, parse_config(BASE))
    assert first.version == 1 and first.groups == {}
    # A config that gained a group (an upgraded cluster): the seed adds it (and the dead-letter
    # topic the config declares implicitly), once.
    cfg = parse_config(BASE + BILLING)
    second = await mapstore.seed(locks, cfg)
    assert second.version == 3 and second.groups["billing"] == cfg.consumer_groups[0]
    assert "orders.dlq" in second.topics
    assert await mapstore.seed(locks, cfg) == second
    # The map's copy wins over a config that changed the group since.
    changed = parse_config(BASE + BILLING.replace("rate_limit = 500", "rate_limit = 9"))
    assert (await mapstore.seed(locks, changed)).groups["billing"].rate_limit == 500.0


def test_groups_created_online_follow_the_tomls_rules(tmp_path: Path) -> None:
    topo = replace(Topology.from_config(parse_config(BASE)), version=1)
    spec = group_from_table({"name": "audit", "topic": "orders", "handler": "m:f"})
    added = _with_group(topo, spec)
    # Dead letters by default, to orders.dlq, created like the TOML declares it implicitly.
    assert added.groups["audit"].dead_letter == "orders.dlq"
    assert added.topics["orders.dlq"].queues == 4 and added.version == 3
    with pytest.raises(BadArgument, match="already exists"):
        _with_group(added, spec)
    with pytest.raises(UnknownTopic):
        _with_group(topo, replace(spec, name="x", topic="nope"))
    with pytest.raises(BadArgument, match="no topic 'gone'"):
        topo.with_group(replace(spec, name="x", dead_letter="gone"))
    with pytest.raises(ConfigError, match="handler"):
        group_from_table({"name": "x", "topic": "orders", "handler": "not a handler"})
    with pytest.raises(ConfigError, match="concurrency"):
        group_from_table({"name": "x", "topic": "orders", "handler": "m:f", "concurrency": 4})


async def test_admin_commands_fall_back_to_the_config_fast_when_the_lock_service_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Lock nodes configured but none running: the map read gives up after MAP_READ_TIMEOUT
    # (not the lock client's whole retry budget) and the config's groups are used as they are.
    from phxq import groupadmin
    from phxq.devcluster import free_ports

    ports = free_ports(2)
    cfg = parse_config(
        f"""
[[store]]
id = 1
addr = "127.0.0.1:{ports[0]}"
data = "s1"

[[lock]]
id = 1
addr = "127.0.0.1:{ports[1]}"
data = "l1"

[[topic]]
name = "orders"
queues = 2
"""
    )
    monkeypatch.setattr(groupadmin, "MAP_READ_TIMEOUT", 0.2)
    assert await asyncio.wait_for(groupadmin.with_map_groups(cfg), 5.0) is cfg
