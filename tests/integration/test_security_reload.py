"""Rotating a token or a certificate needs no restart: SIGHUP re-reads the config."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import phxq
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.errors import Unauthenticated
from phxq.security import new_token, token_sha256
from phxq.security.setup import issue_certs

pytestmark = pytest.mark.integration

OLD, NEW = new_token(), new_token()


@pytest.fixture
def one_store(tmp_path: Path) -> Iterator[ProcessCluster]:
    principal = (
        f'\n[[principal]]\nname = "svc"\ntoken_sha256 = "{token_sha256(OLD)}"\n'
        'allow = ["produce:orders", "admin"]\n'
    )
    ports = free_ports(2)
    path = write_dev_config(
        tmp_path,
        nodes=1,
        groups=1,
        store_ports=ports[:1],
        lock_ports=ports[1:],
        secure=True,
        extra=principal,
    )
    cluster = ProcessCluster(path)
    try:
        cluster.start()
        cluster.wait_ready(timeout=30)
        yield cluster
    finally:
        cluster.stop()


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if await check():  # type: ignore[operator]
                return
        except phxq.PhxqError as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def test_sighup_rotates_a_token_and_a_certificate(one_store: ProcessCluster) -> None:
    cfg = one_store.config
    assert cfg.security is not None
    ca = cfg.security.ca
    addrs = one_store.store_addresses
    async with phxq.Client(addrs, token=OLD, ca=ca) as old:
        await old.enqueue("orders", b"before")
        text = one_store.config_path.read_text()
        one_store.config_path.write_text(text.replace(token_sha256(OLD), token_sha256(NEW)))
        # A renewed store certificate (30 days, same CA) in place of the old one.
        issue_certs(ca.parent, {"store-1": ["127.0.0.1"]}, days=30)
        one_store.signal("store", "1", signal.SIGHUP)

        async def new_token_works() -> bool:
            async with phxq.Client(addrs, token=NEW, ca=ca, retry_timeout=1.0) as new:
                await new.enqueue("orders", b"after")
                return True

        await _until(new_token_works, 10, "the new token to be accepted")
        # The open connection authenticated with the old token is refused from now on.
        with pytest.raises(Unauthenticated):
            await old.enqueue("orders", b"stale")
    with pytest.raises(Unauthenticated):
        async with phxq.Client(addrs, token=OLD, ca=ca, retry_timeout=1.0) as again:
            await again.enqueue("orders", b"stale")
    async with phxq.Client(addrs, token=NEW, ca=ca) as new:
        status = await new.status()
        assert 29 < status["cert"]["expires_in_days"] <= 30  # the renewed certificate
    assert one_store.alive(1)
