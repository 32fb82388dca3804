"""The dev cluster's configuration: ports, the cluster TOML that ``phxq dev`` and the test
clusters run, and the check that refuses ports already in use.

:func:`write_dev_config` writes a cluster TOML for N stores (and N lock nodes) on 127.0.0.1;
:func:`dev_ports` lays out a ``--base-port`` (stores ``base..``, lock nodes ``base + 100..``,
the gateway ``base + 200``, metrics ``base + 300..``); :func:`check_ports_free` raises
:class:`PortInUse` naming the first port something listens on; :func:`prepare_dev` writes (or
resumes) ``phxq dev``'s config after that check. :mod:`phxq.devcluster` runs the processes.
"""

from __future__ import annotations

import socket
from pathlib import Path

from phxq.config import ClusterConfig, load_config
from phxq.errors import BadArgument, PhxqError

DEV_TOPICS = (("orders", 8), ("orders.dlq", 1))
# What `phxq dev` adds to its config: one consumer group, delivered by its consumer daemon.
DEV_CONSUMER_GROUPS = """
[[consumer_group]]
name = "log"
topic = "orders"
handler = "phxq.consumer.demo:log_message"
"""
DEV_CONSUMER = "dev"
DEV_BASE_PORT = 7101  # stores BASE.., lock nodes BASE+100..
LOCK_PORT_OFFSET = 100
GATEWAY_PORT_OFFSET = 200  # the dev gateway listens at base + 200 (7301)
# Prometheus endpoints of the dev daemons: stores at base + 300.. (7401..), lock nodes at
# base + 310.. (7411..), the consumer at base + 320 (7421).
METRICS_PORT_OFFSET = 300
LOCK_METRICS_OFFSET = 310
CONSUMER_METRICS_OFFSET = 320


class PortInUse(BadArgument):
    """A port the dev cluster needs is taken (another ``phxq dev``?)."""

    code = "port_in_use"  # every error class has its own wire code (tests/unit/test_errors.py)


class DevClusterFailed(PhxqError):
    """A dev cluster daemon exited on its own, or the cluster did not become ready."""

    code = "dev_cluster_failed"


def dev_ports(base_port: int, nodes: int) -> tuple[list[int], list[int]]:
    """Store and lock ports of a dev cluster: ``base..`` and ``base + 100..``."""
    if not 1024 <= base_port <= 65535 - CONSUMER_METRICS_OFFSET:
        raise BadArgument(f"base port must be in 1024..{65535 - CONSUMER_METRICS_OFFSET}")
    stores = [base_port + i for i in range(nodes)]
    return stores, [p + LOCK_PORT_OFFSET for p in stores]


def config_ports(config: ClusterConfig) -> list[tuple[str, str]]:
    """``(what, "host:port")`` of every listener of ``config``'s stores and lock nodes."""
    wanted: list[tuple[str, str | None]] = [(f"store {s.id}", s.addr) for s in config.stores]
    wanted += [(f"lock node {lk.id}", lk.addr) for lk in config.locks]
    wanted += [(f"store {s.id} metrics", s.metrics_addr) for s in config.stores if s.metrics_addr]
    wanted += [(f"lock {n.id} metrics", n.metrics_addr) for n in config.locks if n.metrics_addr]
    wanted += [(f"consumer {c.name} metrics", c.metrics_addr) for c in config.consumers]
    if config.gateway.listen:
        wanted.append(("the HTTP gateway", config.gateway.listen))
    return [(what, addr) for what, addr in wanted if addr is not None and addr]


def metrics_addresses(config: ClusterConfig, consumer: str | None = None) -> list[tuple[str, str]]:
    """``(what, "host:port")`` of every Prometheus endpoint ``config`` gives its stores, lock
    nodes and the consumer daemon ``consumer``."""
    out = [(f"store {s.id}", s.metrics_addr) for s in config.stores]
    out += [(f"lock node {n.id}", n.metrics_addr) for n in config.locks]
    if consumer is not None:
        out.append((f"consumer {consumer}", config.consumer(consumer).metrics_addr))
    return [(what, addr) for what, addr in out if addr]


