"""systemd units of a 3-DC deployment (see :mod:`inventory`)::

render_units(plan) -> {host name: {unit file name: text}}
"""

from __future__ import annotations

from inventory import Deployment, data_dir

_UNIT = """\
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={exec_start}
Restart=on-failure
RestartSec=2s
# SIGTERM lets the daemon close its logs; the PLog survives SIGKILL too (fdatasync'd).
KillSignal=SIGTERM
TimeoutStopSec=30s
LimitNOFILE=65536
Environment=PYTHONUNBUFFERED=1
{extra}
[Install]
WantedBy=multi-user.target
"""


def _unit(plan: Deployment, description: str, args: str, data: str | None) -> str:
    d = plan.inventory.deploy
    extra = (
        "" if data is None else f"# data: {data} (created by the daemon; owned by {d['user']})\n"
    )
    return _UNIT.format(
        description=description,
        user=d["user"],
        exec_start=f"{d['phxq']} {args}",
        extra=extra,
    )


def render_units(plan: Deployment) -> dict[str, dict[str, str]]:
    """``{host name: {unit file: text}}``: phxq-store, phxq-lock (on lock hosts) and
    phxq-consumer (when ``deploy.consumers``)."""
    d = plan.inventory.deploy
    cfg = d["config_path"]
    out: dict[str, dict[str, str]] = {}
    for node in plan.stores + plan.locks:
        # With store sets a host may run several stores: one unit each, named by store id.
        unit = f"phxq-{node.kind}{'' if node.set is None else f'-{node.id}'}.service"
        out.setdefault(node.host.name, {})[unit] = _unit(
            plan,
            f"phxq {node.kind} {node.id} ({node.host.dc})",
            f"{node.kind} --config {cfg} --node {node.id}",
            data_dir(plan, node),
        )
    for host in plan.consumers:
        args = f"consumer --config {cfg} --id {host.name}"
        if d["consumer_metrics_port"] is not None:
            args += f" --metrics-addr {host.host}:{d['consumer_metrics_port']}"
        out.setdefault(host.name, {})["phxq-consumer.service"] = _unit(
            plan, f"phxq consumer {host.name} ({host.dc})", args, None
        )
    return out
