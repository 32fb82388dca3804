"""Store sets in a 3-DC deployment (``[deploy] sets = N``, ``set_size = 3|5``; DESIGN.md §5.1).

    with_sets(inv, sets, set_size=None) -> Inventory   # generate --sets N [--set-size 5]
    place_sets(inv) -> list[Node]      # every store: id, host, set (ids 1.. set after set)
    check_ports(plan)                  # InventoryError if two daemons of a host share a port
    render_sets(plan) -> str           # placement.txt: the stores of each set, masters per DC

Rules:

- Set ``s`` (1..N) has ``set_size`` stores; its ``j``-th store goes to DC ``(j + s - 1) % 3``:
  a set of 3 has one store in every DC, a set of 5 has 2/2/1 (the DC with one rotates from set
  to set). No DC holds half of any set, so each set keeps its majority without any one DC, and
  consecutive ids of a set alternate DCs, so the preferred masters ``g % set_size`` of a set
  are spread over the DCs.
- Inside a DC, stores are dealt round-robin over its hosts (a host's share of the stores
  differs from another's of the same DC by at most one). A set never has two stores on one
  host (losing the host would cost two replicas): a set of 5 needs two hosts in every DC.
- Every store of a host listens on its own port: ``store_port + set - 1`` (its metrics on
  ``store_metrics_port + set - 1``); ``check_ports`` rejects a layout where that meets another
  daemon's port on the same address (lock, consumer metrics, another host entry).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

from inventory import DC_COUNT, Deployment, Inventory, InventoryError, Node


def with_sets(inv: Inventory, sets: int, set_size: int | None = None) -> Inventory:
    """``inv`` with ``sets`` store sets (of ``set_size`` stores; default: the inventory's)."""
    size = inv.deploy["set_size"] if set_size is None else set_size
    if isinstance(sets, bool) or not isinstance(sets, int) or sets < 1:
        raise InventoryError(f"--sets: expected a positive number of store sets, got {sets!r}")
    if size not in (3, 5):
        raise InventoryError(f"--set-size: expected 3 or 5 stores per set, got {size!r}")
    return replace(inv, deploy={**inv.deploy, "sets": sets, "set_size": size})


def place_sets(inv: Inventory) -> list[Node]:
    """Every store of every set (see the module docstring)."""
    sets, size = inv.deploy["sets"], inv.deploy["set_size"]
    next_host = [0] * DC_COUNT
    stores: list[Node] = []
    for number in range(1, sets + 1):
        used: set[str] = set()
        for j in range(size):
            dc = (j + number - 1) % DC_COUNT
            name, hosts = inv.dcs[dc]
            host = hosts[next_host[dc] % len(hosts)]
            next_host[dc] += 1
            if host.name in used:
                need = -(-size // DC_COUNT)
                raise InventoryError(
                    f"{inv.source}: dc[{dc}].hosts: a set of {size} stores needs {need} hosts "
                    f'in DC "{name}" (one store of a set per host), it has {len(hosts)}',
                    {"key": f"dc[{dc}].hosts"},
                )
            used.add(host.name)
            stores.append(Node("store", len(stores) + 1, host, number))
    return stores


def check_ports(plan: Deployment) -> None:
    """``InventoryError`` if two daemons would listen on one address and port."""
    d = plan.inventory.deploy
    taken: dict[tuple[str, int], str] = {}

    def claim(address: str, port: int | None, what: str) -> None:
        if port is None:
            return
        other = taken.setdefault((address, port), what)
        if other != what:
            raise InventoryError(
                f"{plan.inventory.source}: deploy.sets: {address}:{port} would serve both "
                f"{other} and {what} (choose ports further apart)",
                {"key": "deploy.sets"},
            )

    for node in plan.stores:
        claim(node.host.host, node.host.store_port + node.port_offset, f"store {node.id}")
        metrics = d["store_metrics_port"]
        if metrics is not None:
            claim(node.host.host, metrics + node.port_offset, f"store {node.id} metrics")
    for node in plan.locks:
        claim(node.host.host, node.host.lock_port, f"lock {node.id}")
        claim(node.host.host, d["lock_metrics_port"], f"lock {node.id} metrics")
    for host in plan.consumers:
        claim(host.host, d["consumer_metrics_port"], f"consumer {host.name} metrics")


def set_masters(plan: Deployment) -> dict[int, dict[str, list[int]]]:
    """Per set, the groups whose preferred master (``g % set_size`` in the set) is in each DC."""
    assert plan.config is not None
    groups = plan.config.cluster.groups
    by_set: dict[int, list[Node]] = defaultdict(list)
    for node in plan.stores:
        assert node.set is not None
        by_set[node.set].append(node)
    out: dict[int, dict[str, list[int]]] = {}
    for number, nodes in sorted(by_set.items()):
        nodes.sort(key=lambda n: n.id)
        per_dc: dict[str, list[int]] = {name: [] for name, _ in plan.inventory.dcs}
        for g in range(groups):
            per_dc[nodes[g % len(nodes)].host.dc].append(g)
        out[number] = per_dc
    return out


def render_sets(plan: Deployment) -> str:
    """placement.txt for a deployment with store sets."""
    inv = plan.inventory
    lines: list[Any] = [f"inventory: {inv.source}", ""]
    masters = set_masters(plan)
    for number, per_dc in masters.items():
        nodes = [n for n in plan.stores if n.set == number]
        dcs = Counter(n.host.dc for n in nodes)
        lines.append(
            f"set {number} ({len(nodes)} stores; every store of the set holds its groups):"
        )
        lines += [f"  store {n.id:<3} {n.host.dc:<12} {n.addr}" for n in nodes]
        counts = ", ".join(f"{dc} {len(groups)}" for dc, groups in per_dc.items())
        lines.append(f"  preferred masters per DC: {counts}")
        lines.append(
            f"  without any one DC: >= {len(nodes) - max(dcs.values())} of {len(nodes)} stores "
            f"(majority {len(nodes) // 2 + 1}) remain"
        )
        lines.append("")
    per_host = Counter(n.host.name for n in plan.stores)
    lines.append("stores per host: " + ", ".join(f"{h} {c}" for h, c in sorted(per_host.items())))
    lines += ["", "locks:"]
    lines += [f"  lock  {n.id:<3} {n.host.dc:<12} {n.addr}" for n in plan.locks]
    locks = len(plan.locks)
    lost = max(Counter(n.host.dc for n in plan.locks).values())
    lines.append(f"  without any one DC: >= {locks - lost} of {locks} (majority {locks // 2 + 1})")
    if plan.consumers:
        lines += ["", "consumers: " + ", ".join(h.name for h in plan.consumers)]
    return "\n".join(lines) + "\n"