def check_ports_free(wanted: list[tuple[str, str]]) -> None:
    """Raise :class:`PortInUse` naming the first of ``wanted`` (``(what, "host:port")``) that
    something already listens on."""
    for what, addr in wanted:
        host, _, port = addr.rpartition(":")
        with socket.socket() as probe:
            # As the daemons' listeners do: a port with only TIME_WAIT connections is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                raise PortInUse(
                    f"port {port} ({what}) is already in use on {host} ({exc.strerror}): "
                    "is another phxq dev running? Use --base-port or stop it"
                ) from exc


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


DEV_SEGMENT_BYTES = "1MiB"
# `phxq dev` itself (not the tests' and benchmarks' clusters, which keep 1 MiB segments and the
# default journal): an idle dev cluster preallocates a segment per group and store, and two
# journal files per store; these keep it near 20 MB instead of 100 MB. A record larger than a
# segment gets a segment of its size; a batch larger than the journal bypasses it.
DEV_COMMAND_SEGMENT_BYTES = "256KiB"
DEV_COMMAND_JOURNAL_BYTES = "1MiB"


def write_dev_config(
    data: Path,
    *,
    nodes: int = 3,
    store_ports: list[int] | None = None,
    lock_ports: list[int] | None = None,
    metrics_ports: list[int] | None = None,
    lock_metrics_ports: list[int] | None = None,
    consumer_metrics: dict[str, int] | None = None,
    groups: int = 16,
    extra: str = "",
    cluster_options: str = "",
    topic_retention: str = "7d",
    segment_bytes: str = DEV_SEGMENT_BYTES,
    journal_bytes: str | None = None,
    secure: bool = False,
    gateway_port: int | None = None,
    sets: int = 1,
) -> Path:
    """Write ``data/cluster.toml`` for ``nodes`` stores and lock nodes on 127.0.0.1 (data under
    ``data``) and return its path. Default ports are 7101.. (stores) and 7201.. (locks).

    Segments are ``segment_bytes`` (default ``DEV_SEGMENT_BYTES``, unless ``cluster_options``
    sets its own): every group preallocates a whole segment on every store, so the production
    default (64 MiB) would reserve 3 GiB of disk for a 16-group dev cluster, and a test suite
    that starts a hundred clusters would fill the disk. ``journal_bytes``: the cluster's
    journal file size (default: the config default).

    ``secure``: TLS and tokens (``phxq.security.setup.dev_security``): a CA, member
    certificates and an admin token under ``data/certs``, and a ``[client]`` table so every
    tool given ``--config`` authenticates by itself.

    ``sets``: store sets of ``nodes`` stores each (ids 1.., set ``(id - 1) // nodes + 1``);
    ``store_ports`` (and ``metrics_ports``) then has ``nodes * sets`` entries; ``nodes`` lock
    nodes either way."""
    data.mkdir(parents=True, exist_ok=True)
    default_stores, default_locks = dev_ports(DEV_BASE_PORT, nodes * sets)
    store_ports = store_ports or default_stores
    lock_ports = lock_ports or default_locks[:nodes]
    sec = None
    if secure:
        from phxq.security.setup import dev_security

        sec = dev_security(
            data,
            {i: f"127.0.0.1:{p}" for i, p in enumerate(store_ports, start=1)},
            {i: f"127.0.0.1:{p}" for i, p in enumerate(lock_ports, start=1)},
        )
    lines = ["[cluster]", f"groups = {groups}", cluster_options, ""]
    if "segment_bytes" not in cluster_options:
        lines.insert(2, f'segment_bytes = "{segment_bytes}"')
    if journal_bytes is not None and "journal_bytes" not in cluster_options:
        lines.insert(2, f'journal_bytes = "{journal_bytes}"')
    for i, port in enumerate(store_ports, start=1):
        lines += [
            "[[store]]",
            f"id = {i}",
            f'addr = "127.0.0.1:{port}"',
            f'dc = "dc{i}"',
            f'data = "store{i}"',
            *([f"set = {(i - 1) // nodes + 1}"] if sets > 1 else []),
        ]
        if metrics_ports:
            lines.append(f'metrics_addr = "127.0.0.1:{metrics_ports[i - 1]}"')
        if sec is not None:
            lines.append(sec.node_lines[("store", i)])
        lines.append("")
    for i, port in enumerate(lock_ports, start=1):
        lines += [
            "[[lock]]",
            f"id = {i}",
            f'addr = "127.0.0.1:{port}"',
            f'dc = "dc{i}"',
            f'data = "lock{i}"',
            *(
                [f'metrics_addr = "127.0.0.1:{lock_metrics_ports[i - 1]}"']
                if lock_metrics_ports
                else []
            ),
            *([sec.node_lines[("lock", i)]] if sec is not None else []),
            "",
        ]
    for name, port in (consumer_metrics or {}).items():
        lines += ["[[consumer]]", f'name = "{name}"', f'metrics_addr = "127.0.0.1:{port}"', ""]
    for name, queues in DEV_TOPICS:
        lines += [
            "[[topic]]",
            f'name = "{name}"',
            f"queues = {queues}",
            f'retention = "{topic_retention}"',
            "max_message_bytes = 1048576",
            "",
        ]
    if sec is not None:
        lines.append(sec.tables)
    if gateway_port is not None:
        lines += ["[gateway]", f'listen = "127.0.0.1:{gateway_port}"', ""]
    path = data / "cluster.toml"
    path.write_text("\n".join(lines) + extra)
    return path


