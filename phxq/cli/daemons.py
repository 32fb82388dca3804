"""``phxq store|lock|consumer|gateway``: one daemon each; ``phxq dev``: a local cluster."""

from __future__ import annotations

from pathlib import Path

import click

from phxq.cli.common import (
    _load,
    _run,
    _serve_until_signal,
    _setup_logging,
    cli,
    config_option,
    log_format_option,
)
from phxq.config import ClusterConfig

# ------------------------------------------------------------------------------- daemons


@cli.command()
@log_format_option
@config_option
@click.option("--node", "node_id", type=int, required=True, help="this store's id in the config")
def store(config_path: Path | None, node_id: int) -> None:
    """Run one store daemon."""
    from phxq.store.node import StoreNode

    cfg = _load(config_path)
    _setup_logging(f"store{node_id}")
    _run(_serve_until_signal(lambda: StoreNode(cfg, node_id), config_path))


@cli.command()
@config_option
@click.option("--id", "name", required=True, help="this consumer's name (unique per cluster)")
@click.option(
    "--weight", type=float, default=1.0, show_default=True, help="share of pairs vs. others"
)
@click.option(
    "--metrics-addr",
    default=None,
    help="host:port to serve Prometheus /metrics on (default: its [[consumer]] metrics_addr)",
)
@log_format_option
def consumer(config_path: Path | None, name: str, weight: float, metrics_addr: str | None) -> None:
    """Run one consumer daemon (delivers every [[consumer_group]] of the config)."""
    from phxq.consumer.daemon import ConsumerDaemon

    cfg = _load(config_path)
    metrics_addr = metrics_addr or cfg.consumer(name).metrics_addr
    _setup_logging(f"consumer-{name}")
    _run(
        _serve_until_signal(
            lambda: ConsumerDaemon(cfg, name, weight=weight, metrics_addr=metrics_addr),
            config_path,
        )
    )


@cli.command()
@log_format_option
@config_option
@click.option(
    "--node", "node_id", type=int, required=True, help="this lock node's id in the config"
)
def lock(config_path: Path | None, node_id: int) -> None:
    """Run one lock daemon (lease locks and the versioned KV)."""
    from phxq.lock.node import LockNode

    cfg = _load(config_path)
    _setup_logging(f"lock{node_id}")
    _run(_serve_until_signal(lambda: LockNode(cfg, node_id), config_path))


@cli.command()
@log_format_option
@config_option
@click.option(
    "--listen", default=None, help="host:port (default: [gateway] listen, or 127.0.0.1:7301)"
)
def gateway(config_path: Path, listen: str | None) -> None:
    """Run the HTTP gateway: the /v1 API over HTTP/JSON (docs/http-api.md)."""
    from phxq.gateway import Gateway

    cfg = _load(config_path)
    _setup_logging("gateway")
    _run(_serve_until_signal(lambda: Gateway(cfg, listen), config_path))  # SIGHUP: reload


def _curl_auth(config: ClusterConfig) -> str:
    """The curl options that reach a secure gateway (its CA and the [client] token)."""
    sec, client = config.security, config.client
    if sec is None:
        return ""
    token = client.token_file if client is not None else None
    auth = f'-H "Authorization: Bearer $(cat {token})" ' if token else ""
    return f"--cacert {sec.ca} {auth}"


@cli.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./phxq-data"),
    show_default=True,
    help="data directory (cluster.toml is written here)",
)
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option(
    "--sets",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="store sets (each its own Paxos cluster of --nodes stores; a new data dir only)",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=None,
    help="first store port (default 7101); lock nodes listen 100 above, the gateway 200",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="no TLS, no tokens (a new data dir only; default: a CA, certs and an admin token)",
)
@log_format_option
def dev(data: Path, nodes: int, sets: int, base_port: int | None, insecure: bool) -> None:
    """Start a local cluster on 127.0.0.1 (Ctrl-C stops it; the next run resumes its data)."""
    from phxq.devcluster import DEV_CONSUMER, DevStarted, metrics_addresses, run_dev

    def ready(started: DevStarted) -> None:
        cluster, config_path = started.cluster, started.config_path
        if started.resumed:
            click.echo(f"resumed the cluster in {data} ({config_path})")
        stores = ",".join(cluster.store_addresses)
        in_sets = len(cluster.config.sets)
        of_sets = f" in {in_sets} store sets" if in_sets > 1 else ""
        click.echo(f"phxq dev: {len(cluster.store_addresses)} stores{of_sets} ready: {stores}")
        locks = ",".join(cluster.lock_addresses)
        click.echo(f"          {len(cluster.lock_addresses)} lock nodes ready: {locks}")
        click.echo(f"          consumer {DEV_CONSUMER!r} delivers group 'log' to its log")
        if cluster.gateway_url:
            click.echo(f"          HTTP gateway: {cluster.gateway_url}/v1 (docs/http-api.md)")
        for what, addr in metrics_addresses(cluster.config, DEV_CONSUMER):
            click.echo(f"          metrics of {what}: http://{addr}/metrics")
        click.echo(f"config: {config_path}   logs: {cluster.log_dir}")
        client = cluster.config.client
        if cluster.config.security is not None and client is not None:
            click.echo(
                f"security: TLS on every link; admin token in {client.token_file}, CA {client.ca}"
                " (the tools read them from [client]; docs/security.md)"
            )
        click.echo(f'try:  phxq enqueue --config {config_path} orders --key user-42 "hello"')
        click.echo(f"      phxq tail --config {config_path} orders --from start")
        if cluster.gateway_url:
            click.echo(
                f"      curl {_curl_auth(cluster.config)}-d hello {cluster.gateway_url}/v1/topics/orders/messages"
            )
        click.echo("Ctrl-C to stop.")

    log_format = click.get_current_context().meta.get("phxq.log_format", "text")
    run_dev(
        data,
        nodes=nodes,
        sets=sets,
        base_port=base_port,
        on_ready=ready,
        secure=not insecure,
        log_format=log_format,
    )
    click.echo("stopped.")
