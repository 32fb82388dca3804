"""The cluster map's home (phxq.mapstore) and a store's copy of it (phxq.store.mapfollow),
over the in-memory lock KV: racing seeds, idempotent re-seeds, concurrent changes, StaleMap."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from phxq import mapstore
from phxq.config import TopicConfig, parse_config
from phxq.consumer.locking import MemoryLocks
from phxq.errors import StaleMap
from phxq.store.mapfollow import MapFollower
from phxq.topology import Topology


def _config(sets: int = 2, extra: str = "") -> Any:
    stores = "".join(
        f'[[store]]\nid = {i}\naddr = "127.0.0.1:{7100 + i}"\ndata = "s{i}"\n'
        f"set = {(i - 1) // 3 + 1}\n"
        for i in range(1, 3 * sets + 1)
    )
    return parse_config(stores + '[[topic]]\nname = "orders"\nqueues = 8\n' + extra)


class CountingLocks(MemoryLocks):
    """MemoryLocks that yields between a read and a write (so racing writers interleave) and
    counts the writes."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.writes = 0

    async def kv_get(self, key: str) -> tuple[Any, int]:
        await asyncio.sleep(self.rng.random() / 1000)
        return await super().kv_get(key)

    async def kv_put(self, key: str, value: Any, **kw: Any) -> int:  # type: ignore[override]
        await asyncio.sleep(self.rng.random() / 1000)
        version = await super().kv_put(key, value, **kw)
        self.writes += 1
        return version


@pytest.mark.parametrize("seed", range(20))
async def test_racing_seeds_agree_on_one_map_and_reseeding_writes_nothing(seed: int) -> None:
    locks = CountingLocks(seed)
    cfg = _config()
    maps = await asyncio.gather(*(mapstore.seed(locks, cfg) for _ in range(6)))
    assert all(m == maps[0] for m in maps) and maps[0].version == 1, f"seed {seed}"
    assert maps[0] == replace(Topology.from_config(cfg), version=1)
    assert locks.writes == 1
    assert await mapstore.seed(locks, cfg) == maps[0] and locks.writes == 1


@pytest.mark.parametrize("seed", range(20))
async def test_concurrent_changes_are_all_applied_once_each(seed: int) -> None:
    locks = CountingLocks(seed)
    cfg = _config()
    await mapstore.seed(locks, cfg)
    names = [f"t{i}" for i in range(5)]
    await asyncio.gather(
        *(
            mapstore.update(locks, cfg, lambda t, n=n: t.with_topic(TopicConfig(n, 2)))
            for n in names
        )
    )
    final, _ = await mapstore.load(locks)
    assert final is not None and final.version == 1 + len(names), f"seed {seed}"
    assert set(names) <= set(final.topics)
    assert sorted(final.load().values()) == [9, 9]  # 8 + 10 queues, least-loaded each time


async def test_a_seed_adds_new_config_topics_and_sets_but_keeps_the_maps_settings() -> None:
    locks = CountingLocks(0)
    first = await mapstore.seed(locks, _config(sets=1))
    altered = await mapstore.update(
        locks, _config(sets=1), lambda t: t.altered("orders", retention=60.0)
    )
    assert altered.version == first.version + 1
    grown = await mapstore.seed(locks, _config(sets=2, extra='[[topic]]\nname = "b"\nqueues = 2\n'))
    assert grown.sets == (1, 2) and grown.topic("orders").retention == 60.0
    assert grown.placement["b"] == (2, 2)  # the new set held nothing
    assert grown.placement["orders"] == first.placement["orders"]


async def test_a_follower_adopts_newer_maps_only_and_redirects_older_requests(
    tmp_path: Path,
) -> None:
    cfg = _config()
    seen: list[int] = []
    follower = MapFollower(cfg, tmp_path, None, lambda t: seen.append(t.version))
    assert follower.version == 0
    v2 = Topology.from_config(cfg).with_topic(TopicConfig("x", 1)).with_topic(TopicConfig("y", 1))
    assert await follower.adopt(v2) and not await follower.adopt(Topology.from_config(cfg))
    assert seen == [2]
    with pytest.raises(StaleMap) as info:
        await follower.check(1)
    assert info.value.version == 2
    await follower.check(2)
    await follower.check(3)  # newer: no home to ask here, served with what it has
    # A restarted store starts from the copy it saved; a damaged copy is ignored.
    assert MapFollower(cfg, tmp_path, None, seen.append).topology == v2
    (tmp_path / "cluster-map.json").write_text("{not json")
    assert MapFollower(cfg, tmp_path, None, seen.append).version == 0
