"""The simulated 3-DC layout on 127.0.0.1 (used by :mod:`drill`).

    layout(opts) -> (config path, proxies)   # proxies[(i, j)] = (proxy port, j's address)

Three "DCs" of one host each, laid out with the generator's own rules (:mod:`inventory`, and
:mod:`multiset` with ``opts.sets`` > 1: every set has one store in every DC, a host's stores
listen on ``store_port + set - 1``, so each DC gets a block of ``sets`` consecutive free
ports). Every store dials each store of its own set through a proxy (the stores' ``peers``
key); stores of other sets, locks and clients are dialled directly. ``[cluster]`` gets
``groups`` and ``segment_bytes``, and ``lease`` only if ``opts.lease`` is set (otherwise the
config default applies).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import tomli_w
from inventory import parse_inventory, plan_deployment, write_deployment

from phxq.devcluster import free_ports

DCS = ("dc1", "dc2", "dc3")
TOPIC = "drill"


def free_block(count: int, taken: set[int], attempts: int = 200) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 a moment ago, none of them
    in ``taken`` (which gains them)."""
    for _ in range(attempts):
        (base,) = free_ports(1)
        block = range(base, base + count)
        if base + count > 65536 or taken.intersection(block):
            continue
        socks: list[socket.socket] = []
        try:
            for port in block:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue  # one of them is in use: try another base
        finally:
            for s in socks:
                s.close()
        taken.update(block)
        return base
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def layout(opts: Any) -> tuple[Path, dict[tuple[int, int], tuple[int, str]]]:
    """Write the cluster config under ``opts.data`` (see the module docstring)."""
    sets = int(getattr(opts, "sets", 1))
    taken: set[int] = set()
    store_ports = [free_block(sets, taken) for _ in DCS]
    lock_ports = [p for p in free_ports(3 + 6 * sets) if p not in taken][:3]
    taken.update(lock_ports)
    cluster: dict[str, Any] = {"groups": opts.groups, "segment_bytes": opts.segment_bytes}
    if getattr(opts, "lease", None) is not None:
        cluster["lease"] = opts.lease
    deploy: dict[str, Any] = {
        "data_dir": str((opts.data / "nodes").resolve()),
        "config_path": str((opts.data / "cluster.toml").resolve()),
        "phxq": "/usr/bin/phxq",  # units are not used by the simulation
        "locks": 3,
        "consumers": False,
    }
    if sets > 1:
        deploy["sets"] = sets
    inventory = {
        "deploy": deploy,
        "cluster": cluster,
        "dc": [
            {
                "name": dc,
                "hosts": [
                    {
                        "host": "127.0.0.1",
                        "name": dc,
                        "store_port": store_ports[i],
                        "lock_port": lock_ports[i],
                    }
                ],
            }
            for i, dc in enumerate(DCS)
        ],
        "topic": [{"name": TOPIC, "queues": opts.queues}],
    }
    inv = parse_inventory(tomli_w.dumps(inventory), "simulate-inventory")
    plain = plan_deployment(inv)
    addr = {n.id: n.addr for n in plain.stores}
    set_of = {n.id: n.set or 1 for n in plain.stores}
    pairs = [
        (i, j) for i in sorted(addr) for j in sorted(addr) if i != j and set_of[i] == set_of[j]
    ]
    proxy_ports = [p for p in free_ports(len(pairs) + len(taken)) if p not in taken]
    proxies: dict[tuple[int, int], tuple[int, str]] = {}
    for (i, j), port in zip(pairs, proxy_ports[: len(pairs)], strict=True):
        proxies[(i, j)] = (port, addr[j])
    peers: dict[int, dict[int, str]] = {i: {} for i in addr}
    for (i, j), (port, _) in proxies.items():
        peers[i][j] = f"127.0.0.1:{port}"
    plan = plan_deployment(inv, peers=peers)
    write_deployment(plan, opts.data)
    return opts.data / "cluster.toml", proxies
