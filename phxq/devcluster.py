"""Run a local cluster of real daemon processes: what ``phxq dev`` and the integration tests use.

:func:`write_dev_config` (:mod:`phxq.devconfig`, re-exported here) writes a cluster TOML for N
stores (and N lock nodes) on 127.0.0.1; :class:`ProcessCluster` starts each daemon as its own
``python -m phxq ...`` process, waits until every group has a master, and can SIGKILL /
SIGSTOP / SIGCONT / restart single nodes.
Processes are always stopped by :meth:`ProcessCluster.stop` (also on ``with`` exit).

:func:`run_dev` is ``phxq dev``: write (or resume) the config under a data directory, refuse
ports already in use (:class:`PortInUse`, before anything starts), start every daemon, call
``on_ready``, then supervise until SIGINT/SIGTERM (a clean stop) or until a daemon dies on its
own (:class:`DevClusterFailed`); the daemons are stopped on every way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from phxq.config import ClusterConfig, load_config
from phxq.devconfig import (
    CONSUMER_METRICS_OFFSET,
    DEV_BASE_PORT,
    DEV_COMMAND_JOURNAL_BYTES,
    DEV_COMMAND_SEGMENT_BYTES,
    DEV_CONSUMER,
    DEV_CONSUMER_GROUPS,
    DEV_SEGMENT_BYTES,
    DEV_TOPICS,
    GATEWAY_PORT_OFFSET,
    LOCK_METRICS_OFFSET,
    LOCK_PORT_OFFSET,
    METRICS_PORT_OFFSET,
    DevClusterFailed,
    PortInUse,
    check_ports_free,
    config_ports,
    dev_ports,
    free_ports,
    metrics_addresses,
    prepare_dev,
    write_dev_config,
)
from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool
from phxq.security.daemon import member_credentials, tool_credentials
from phxq.security.tls import Credentials

# The dev config's names are re-exported: tools and tests import them from here.
__all__ = [
    "CONSUMER_METRICS_OFFSET",
    "DEV_BASE_PORT",
    "DEV_COMMAND_JOURNAL_BYTES",
    "DEV_COMMAND_SEGMENT_BYTES",
    "DEV_CONSUMER",
    "DEV_CONSUMER_GROUPS",
    "DEV_SEGMENT_BYTES",
    "DEV_TOPICS",
    "GATEWAY_PORT_OFFSET",
    "LOCK_METRICS_OFFSET",
    "LOCK_PORT_OFFSET",
    "METRICS_PORT_OFFSET",
    "DevClusterFailed",
    "DevStarted",
    "PortInUse",
    "ProcessCluster",
    "check_ports_free",
    "config_ports",
    "dev_ports",
    "free_ports",
    "metrics_addresses",
    "prepare_dev",
    "run_dev",
    "write_dev_config",
]


@dataclass
class _Proc:
    role: str
    node: str
    popen: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    stopped: bool = False
    paused: bool = False


@dataclass
class ProcessCluster:
    """Real daemon processes for one cluster config (stores; lock nodes when ``locks``;
    a consumer daemon per name in ``consumers``)."""

    config_path: Path
    locks: bool = False
    log_dir: Path | None = None
    procs: dict[tuple[str, str], _Proc] = field(default_factory=dict)
    consumers: tuple[str, ...] = ()
    env: dict[str, str] | None = None  # extra environment variables for every daemon
    gateway: bool = False  # also run `phxq gateway` (at the config's [gateway] listen)
    # A command each daemon runs under, by (role, node): e.g. ``["ip", "netns", "exec", ns]``
    # (it must exec the daemon, so that its pid is the daemon's and signals reach it).
    wrap: Callable[[str, str], list[str]] | None = None

    def __post_init__(self) -> None:
        self.config: ClusterConfig = load_config(self.config_path)
        self.log_dir = self.log_dir or self.config_path.parent / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def credentials(self) -> Credentials:
        """What a tool presents to this cluster: its ``[client]`` token over TLS, if secure;
        without a token, the ``[security]`` member certificate (a test harness's config)."""
        creds = tool_credentials(self.config)
        sec = self.config.security
        if creds.token is None and sec is not None and sec.cert is not None:
            return member_credentials(self.config)
        return creds

    @property
    def store_addresses(self) -> list[str]:
        return [s.addr for s in self.config.stores]

    def store_address(self, node: int) -> str:
        return self.config.store(node).addr

    @property
    def gateway_url(self) -> str | None:
        listen = self.config.gateway.listen
        scheme = "https" if self.config.security is not None else "http"
        return f"{scheme}://{listen}" if self.gateway and listen else None

    @property
    def lock_addresses(self) -> list[str]:
        return [lk.addr for lk in self.config.locks]

    def __enter__(self) -> ProcessCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------- processes

    def start(self) -> None:
        for s in self.config.stores:
            self.start_node("store", str(s.id))
        if self.locks:
            for lk in self.config.locks:
                self.start_node("lock", str(lk.id))
        for name in self.consumers:
            self.start_node("consumer", name)
        if self.gateway_url:
            self.start_node("gateway", "1")

    def start_node(self, role: str, node: str) -> None:
        proc = self.procs.setdefault((role, node), _Proc(role, node))
        if proc.popen is not None and proc.popen.poll() is None:
            return
        assert self.log_dir is not None
        proc.log = open(self.log_dir / f"{role}{node}.log", "ab")  # noqa: SIM115 (kept for the process's life)
        flag = "--node" if role in ("store", "lock") else "--id"
        cmd = [sys.executable, "-m", "phxq", role, "--config", str(self.config_path), flag, node]
        if role == "gateway":
            cmd = cmd[:-2]  # stateless: no id
        if self.wrap is not None:
            cmd = [*self.wrap(role, node), *cmd]
        env = {**os.environ, **self.env} if self.env else None
        proc.popen = subprocess.Popen(
            cmd, stdout=proc.log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        proc.stopped = False

    def signal(self, role: str, node: str, sig: signal.Signals) -> None:
        proc = self.procs[(role, node)]
        assert proc.popen is not None
        proc.popen.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.popen.wait()

    def kill(self, node: int, role: str = "store") -> None:
        self.signal(role, str(node), signal.SIGKILL)

    def pause(self, node: int, role: str = "store") -> None:
        self.signal(role, str(node), signal.SIGSTOP)
        self.procs[(role, str(node))].paused = True

    def resume(self, node: int, role: str = "store") -> None:
        self.signal(role, str(node), signal.SIGCONT)
        self.procs[(role, str(node))].paused = False

    def restart(self, node: int, role: str = "store") -> None:
        self.start_node(role, str(node))

    def alive(self, node: int, role: str = "store") -> bool:
        """Running and not paused (SIGSTOP)."""
        proc = self.procs.get((role, str(node)))
        return bool(proc and proc.popen and proc.popen.poll() is None and not proc.paused)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_consumers(timeout)  # first, so they hand over while stores and locks still run
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGCONT)
                    proc.popen.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            if proc.log is not None:
                proc.log.close()

    def stop_consumers(self, timeout: float = 10.0) -> None:
        """SIGTERM every consumer daemon (a clean handoff: commit, release) and wait for it."""
        consumers = [p for p in self.procs.values() if p.role == "consumer" and p.popen]
        for proc in consumers:
            assert proc.popen is not None
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGCONT)
                    proc.popen.terminate()
        deadline = time.monotonic() + timeout
        for proc in consumers:
            assert proc.popen is not None
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def supervise(self, poll: float = 0.5) -> None:
        """Block until SIGINT or SIGTERM (then return) or until a daemon exits on its own
        (:class:`DevClusterFailed` naming it). Installs signal handlers: main thread only."""
        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while not stop.wait(poll):
                for proc in self.procs.values():
                    if proc.popen is not None and proc.popen.poll() is not None:
                        raise DevClusterFailed(
                            f"{proc.role} {proc.node} exited ({proc.popen.returncode}); "
                            f"see {self.log_dir}/{proc.role}{proc.node}.log"
                        )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def logs(self, role: str = "store", node: int | str | None = None, tail: int = 60) -> str:
        """The last lines of the daemons' logs, for failure messages."""
        assert self.log_dir is not None
        out = []
        for path in sorted(self.log_dir.glob(f"{role}{node if node is not None else '*'}.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # -------------------------------------------------------------------------- readiness

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every store answers and every group has a master all live stores agree on."""
        asyncio.run(self.wait_ready_async(timeout))

    async def wait_ready_async(self, timeout: float = 30.0) -> None:
        async def ready(pool: RpcPool) -> Any:
            self._check_exits()
            state = await self._masters(pool)
            if state is True and self.locks:
                state = await self._lock_master(pool)
            if state is True and self.gateway_url:
                state = await self._gateway_listens()
            return state

        await self._poll(ready, timeout, "cluster", self.logs)

    def _check_exits(self) -> None:
        """Raise if a daemon this cluster started died on its own (not by our signal)."""
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is not None and not proc.stopped:
                code = proc.popen.returncode
                if code not in (-signal.SIGKILL, -signal.SIGTERM):
                    raise RuntimeError(
                        f"{proc.role} {proc.node} exited with {code}\n"
                        + self.logs(proc.role, proc.node)
                    )

    async def _poll(
        self,
        check: Callable[[RpcPool], Awaitable[Any]],
        timeout: float,
        what: str,
        logs: Callable[[], str],
    ) -> None:
        """Call ``check`` until it returns True (else a reason); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        async with RpcPool(transport_factory=self.credentials.transport_factory()) as pool:
            while time.monotonic() < deadline:
                try:
                    last = await check(pool)
                    if last is True:
                        return
                except PhxqError as exc:
                    last = exc
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{what} not ready after {timeout}s: {last}\n{logs()}")

    async def _masters(self, pool: RpcPool) -> Any:
        """True once, in every store set, the live stores agree on a live master per group."""
        for number in self.config.sets:
            live = [s for s in self.config.set_stores(number) if self.alive(s.id)]
            views = []
            for s in live:
                meta = await pool.call(s.addr, "meta", {}, timeout=1.0)
                views.append(meta["masters"])
            for g in range(self.config.cluster.groups):
                seen = {v.get(str(g)) for v in views}
                if len(seen) != 1 or None in seen:
                    return f"set {number} group {g}: masters seen {seen}"
                (master,) = seen
                if not self.alive(int(master)):
                    return f"set {number} group {g}: master {master} is not alive"
        return True

    async def _gateway_listens(self) -> Any:
        host, _, port = (self.config.gateway.listen or "").rpartition(":")
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            return f"gateway not listening yet: {exc}"
        writer.close()
        return True

    def wait_locks_ready(self, timeout: float = 30.0) -> None:
        """Block until the live lock nodes agree on a live master that serves (its epoch is
        applied). For clusters whose lock nodes were started without stores."""
        asyncio.run(self.wait_locks_ready_async(timeout))

    async def wait_locks_ready_async(self, timeout: float = 30.0) -> None:
        await self._poll(self._lock_master, timeout, "lock nodes", lambda: self.logs("lock"))

    async def _lock_master(self, pool: RpcPool) -> Any:
        live = [lk for lk in self.config.locks if self.alive(lk.id, "lock")]
        if not live:
            return "no live lock node"
        metas = {lk.id: await pool.call(lk.addr, "meta", {}, timeout=1.0) for lk in live}
        seen = {m["master"] for m in metas.values()}
        if len(seen) != 1 or None in seen:
            return f"lock masters seen {seen}"
        (master,) = seen
        if master not in metas:
            return f"lock master {master} is not alive"
        if not metas[master]["serving"]:
            return f"lock master {master} is not serving yet"
        return True


@dataclass(frozen=True)
class DevStarted:
    """What :func:`run_dev` hands ``on_ready``: the running cluster and how it was started."""

    cluster: ProcessCluster
    config_path: Path
    resumed: bool


def run_dev(
    data: Path,
    *,
    nodes: int = 3,
    sets: int = 1,
    base_port: int | None = None,
    on_ready: Callable[[DevStarted], None],
    ready_timeout: float = 60.0,
    secure: bool = True,
    log_format: str = "text",
) -> None:
    """``phxq dev``: prepare the config (:func:`prepare_dev`), start every daemon, call
    ``on_ready`` once all serve, and supervise until SIGINT/SIGTERM. Raises
    :class:`DevClusterFailed` (one line, naming the daemon and its log) when a daemon dies or
    the cluster is not ready within ``ready_timeout``. The daemons are always stopped."""
    config_path, resumed = prepare_dev(
        data, nodes=nodes, sets=sets, base_port=base_port, secure=secure
    )
    cluster = ProcessCluster(
        config_path.resolve(),
        locks=True,
        consumers=(DEV_CONSUMER,),
        gateway=True,
        env={"PHXQ_LOG_FORMAT": log_format},  # every daemon logs as `phxq dev` was told
    )
    try:
        cluster.start()
        try:
            cluster.wait_ready(timeout=ready_timeout)
        except (TimeoutError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DevClusterFailed(f"{first}; logs in {cluster.log_dir}") from exc
        on_ready(DevStarted(cluster, config_path, resumed))
        cluster.supervise()
    except KeyboardInterrupt:
        pass  # Ctrl-C while starting: stop what started, as after it
    finally:
        with _stop_signals_ignored():
            cluster.stop()


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    """While the daemons stop, a second SIGINT/SIGTERM (an impatient Ctrl-C, or `timeout`
    and `kill` both signalling) must not kill the supervisor before its daemons: they would
    be left running, orphaned. ``ProcessCluster.stop`` is bounded (it SIGKILLs stragglers)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
