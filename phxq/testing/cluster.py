"""``LocalCluster``: a whole phxq cluster inside your test's event loop.

Public API::

    async with LocalCluster(tmp_path, groups=4, locks=True) as cluster:
        async with phxq.Client(cluster.addresses) as client:
            await client.enqueue("orders", b"hello")
        cluster.addresses        # the stores' "127.0.0.1:PORT" addresses
        cluster.lock_addresses   # the lock nodes' (empty without ``locks``)
        cluster.config_path      # the cluster.toml it wrote (give it to phxq's CLI or daemons)
        cluster.config           # the parsed ClusterConfig

Three store daemons (and, with ``locks``, three lock nodes) run as ``StoreNode``/``LockNode``
objects in the current event loop: real sockets on ephemeral 127.0.0.1 ports, real PLog files
with fdatasync under ``data``; only the process boundary is gone, so a test starts in about a
second and a failure's traceback shows the daemon's frames too. The topics are those of
``phxq dev`` (``orders`` and the others of ``phxq.devconfig.DEV_TOPICS``); ``extra`` is TOML
appended to the config (more ``[[topic]]`` tables, say). Entering waits until every group
has a master all stores agree on (and the lock nodes a serving master); leaving stops every
node, even when the test failed. For crashes, partitions and restarts of real processes, see
``phxq dev`` and the fault suite in the repository's ``tools/`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from phxq.config import ClusterConfig, load_config
from phxq.devconfig import free_ports, write_dev_config
from phxq.errors import PhxqError
from phxq.lock.node import LockNode
from phxq.net.rpc import RpcPool
from phxq.store.node import StoreNode


class LocalCluster:
    def __init__(
        self,
        data: Path,
        *,
        groups: int = 4,
        locks: bool = False,
        extra: str = "",
        ready_timeout: float = 30.0,
    ) -> None:
        self.data = Path(data)
        self.groups = groups
        self.locks = locks
        self.extra = extra
        self.ready_timeout = ready_timeout
        self.config_path = self.data / "cluster.toml"
        self._config: ClusterConfig | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def config(self) -> ClusterConfig:
        if self._config is None:
            raise RuntimeError("LocalCluster is not started (use async with)")
        return self._config

    @property
    def addresses(self) -> list[str]:
        return [store.addr for store in self.config.stores]

    @property
    def lock_addresses(self) -> list[str]:
        return [lock.addr for lock in self.config.locks] if self.locks else []

    async def __aenter__(self) -> LocalCluster:
        ports = free_ports(6)
        path = write_dev_config(
            self.data,
            groups=self.groups,
            store_ports=ports[:3],
            lock_ports=ports[3:],
            extra=self.extra,
        )
        self._config = config = load_config(path)
        try:
            for store in config.stores:
                await self._stack.enter_async_context(StoreNode(config, store.id))
            if self.locks:
                for lock in config.locks:
                    await self._stack.enter_async_context(LockNode(config, lock.id))
            await self._wait_ready()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        state: Any = "not asked yet"
        async with RpcPool() as pool:
            while loop.time() < deadline:
                try:
                    state = await self._ready(pool)
                except PhxqError as exc:
                    state = exc
                if state is True:
                    return
                await asyncio.sleep(0.02)
        raise TimeoutError(f"local cluster not ready after {self.ready_timeout}s: {state}")

    async def _ready(self, pool: RpcPool) -> Any:
        views = [
            (await pool.call(addr, "meta", {}, timeout=1.0))["masters"] for addr in self.addresses
        ]
        for group in range(self.groups):
            seen = {view.get(str(group)) for view in views}
            if len(seen) != 1 or None in seen:
                return f"group {group}: masters seen {seen}"
        if self.locks:
            metas = [await pool.call(addr, "meta", {}, timeout=1.0) for addr in self.lock_addresses]
            masters = {meta["master"] for meta in metas}
            if len(masters) != 1 or None in masters:
                return f"lock masters seen {masters}"
            if not any(meta["serving"] for meta in metas):
                return "the lock master is not serving yet"
        return True