def prepare_dev(
    data: Path,
    *,
    nodes: int = 3,
    base_port: int | None = None,
    secure: bool = True,
    sets: int = 1,
) -> tuple[Path, bool]:
    """Write ``data/cluster.toml`` for a dev cluster (stores, lock nodes, the demo consumer
    group; with ``secure``, TLS, member certificates and an admin token the tools read from
    its ``[client]`` table) unless it exists, with ``sets`` store sets of ``nodes`` stores;
    ``(path, resumed)``. Raises :class:`PortInUse` if a port of the
    cluster is taken, and ``BadArgument`` if ``base_port`` contradicts an existing config."""
    config_path = data / "cluster.toml"
    resumed = config_path.exists()
    if nodes * sets > LOCK_METRICS_OFFSET - METRICS_PORT_OFFSET:
        raise BadArgument(f"at most {LOCK_METRICS_OFFSET - METRICS_PORT_OFFSET} dev stores")
    if not resumed:
        store_ports, lock_ports = dev_ports(base_port or DEV_BASE_PORT, nodes * sets)
        lock_ports = lock_ports[:nodes]  # one lock service, whatever the number of store sets
        wanted = [(f"store {i}", f"127.0.0.1:{p}") for i, p in enumerate(store_ports, 1)]
        wanted += [(f"lock node {i}", f"127.0.0.1:{p}") for i, p in enumerate(lock_ports, 1)]
        gateway_port = store_ports[0] + GATEWAY_PORT_OFFSET
        wanted.append(("the HTTP gateway", f"127.0.0.1:{gateway_port}"))
        base = store_ports[0]
        metrics = [base + METRICS_PORT_OFFSET + i for i in range(nodes * sets)]
        lock_metrics = [base + LOCK_METRICS_OFFSET + i for i in range(nodes)]
        consumer_metrics = {DEV_CONSUMER: base + CONSUMER_METRICS_OFFSET}
        wanted += [(f"store {i} metrics", f"127.0.0.1:{p}") for i, p in enumerate(metrics, 1)]
        wanted += [(f"lock {i} metrics", f"127.0.0.1:{p}") for i, p in enumerate(lock_metrics, 1)]
        wanted.append(
            (f"consumer {DEV_CONSUMER} metrics", f"127.0.0.1:{consumer_metrics[DEV_CONSUMER]}")
        )
        check_ports_free(wanted)  # before writing: a later run may pick other ports
        write_dev_config(
            data,
            nodes=nodes,
            sets=sets,
            store_ports=store_ports,
            lock_ports=lock_ports,
            metrics_ports=metrics,
            lock_metrics_ports=lock_metrics,
            consumer_metrics=consumer_metrics,
            segment_bytes=DEV_COMMAND_SEGMENT_BYTES,
            journal_bytes=DEV_COMMAND_JOURNAL_BYTES,
            extra=DEV_CONSUMER_GROUPS,
            gateway_port=gateway_port,
            secure=secure,
        )
    config = load_config(config_path)
    if resumed and base_port is not None and config.stores[0].port != base_port:
        raise BadArgument(
            f"{config_path} uses port {config.stores[0].port}, not --base-port {base_port}: "
            "drop --base-port to resume it, or use another --data"
        )
    check_ports_free(config_ports(config))
    return config_path, resumed
