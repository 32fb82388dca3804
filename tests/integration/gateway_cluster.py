"""A live cluster with a ``phxq gateway`` process in front, for the gateway's integration tests:
3 stores, 3 lock nodes, the gateway as its own process (the real command), on ephemeral
127.0.0.1 ports in a temporary directory; always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from phxq.devcluster import ProcessCluster, free_ports, write_dev_config

# A consumer group for lag and the docs' examples (no consumer daemon runs it).
BILLING = """
[[consumer_group]]
name = "billing"
topic = "orders"
handler = "phxq.consumer.demo:log_message"
"""


def gateway_cluster(
    data: Path, *, groups: int = 4, gateway: str = "", extra: str = BILLING, secure: bool = False
) -> Iterator[ProcessCluster]:
    """Start the cluster and its gateway (``gateway``: more ``[gateway]`` keys), yield it
    once every group has a master and the gateway listens, stop it afterwards."""
    ports = free_ports(7)
    path = write_dev_config(
        data,
        nodes=3,
        groups=groups,
        store_ports=ports[:3],
        lock_ports=ports[3:6],
        extra=extra,
        secure=secure,
    )
    path.write_text(path.read_text() + f'\n[gateway]\nlisten = "127.0.0.1:{ports[6]}"\n{gateway}\n')
    cluster = ProcessCluster(path, locks=True, gateway=True)
    try:
        cluster.start()
        cluster.wait_ready(timeout=60)
        yield cluster
    finally:
        cluster.stop()
