"""The gateway's view of consumer groups: the config's plus the cluster map's (KnownGroups),
against an in-memory stand-in for the lock service's KV."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from phxq.config import ClusterConfig, load_config
from phxq.devconfig import write_dev_config
from phxq.errors import Unavailable
from phxq.gateway.groups import MAP_READ_TIMEOUT, VIEW_MAX_AGE, KnownGroups
from phxq.gateway.problems import Problem
from phxq.groupspecs import group_from_table
from phxq.mapstore import MAP_KEY
from phxq.topology import Topology

BILLING = '[[consumer_group]]\nname = "billing"\ntopic = "orders"\nhandler = "m:f"\n'


class FakeKV:
    """``kv_get`` of the lock client: the map (or an error), counting reads."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: Exception | None = None
        self.reads = 0
        self.timeouts: list[float | None] = []
        self.gate: asyncio.Event | None = None

    async def kv_get(self, key: str, *, timeout: float | None = None) -> tuple[Any, int]:
        assert key == MAP_KEY
        self.reads += 1
        self.timeouts.append(timeout)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value, 1 if self.value is not None else 0


@pytest.fixture
def cfg(tmp_path: Path) -> ClusterConfig:
    return load_config(write_dev_config(tmp_path, nodes=3, groups=2, extra=BILLING))


def with_online_group(cfg: ClusterConfig, name: str) -> Any:
    spec = group_from_table({"name": name, "topic": "orders", "handler": "m:f"})
    return Topology.from_config(cfg).with_group(spec).to_wire()


async def test_a_config_group_needs_no_map_read(cfg: ClusterConfig) -> None:
    kv = FakeKV()
    known = KnownGroups(cfg, lambda: kv)
    assert (await known.require("billing")).topic == "orders"
    assert kv.reads == 0


async def test_an_unknown_group_reads_the_map_once_then_is_known_or_404(
    cfg: ClusterConfig,
) -> None:
    kv = FakeKV()
    known = KnownGroups(cfg, lambda: kv)
    with pytest.raises(Problem) as info:
        await known.require("web")
    assert info.value.status == 404 and kv.reads == 1
    kv.value = with_online_group(cfg, "web")
    assert (await known.require("web")).name == "web"
    assert kv.reads == 2 and kv.timeouts == [MAP_READ_TIMEOUT] * 2
    await known.require("web")  # cached now
    assert kv.reads == 2
    names = [g.name for g in (await known.config()).consumer_groups]
    assert names == ["billing", "web"]


async def test_concurrent_misses_share_one_map_read(cfg: ClusterConfig) -> None:
    kv = FakeKV()
    kv.value = with_online_group(cfg, "web")
    kv.gate = asyncio.Event()
    known = KnownGroups(cfg, lambda: kv)
    waiting = [asyncio.ensure_future(known.require("web")) for _ in range(5)]
    await asyncio.sleep(0.01)
    kv.gate.set()
    specs = await asyncio.gather(*waiting)
    assert {s.name for s in specs} == {"web"} and kv.reads == 1


async def test_map_home_down_keeps_the_last_view_and_is_503_for_an_unknown_group(
    cfg: ClusterConfig,
) -> None:
    kv = FakeKV()
    kv.value = with_online_group(cfg, "web")
    known = KnownGroups(cfg, lambda: kv)
    await known.config(refresh=True)
    kv.error = Unavailable("no lock node answered")
    names = [g.name for g in (await known.config(refresh=True)).consumer_groups]
    assert names == ["billing", "web"]  # the last view, not an error
    with pytest.raises(Unavailable):  # cannot tell that "ghost" does not exist
        await known.require("ghost")


async def test_a_group_deleted_online_is_404_once_the_view_is_older_than_its_max_age(
    cfg: ClusterConfig,
) -> None:
    now = [100.0]
    kv = FakeKV()
    kv.value = with_online_group(cfg, "web")
    known = KnownGroups(cfg, lambda: kv, clock=lambda: now[0])
    assert (await known.require("web")).name == "web" and kv.reads == 1
    kv.value = Topology.from_wire(kv.value).without_group("web").to_wire()  # group delete
    now[0] += VIEW_MAX_AGE / 2
    assert (await known.require("web")).name == "web" and kv.reads == 1  # the cached view
    assert (await known.require("billing")).name == "billing" and kv.reads == 1  # config's
    now[0] += VIEW_MAX_AGE
    with pytest.raises(Problem) as info:
        await known.require("web")
    assert info.value.status == 404 and kv.reads == 2
    names = [g.name for g in (await known.config(refresh=True)).consumer_groups]
    assert names == ["billing"]
    # The map's home down: a group of the last view is still served (cannot tell otherwise).
    kv.value = with_online_group(cfg, "web")
    await known.config(refresh=True)
    kv.error = Unavailable("no lock node answered")
    now[0] += 2 * VIEW_MAX_AGE
    assert (await known.require("web")).name == "web" and kv.reads == 5
