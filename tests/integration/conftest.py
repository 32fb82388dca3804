"""Fixtures that start real store processes on ephemeral 127.0.0.1 ports in a temp directory
and always stop them, even when the test fails."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool

from .checkback import CheckHandler, serving


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., ProcessCluster]]:
    clusters: list[ProcessCluster] = []

    def make(
        nodes: int = 3,
        groups: int = 4,
        locks: bool = False,
        sets: int = 1,
        wait_locks: bool = False,
        **kw: Any,
    ) -> ProcessCluster:
        """Started, every group with a master; ``wait_locks``: the lock service too."""
        stores = nodes * sets  # ``sets`` store sets of ``nodes`` stores each
        ports = free_ports(stores + nodes)
        path = write_dev_config(
            tmp_path / f"c{len(clusters)}",
            nodes=nodes,
            groups=groups,
            store_ports=ports[:stores],
            lock_ports=ports[stores:],
            sets=sets,
            **kw,
        )
        cluster = ProcessCluster(path, locks=locks)
        clusters.append(cluster)
        cluster.start()
        cluster.wait_ready(timeout=30)
        if wait_locks:
            cluster.wait_locks_ready()
        return cluster

    yield make
    for c in clusters:
        c.stop()


@pytest.fixture
def cluster(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster()


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except PhxqError as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def group_master(
    pool: RpcPool, cluster: ProcessCluster, group: int, set_number: int | None = None
) -> int:
    """The store id every live store (of set ``set_number``, if given) agrees is master of
    ``group``."""
    cfg = cluster.config
    stores = cfg.stores if set_number is None else cfg.set_stores(set_number)
    where = "" if set_number is None else f" in set {set_number}"

    async def agreed() -> int | None:
        seen = set()
        for s in stores:
            if cluster.alive(s.id):
                meta = await pool.call(s.addr, "meta", {}, timeout=1.0)
                seen.add(meta["masters"].get(str(group)))
        return int(seen.pop()) if len(seen) == 1 and None not in seen else None

    result: int = await wait_until(agreed, 20, f"an agreed master of group {group}{where}")
    return result


async def replica_views(pool: RpcPool, cluster: ProcessCluster) -> dict[int, dict[str, Any]]:
    views = {}
    for s in cluster.config.stores:
        if cluster.alive(s.id):
            views[s.id] = await pool.call(s.addr, "status", {}, timeout=2.0)
    return views


async def phxq_admin(cluster: ProcessCluster, *args: str) -> str:
    """``phxq admin ARGS --config <cluster's>`` as a subprocess: its stdout (AssertionError
    with its stderr if it fails)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phxq",
        "admin",
        *args,
        "--config",
        str(cluster.config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(err.decode())
    return out.decode()


@pytest.fixture
async def check_handler() -> AsyncIterator[tuple[CheckHandler, int]]:
    """A producer group's check handler served on 127.0.0.1, and its port (see checkback)."""
    handler = CheckHandler()
    async with serving(handler) as port:
        yield handler, port
