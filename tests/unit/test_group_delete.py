"""``phxq admin group delete`` (phxq.groupadmin.group_delete, Topology.without_group): the map's
compare-and-set, config groups refused, unknown groups NotFound, the group's runtime settings
removed, admin only; and a map keeps the top-level keys of newer versions when rewritten."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from phxq import groupadmin, mapstore
from phxq.cli import cli
from phxq.config import ClusterConfig, parse_config
from phxq.consumer.locking import MemoryLocks
from phxq.errors import BadArgument, Forbidden, NotFound
from phxq.security.policy import LOCK_RULES, Guard, Session
from phxq.security.principals import Principals, new_token, token_sha256
from phxq.topology import Topology

CONFIG = """
[[store]]
id = 1
addr = "127.0.0.1:7101"
data = "s1"

[[lock]]
id = 1
addr = "127.0.0.1:7201"
data = "l1"

[[topic]]
name = "orders"
queues = 2

[[consumer_group]]
name = "billing"
topic = "orders"
handler = "m:f"
"""

TOKENS = {"admin": new_token(), "consumer": new_token()}
PRINCIPALS = Principals(
    [
        ("admin", token_sha256(TOKENS["admin"]), ["admin"]),
        ("consumer", token_sha256(TOKENS["consumer"]), ["consume:orders:*"]),
    ]
)


class GuardedLocks(MemoryLocks):
    """MemoryLocks whose KV calls first pass the lock service's permission table, as the
    token ``who`` (what the real lock daemon's guard does before each handler)."""

    def __init__(self, who: str) -> None:
        super().__init__()
        self.guard = Guard(LOCK_RULES, PRINCIPALS)
        self.session = Session("peer", None)
        self.guard.hello(self.session, {"token": TOKENS[who]})

    async def kv_get(self, key: str) -> tuple[Any, int]:
        self.guard.authorize(self.session, "kv_get", {"key": key})
        return await super().kv_get(key)

    async def kv_put(
        self, key: str, value: Any, expect_version: int | None = None, ttl: float | None = None
    ) -> int:
        self.guard.authorize(self.session, "kv_put", {"key": key})
        return await super().kv_put(key, value, expect_version, ttl)

    async def kv_delete(self, key: str, expect_version: int | None = None) -> None:
        self.guard.authorize(self.session, "kv_delete", {"key": key})
        await super().kv_delete(key, expect_version)

    async def kv_list(self, prefix: str) -> dict[str, tuple[Any, int]]:
        self.guard.authorize(self.session, "kv_list", {"prefix": prefix})
        return await super().kv_list(prefix)


@pytest.fixture
def cfg() -> ClusterConfig:
    return parse_config(CONFIG)


def use(monkeypatch: pytest.MonkeyPatch, locks: MemoryLocks) -> None:
    """groupadmin talks to ``locks``; no store to confirm the map version."""

    @contextlib.asynccontextmanager
    async def opened(cfg: ClusterConfig) -> AsyncIterator[MemoryLocks]:
        yield locks

    async def confirm(cfg: ClusterConfig, version: int) -> list[int]:
        return []

    monkeypatch.setattr(groupadmin, "_locks", opened)
    monkeypatch.setattr(groupadmin, "_confirm", confirm)


async def test_delete_removes_an_online_group_and_its_settings_only(
    cfg: ClusterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    locks = GuardedLocks("admin")
    use(monkeypatch, locks)
    await groupadmin.group_create(cfg, "audit", topic="orders", handler="m:g")
    await groupadmin.group_create(cfg, "audit2", topic="orders", handler="m:g")
    await locks.kv_put("settings/audit/paused", True)
    await locks.kv_put("settings/audit/rate_limit", {"messages": 5.0, "bytes": None})
    await locks.kv_put("settings/audit2/paused", True)
    before, _ = await mapstore.load(locks)
    assert before is not None

    row = await groupadmin.group_delete(cfg, "audit")
    assert row["name"] == "audit" and row["topic"] == "orders" and row["handler"] == "m:g"
    assert row["map_version"] == before.version + 1 and row["settings_removed"] == 2
    after, _ = await mapstore.load(locks)
    assert after is not None and set(after.groups) == {"billing", "audit2"}
    assert "orders.dlq" in after.topics  # its topics stay
    assert set(await locks.kv_list("settings/")) == {"settings/audit2/paused"}
    assert [r["name"] for r in await groupadmin.group_list(cfg)] == ["audit2", "billing"]

    with pytest.raises(NotFound, match="no consumer group 'audit'") as info:
        await groupadmin.group_delete(cfg, "audit")
    assert info.value.data == {"group": "audit"}
    # A config group: refused, saying to remove it from the config; nothing changes.
    with pytest.raises(BadArgument, match=r"remove it from the config first"):
        await groupadmin.group_delete(cfg, "billing")
    assert (await mapstore.load(locks))[0] == after
    # The name can be used again, with its table's settings.
    again = await groupadmin.group_create(cfg, "audit", topic="orders", handler="m:h")
    assert again["handler"] == "m:h" and again["map_version"] == after.version + 1


async def test_delete_is_admin_only(cfg: ClusterConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = GuardedLocks("admin")
    use(monkeypatch, admin)
    await groupadmin.group_create(cfg, "audit", topic="orders", handler="m:g")
    consumer = GuardedLocks("consumer")
    consumer._kv = admin._kv  # the same lock service, another caller
    use(monkeypatch, consumer)
    with pytest.raises(Forbidden):
        await groupadmin.group_delete(cfg, "audit")
    topo, _ = await mapstore.load(admin)
    assert topo is not None and "audit" in topo.groups


def test_without_group_and_keys_of_newer_versions_survive_a_rewrite(cfg: ClusterConfig) -> None:
    topo = Topology.from_config(cfg)
    with pytest.raises(NotFound):
        topo.without_group("nope")
    gone = topo.without_group("billing")
    assert gone.groups == {} and gone.version == topo.version + 1 and gone.topics == topo.topics
    wire = topo.to_wire()
    wire["quotas"] = {"orders": {"bytes": 10}}  # a part a newer version writes
    read = Topology.from_wire(wire)
    assert read.extra == {"quotas": {"orders": {"bytes": 10}}}
    assert read.without_group("billing").to_wire()["quotas"] == {"orders": {"bytes": 10}}
    assert Topology.from_wire(read.to_wire()) == read
    assert "extra" not in read.to_wire() and "extra" not in topo.to_wire()


async def test_a_map_change_keeps_keys_it_does_not_know(cfg: ClusterConfig) -> None:
    locks = MemoryLocks()
    topo = await mapstore.seed(locks, cfg)
    await locks.kv_put(mapstore.MAP_KEY, {**topo.to_wire(), "quotas": [1, 2]})
    await mapstore.update(locks, cfg, lambda t: t.without_group("billing"))
    value, _ = await locks.kv_get(mapstore.MAP_KEY)
    assert value["quotas"] == [1, 2] and value["consumer_groups"] == {}


def test_the_cli_errors_are_one_line_and_the_help_says_cursors_stay(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(CONFIG)
    runner = CliRunner()
    for name, error in (("nope", "NotFound: no consumer group 'nope'"), ("billing", "BadArgument")):
        use(monkeypatch, MemoryLocks())  # one per event loop (the CLI runs its own)
        result = runner.invoke(cli, ["admin", "group", "delete", name, "--config", str(path)])
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"Error: {error}")
    helped = runner.invoke(cli, ["admin", "group", "delete", "--help"]).output
    assert "cursors stay" in helped and "remove its [[consumer_group]] table" in helped
