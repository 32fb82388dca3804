"""The fault harness: 3 stores, 3 lock nodes and consumer daemons as real processes, with every
node-to-node link of the stores and of the lock nodes through a :class:`FaultProxy`.

Public API::

    harness = FaultCluster(HarnessOptions(data=Path(...), consumers=("c1", "c2")))
    await harness.start()                 # proxies, config, processes; waits until ready
    harness.client_addresses / harness.lock_addresses / harness.config
    harness.kill(role, node) / .pause / .resume / .restart(role, node)
    links = harness.cut(role, side_a, side_b, direction="both")   # partition (proxies)
    harness.heal_links(links);  harness.heal_network()
    await harness.masters() -> {group: store id};  await harness.lock_master() -> id | None
    harness.tear_tail(node, rng) / .flip_byte(node, group, rng)    # the node must be down
    harness.kill_stores(nodes);  harness.lose_power(node) -> bytes zeroed (node down)
    harness.fill_disk() / .free_disk()    # the disk-full store's small filesystem
    await harness.stop()                  # processes, proxies, the filesystem: always

Layout: the proxy for the ordered pair (i, j) of one role listens where node i dials node j
(the ``peers`` key of ``[[store]]`` / ``[[lock]]``), so ``cut(role, [i], [j], "both")`` stops
both directions of their traffic, and ``cut(role, [i], [j], "to_target")`` only what i sends
to j. Clients and consumers dial the daemons directly.

**Disk full** (``HarnessOptions.disk_full_store``): that store's data directory is a small
``tmpfs`` mounted before it starts (this needs root; :attr:`disk_full_supported` is False when
the mount is refused, and the nemesis then skips the fault). ``fill_disk`` writes a filler file
until ``ENOSPC``, so the next segment the store preallocates fails; ``free_disk`` deletes it.

**Logs on disk** (the node must be stopped): ``tear_tail`` zeroes the last 1-64 bytes of the
newest segment of some groups (a write cut by a crash); ``flip_byte`` inverts one byte in the
middle of the written part of one group's log (silent corruption: the replica finds it at
recovery and stops serving that group until it is repaired).

**Power loss** (the store must be stopped): a SIGKILL keeps the page cache, so nothing a store
wrote is lost by it. ``lose_power`` zeroes, in the store's segment files, every byte its PLog
journal would redo (:func:`~phxq.plog.journal.journaled_ranges`): the segment bytes whose only
synced copy is a journal record, i.e. what a power cut may take. The restarted store must
restore them from the journal before it recovers its groups. (The journal files themselves
are kept whole: an unsynced journal record was never acknowledged, so keeping it loses
nothing the checker could miss.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import signal
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from phxq.devcluster import ProcessCluster, free_ports
from phxq.errors import PhxqError
from phxq.net.rpc import RpcPool
from phxq.plog.journal import journaled_ranges
from tools.fault.history import DELIVERIES_ENV
from tools.fault.proxy import Direction, FaultProxy

log = logging.getLogger("tools.fault")

TOPIC = "torture"
GROUP = "torture"
HANDLER = "tools.fault.history:record_delivery"
ROLES = ("store", "lock")
FILLER = "filler"


def _pythonpath() -> str:
    """The consumers import the delivery recorder (``HANDLER``) from this checkout's ``tools``
    package, which no wheel ships: put the checkout on their path, whatever their cwd."""
    checkout = str(Path(__file__).resolve().parent.parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return f"{checkout}{os.pathsep}{inherited}" if inherited else checkout


@dataclass
class HarnessOptions:
    data: Path
    groups: int = 4
    queues: int = 4
    lease: str = "1s"
    # Small segments: segments roll (and preallocate) often, so a full disk shows quickly.
    segment_bytes: str = "16KiB"
    consumers: tuple[str, ...] = ("c1", "c2")
    disk_full_store: int | None = None
    tmpfs_size: str = "96m"
    seed: int = 0
    # TLS on every link, member certificates, and a token the harness's clients do not need:
    # they dial as members (they take the consumers' locks), with the [security] certificate.
    secure: bool = False


@dataclass
class FaultCluster:
    opts: HarnessOptions
    proxies: dict[tuple[str, int, int], FaultProxy] = field(default_factory=dict)
    cluster: ProcessCluster | None = None
    disk_full_supported: bool = False
    links_seen: set[tuple[str, int, int]] = field(default_factory=set)  # by sample_links()
    # Daemons a fault found dead by themselves (not by our signal) before it killed or restarted
    # them: the crash would otherwise be lost, since check_exits sees only the last incarnation.
    crashes: list[str] = field(default_factory=list)
    _mounted: Path | None = None
    _noted_pids: set[int] = field(default_factory=set)

    # ------------------------------------------------------------------------ life cycle

    @property
    def deliveries_dir(self) -> Path:
        return self.opts.data / "deliveries"

    def data_dir(self, role: str, node: int) -> Path:
        return self.opts.data / "nodes" / f"{role}{node}"

    async def start(self) -> None:
        if self.cluster is not None and self.cluster.procs:
            return  # already started
        self.opts.data.mkdir(parents=True, exist_ok=True)
        self.deliveries_dir.mkdir(exist_ok=True)
        ports = free_ports(3 + 3 + 12)
        addrs = {
            "store": {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)},
            "lock": {i: f"127.0.0.1:{ports[2 + i]}" for i in (1, 2, 3)},
        }
        proxy_ports = iter(ports[6:])
        rng = random.Random(self.opts.seed)
        peers: dict[str, dict[int, dict[str, str]]] = {r: {} for r in ROLES}
        for role in ROLES:
            for i in (1, 2, 3):
                for j in (1, 2, 3):
                    if i == j:
                        continue
                    port = next(proxy_ports)
                    proxy = FaultProxy(
                        f"127.0.0.1:{port}", addrs[role][j], seed=rng.randrange(1 << 30)
                    )
                    await proxy.start()
                    self.proxies[(role, i, j)] = proxy
                    peers[role].setdefault(i, {})[str(j)] = proxy.address
        if self.opts.disk_full_store is not None:
            self._mount(self.data_dir("store", self.opts.disk_full_store))
        config = {
            "cluster": {
                "groups": self.opts.groups,
                "lease": self.opts.lease,
                "segment_bytes": self.opts.segment_bytes,
            },
            **{
                role: [
                    {
                        "id": i,
                        "addr": addrs[role][i],
                        "dc": f"dc{i}",
                        "data": str(self.data_dir(role, i).resolve()),
                        "peers": peers[role][i],
                    }
                    for i in (1, 2, 3)
                ]
                for role in ROLES
            },
            "topic": [
                {"name": TOPIC, "queues": self.opts.queues},
                {"name": f"{TOPIC}.dlq", "queues": 1},
            ],
            "consumer_group": [{"name": GROUP, "topic": TOPIC, "handler": HANDLER}],
        }
        if self.opts.secure:
            self._secure(config, addrs)
        path = self.opts.data / "cluster.toml"
        path.write_text(tomli_w.dumps(config))
        self.cluster = ProcessCluster(
            path,
            locks=True,
            consumers=self.opts.consumers,
            env={DELIVERIES_ENV: str(self.deliveries_dir.resolve()), "PYTHONPATH": _pythonpath()},
        )
        self.cluster.start()
        await self.cluster.wait_ready_async(timeout=60)

    def _secure(self, config: dict[str, Any], addrs: dict[str, dict[int, str]]) -> None:
        """Add [security] and a member certificate per node to ``config`` (files under data)."""
        from phxq.security.setup import issue_certs

        certs = (self.opts.data / "certs").resolve()
        members = {f"{role}-{i}": ["127.0.0.1"] for role in ROLES for i in addrs[role]}
        issued = issue_certs(certs, {**members, "member": ["127.0.0.1"]})
        for role in ROLES:
            for node in config[role]:
                cert, key = issued[f"{role}-{node['id']}"]
                node |= {"cert": str(cert), "key": str(key)}
        cert, key = issued["member"]
        config["security"] = {"ca": str(certs / "ca.pem"), "cert": str(cert), "key": str(key)}

    @property
    def credentials(self) -> dict[str, Any]:
        """``Client``/``LockClient`` keyword arguments: the member certificate when secure."""
        from phxq.security.daemon import member_credentials

        ssl = member_credentials(self.config).ssl
        return {} if ssl is None else {"ca": ssl}

    def pool(self) -> RpcPool:
        """An ``RpcPool`` for the harness's own status calls (a member when secure)."""
        from phxq.security.daemon import member_credentials

        return RpcPool(transport_factory=member_credentials(self.config).transport_factory())

    async def stop(self) -> None:
        if self.cluster is not None:
            for proc in self.cluster.procs.values():  # SIGCONT first: a stopped one cannot exit
                if proc.popen is not None and proc.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.popen.send_signal(signal.SIGCONT)
            self.heal_network()
            self.cluster.stop()
        for proxy in self.proxies.values():
            proxy.drop_connections()
        # Let the proxies' connection handlers end by themselves first: close() cancels the
        # ones still running, which asyncio's stream callback logs as an unhandled error.
        await asyncio.sleep(0.1)
        for proxy in self.proxies.values():
            await proxy.close()
        self._unmount()

    @property
    def config(self) -> Any:
        assert self.cluster is not None
        return self.cluster.config

    @property
    def client_addresses(self) -> list[str]:
        assert self.cluster is not None
        return self.cluster.store_addresses

    @property
    def lock_addresses(self) -> list[str]:
        assert self.cluster is not None
        return self.cluster.lock_addresses

    # ------------------------------------------------------------------------- processes

    def _note_exit(self, role: str, node: int | str) -> None:
        """Record (:attr:`crashes`) a daemon that exited by itself since it was started."""
        assert self.cluster is not None
        proc = self.cluster.procs[(role, str(node))]
        code = None if proc.popen is None else proc.popen.poll()
        if code is None or proc.stopped or code in (-signal.SIGKILL, -signal.SIGTERM):
            return
        assert proc.popen is not None
        if proc.popen.pid in self._noted_pids:
            return
        self._noted_pids.add(proc.popen.pid)
        self.crashes.append(
            f"{role} {node} exited with {code}\n" + self.cluster.logs(role, node, tail=30)
        )

    def kill(self, role: str, node: int | str) -> None:
        assert self.cluster is not None
        self._note_exit(role, node)
        proc = self.cluster.procs[(role, str(node))]
        if proc.popen is not None and proc.popen.poll() is None:
            self.cluster.signal(role, str(node), signal.SIGKILL)
        proc.paused = False

    def kill_stores(self, nodes: list[int]) -> None:
        """SIGKILL the running stores of ``nodes`` at the same instant (every signal is sent
        before any exit is awaited), then wait until all of them are gone."""
        assert self.cluster is not None
        for n in nodes:
            self._note_exit("store", n)
        procs = [self.cluster.procs[("store", str(n))] for n in nodes]
        for proc in procs:
            if proc.popen is not None and proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # exited just now
                    proc.popen.send_signal(signal.SIGKILL)
        for proc in procs:
            if proc.popen is not None:
                proc.popen.wait()
            proc.paused = False

    def pause(self, role: str, node: int | str) -> None:
        assert self.cluster is not None
        self.cluster.signal(role, str(node), signal.SIGSTOP)
        self.cluster.procs[(role, str(node))].paused = True

    def resume(self, role: str, node: int | str) -> None:
        assert self.cluster is not None
        self.cluster.signal(role, str(node), signal.SIGCONT)
        self.cluster.procs[(role, str(node))].paused = False

    def restart(self, role: str, node: int | str) -> None:
        assert self.cluster is not None
        self._note_exit(role, node)
        self.cluster.start_node(role, str(node))

    def running(self, role: str, node: int | str) -> bool:
        if self.cluster is None:
            return False
        proc = self.cluster.procs.get((role, str(node)))
        return bool(proc and proc.popen and proc.popen.poll() is None)

    def revive_all(self) -> None:
        """SIGCONT every paused daemon and start every dead one."""
        assert self.cluster is not None
        for (role, node), proc in self.cluster.procs.items():
            if proc.paused:
                self.resume(role, node)
            if not self.running(role, node):
                self.restart(role, node)

    def check_exits(self) -> None:
        """Raise if a daemon died by itself (a crash the suite found)."""
        assert self.cluster is not None
        self.cluster._check_exits()

    # --------------------------------------------------------------------------- network

    def cut(
        self, role: str, side_a: list[int], side_b: list[int], direction: Direction = "both"
    ) -> list[FaultProxy]:
        """Partition: what ``side_a`` nodes send to ``side_b`` (``to_target``), the other way
        (``to_client``), or ``both``. Returns the proxies it touched (for :meth:`heal_links`)."""
        touched = []
        for i in side_a:
            for j in side_b:
                there, back = self.proxies[(role, i, j)], self.proxies[(role, j, i)]
                if direction in ("both", "to_target"):
                    there.partition("to_target")
                    back.partition("to_client")
                if direction in ("both", "to_client"):
                    back.partition("to_target")
                    there.partition("to_client")
                touched += [there, back]
        return touched

    def heal_links(self, proxies: list[FaultProxy]) -> None:
        for proxy in proxies:
            proxy.heal()

    def heal_network(self) -> None:
        self.heal_links(list(self.proxies.values()))

    def sample_links(self) -> None:
        """Note which proxies carry a connection now (see :attr:`links_seen`)."""
        self.links_seen.update(k for k, p in self.proxies.items() if p.connections)

    # -------------------------------------------------------------------------- queries

    async def masters(self, pool: RpcPool) -> dict[int, int]:
        """Group -> master, as the first live store that answers sees it ({} if none)."""
        for s in self.config.stores:
            if not self.running("store", s.id):
                continue
            with contextlib.suppress(PhxqError):
                meta = await pool.call(s.addr, "meta", {}, timeout=1.0)
                return {int(g): int(m) for g, m in meta["masters"].items() if m is not None}
        return {}

    async def lock_master(self, pool: RpcPool) -> int | None:
        for lk in self.config.locks:
            if not self.running("lock", lk.id):
                continue
            with contextlib.suppress(PhxqError):
                meta = await pool.call(lk.addr, "meta", {}, timeout=1.0)
                if meta.get("master") is not None:
                    return int(meta["master"])
        return None

    async def store_status(self, pool: RpcPool) -> dict[int, dict[str, Any]]:
        out = {}
        for s in self.config.stores:
            with contextlib.suppress(PhxqError):  # a store that does not answer has no view
                out[s.id] = await pool.call(s.addr, "status", {}, timeout=2.0)
        return out

    # ---------------------------------------------------------------------- logs on disk

    def _group_dirs(self, role: str, node: int) -> list[Path]:
        return sorted(p for p in self.data_dir(role, node).glob("g*") if p.is_dir())

    @staticmethod
    def _segments(group_dir: Path) -> list[Path]:
        return sorted(group_dir.glob("*.plog"))

    @staticmethod
    def _written(path: Path) -> int:
        """Bytes up to the last non-zero one (segments are preallocated with zeros)."""
        return len(path.read_bytes().rstrip(b"\0"))

    def tear_tail(self, node: int, rng: random.Random) -> list[dict[str, Any]]:
        """Zero the last 1-64 written bytes of the newest segment of about half the groups of
        store ``node`` (which must be down). Returns what was cut."""
        assert not self.running("store", node), "tear_tail needs the store down"
        cuts = []
        for group_dir in self._group_dirs("store", node):
            segments = self._segments(group_dir)
            if not segments or rng.random() < 0.5:
                continue
            newest = segments[-1]
            end = self._written(newest)
            if end == 0:
                continue
            cut = min(end, rng.randint(1, 64))
            with open(newest, "r+b") as f:
                f.seek(end - cut)
                f.write(b"\0" * cut)
            cuts.append(
                {"segment": f"{group_dir.name}/{newest.name}", "at": end - cut, "bytes": cut}
            )
        return cuts

    def flip_byte(self, node: int, group: int, rng: random.Random) -> dict[str, Any] | None:
        """Invert one byte in the middle of the written part of ``group``'s log on store
        ``node`` (which must be down). None if that log has nothing written yet."""
        assert not self.running("store", node), "flip_byte needs the store down"
        group_dir = self.data_dir("store", node) / f"g{group:04d}"
        written = [(p, self._written(p)) for p in self._segments(group_dir)]
        written = [(p, n) for p, n in written if n > 64]
        if not written:
            return None
        path, end = written[len(written) // 2]
        at = rng.randint(end // 4, (3 * end) // 4)
        with open(path, "r+b") as f:
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0xFF]))
        return {"segment": f"{group_dir.name}/{path.name}", "at": at}

    def lose_power(self, node: int, kept: list[tuple[Path, int, int, int]] | None = None) -> int:
        """Zero every segment byte store ``node`` (which must be down) would redo from its
        journal: what a power cut may have kept from the disk. Ranges of segment files that no
        longer exist (truncated away) are skipped, and no file is extended past its end.
        Returns the bytes zeroed; ``kept`` gets (path, offset, length, crc32) of what each
        zeroed range held, for :meth:`unrestored`."""
        assert not self.running("store", node), "lose_power needs the store down"
        zeroed = 0
        for path, offset, length in journaled_ranges(self.data_dir("store", node)):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                n = max(0, min(length, os.fstat(fd).st_size - offset))
                if n and kept is not None:
                    kept.append((path, offset, n, zlib.crc32(os.pread(fd, n, offset))))
                if n:
                    # No fsync: the restarted store reads these pages from the same page cache.
                    os.pwrite(fd, bytes(n), offset)
            finally:
                os.close(fd)
            zeroed += n
        return zeroed

    def store_pid(self, node: int) -> int | None:
        """The pid of store ``node`` if it runs (a restart or a kill changes it)."""
        assert self.cluster is not None
        proc = self.cluster.procs.get(("store", str(node)))
        running = proc is not None and proc.popen is not None and proc.popen.poll() is None
        return proc.popen.pid if running and proc and proc.popen else None

    @staticmethod
    def unrestored(kept: list[tuple[Path, int, int, int]]) -> list[str]:
        """Blocking: the ranges of ``kept`` (see :meth:`lose_power`) whose bytes differ from
        what they held before the power loss (files deleted since are skipped). Once the
        restarted store has redone its journal (it answers RPCs only after that) and nothing
        else wrote there, this must be empty: segment files are append-only."""
        bad = []
        for path, offset, length, crc in kept:
            try:
                data = path.read_bytes()[offset : offset + length]
            except FileNotFoundError:
                continue
            if zlib.crc32(data) != crc:
                zeros = length - len(data.rstrip(b"\0"))
                bad.append(
                    f"{path.parent.name}/{path.name} [{offset}, +{length}): {zeros} zeros at the end"
                )
        return bad

    # --------------------------------------------------------------------------- disk full

    def _mount(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={self.opts.tmpfs_size}", "tmpfs", str(path)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning(
                "disk full: cannot mount a tmpfs on %s (%s); the fault is skipped", path, exc
            )
            return
        self._mounted = path
        self.disk_full_supported = True

    def _unmount(self) -> None:
        if self._mounted is None:
            return
        try:
            subprocess.run(
                ["umount", str(self._mounted)], check=True, capture_output=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError) as exc:
            # Lazy unmount as a fallback: a leftover mount would outlive the run's directory.
            log.warning("umount %s failed (%s); detaching it lazily", self._mounted, exc)
            subprocess.run(["umount", "-l", str(self._mounted)], check=False, timeout=10)
        self._mounted = None

    def fill_disk(self) -> int:
        """Fill the disk-full store's filesystem; returns the filler's size in bytes."""
        assert self._mounted is not None
        written = 0
        chunk = b"\xff" * (1 << 20)
        with open(self._mounted / FILLER, "ab") as f:
            while True:
                try:
                    n = os.write(f.fileno(), chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        return written
                    chunk = chunk[: len(chunk) // 16 or 1]
                    continue
                written += n

    def free_disk(self) -> None:
        assert self._mounted is not None
        with contextlib.suppress(FileNotFoundError):
            (self._mounted / FILLER).unlink()
