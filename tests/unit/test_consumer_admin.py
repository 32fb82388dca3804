"""Runtime settings in the KV (limits, pause, resume), membership parsing, ownership view and
``--since`` parsing. The lock service is :class:`MemoryLocks` (the same calls as LockClient)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from phxq.client.types import ClusterMap
from phxq.config import ConfigError, parse_config
from phxq.consumer import admin
from phxq.consumer.locking import MemoryLocks
from phxq.consumer.settings import (
    GroupSettings,
    group_settings,
    member_groups,
    member_key,
    members,
    paused_key,
    rate_key,
)
from phxq.errors import BadArgument

CONFIG = parse_config(
    """
[cluster]
groups = 4

[[store]]
id = 1
addr = "127.0.0.1:7101"
data = "s1"

[[topic]]
name = "orders"
queues = 2

[[consumer_group]]
name = "billing"
topic = "orders"
handler = "http://127.0.0.1:8080/hook"
rate_limit = 500
rate_limit_bytes = 1000000

[[consumer_group]]
name = "audit"
topic = "orders"
handler = "json:dumps"
"""
)
BILLING = CONFIG.consumer_group("billing")


async def settings(locks: MemoryLocks, group: str = "billing") -> GroupSettings:
    return group_settings(CONFIG.consumer_group(group), await locks.kv_list("settings/"))


async def test_without_runtime_settings_the_config_applies() -> None:
    locks = MemoryLocks()
    assert await settings(locks) == GroupSettings(500.0, 1000000, paused=False, unblock=0)
    assert await settings(locks, "audit") == GroupSettings(None, None)


async def test_limit_changes_only_what_is_given_and_reset_goes_back() -> None:
    locks = MemoryLocks()
    now = await admin.set_limit(locks, CONFIG, "billing", messages=50)
    assert now == {"messages": 50, "bytes": 1000000, "source": "runtime"}
    assert await settings(locks) == GroupSettings(50.0, 1000000)
    await admin.set_limit(locks, CONFIG, "billing", bytes_per_s=None)
    assert await settings(locks) == GroupSettings(50.0, None)
    await admin.set_limit(locks, CONFIG, "billing", messages=None)
    assert await settings(locks) == GroupSettings(None, None)
    assert (await settings(locks, "audit")).rate_limit is None  # other groups untouched
    await admin.set_limit(locks, CONFIG, "billing", reset=True)
    assert await settings(locks) == GroupSettings(500.0, 1000000)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "10", True])
async def test_bad_limits_are_refused(bad: object) -> None:
    with pytest.raises(BadArgument):
        await admin.set_limit(MemoryLocks(), CONFIG, "billing", messages=bad)


async def test_unknown_group_is_refused() -> None:
    with pytest.raises(ConfigError):
        await admin.pause(MemoryLocks(), CONFIG, "nope")


async def test_pause_and_resume_and_resume_bumps_unblock() -> None:
    locks = MemoryLocks()
    await admin.pause(locks, CONFIG, "billing")
    assert (await settings(locks)).paused
    assert not (await settings(locks, "audit")).paused
    await admin.resume(locks, CONFIG, "billing")
    await admin.resume(locks, CONFIG, "billing")
    s = await settings(locks)
    assert not s.paused and s.unblock == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (rate_key("billing"), "fast"),
        (rate_key("billing"), {"messages": -1}),
        (rate_key("billing"), {"messages": "10"}),
        (paused_key("billing"), "yes"),
    ],
)
async def test_malformed_settings_fall_back_to_the_config(key: str, value: object) -> None:
    locks = MemoryLocks()
    await locks.kv_put(key, value)
    assert await settings(locks) == GroupSettings(500.0, 1000000)


def test_members_parse_weights_and_tolerate_junk() -> None:
    entries = {
        member_key("a"): ({"weight": 2, "owner": "a#1"}, 5),
        member_key("b"): ("junk", 6),
        "elsewhere/c": ({"weight": 1}, 7),
    }
    assert members(entries) == {"a": 2.0, "b": 1.0}


async def test_member_keys_expire_without_heartbeats() -> None:
    now = [100.0]
    locks = MemoryLocks(clock=lambda: now[0])
    await locks.kv_put(member_key("a"), {"weight": 1}, ttl=3.0)
    assert members(await locks.kv_list("consumers/")) == {"a": 1.0}
    now[0] += 3.5
    assert members(await locks.kv_list("consumers/")) == {}


async def test_ownership_lists_every_pair_with_its_holder() -> None:
    locks = MemoryLocks()
    await locks.kv_put(member_key("c1"), {"weight": 1.0})
    token = await locks.acquire("cg/billing/orders/1", "c1#abc", 30)
    view = await admin.ownership(CONFIG, locks)
    assert view["members"] == {"c1": 1.0}
    assert len(view["pairs"]) == 4
    held = [p for p in view["pairs"] if p["owner"] is not None]
    assert held == [
        {
            "group": "billing",
            "topic": "orders",
            "queue": 1,
            "owner": "c1#abc",
            "token": token,
            "expires_in": held[0]["expires_in"],
        }
    ]
    lines = admin.format_ownership(view)
    assert any("c1#abc" in line for line in lines)


def test_parse_since() -> None:
    now = 1_700_000_000.0
    assert admin.parse_since("1699999000", now) == 1699999000.0
    assert admin.parse_since("5m", now) == now - 300
    assert admin.parse_since("90s", now) == now - 90
    iso = "2023-11-14T22:13:20+00:00"
    assert admin.parse_since(iso, now) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC).timestamp()
    for bad in ("yesterday", "-5", "nan", ""):
        with pytest.raises(BadArgument):
            admin.parse_since(bad, now)


async def test_replay_arguments_are_checked() -> None:
    class NoClient:
        async def seek(self, *a: object, **k: object) -> int:
            raise AssertionError("must not be called")

        async def cluster_map(self) -> object:
            return ClusterMap(groups=4, nodes={}, topics={}, masters={})  # the config counts

    client = NoClient()
    with pytest.raises(BadArgument):
        await admin.replay(CONFIG, client, "billing")  # type: ignore[arg-type]
    with pytest.raises(BadArgument):
        await admin.replay(CONFIG, client, "billing", since=1.0, offset=5)  # type: ignore[arg-type]
    with pytest.raises(BadArgument):
        await admin.replay(CONFIG, client, "billing", offset=5)  # type: ignore[arg-type]
    with pytest.raises(BadArgument):
        await admin.replay(CONFIG, client, "billing", since=1.0, queues=[7])  # type: ignore[arg-type]


def test_member_groups_say_which_consumer_groups_a_member_serves() -> None:
    entries = {
        member_key("a"): ({"weight": 1, "groups": ["billing", "audit"]}, 1),
        member_key("b"): ({"weight": 1}, 2),  # did not say: any group
        member_key("c"): ({"weight": 1, "groups": "billing"}, 3),  # malformed: any group
    }
    assert member_groups(entries) == {"a": frozenset({"billing", "audit"}), "b": None, "c": None}
