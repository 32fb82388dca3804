"""A secured cluster (real processes, real TLS) keeps every door shut and keeps serving.

One cluster per module (3 stores, 3 lock nodes, [security] as `phxq dev` writes it, plus a
principal per permission). Every attack gets a typed error or a closed connection; afterwards
nothing it sent is stored and a legitimate client still works.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phxq
from phxq.devcluster import ProcessCluster, free_ports, write_dev_config
from phxq.errors import Forbidden, PhxqError, Unauthenticated, Unavailable
from phxq.lock.client import LockClient
from phxq.net.frames import encode_request, prefix
from phxq.net.rpc import RpcPool
from phxq.paxos import Ballot, encode_message
from phxq.paxos.messages import Accept, Chosen, Prepare
from phxq.security import client_context, make_ca, make_member_cert, new_token, token_sha256
from phxq.security.tls import Credentials

pytestmark = pytest.mark.integration

TOKENS = {"producer": new_token(), "consumer": new_token(), "reader": new_token()}
PRINCIPALS = "".join(
    f'\n[[principal]]\nname = "{name}"\ntoken_sha256 = "{token_sha256(token)}"\nallow = {allow}\n'
    for name, token, allow in (
        ("producer", TOKENS["producer"], '["produce:orders"]'),
        ("consumer", TOKENS["consumer"], '["consume:orders:billing"]'),
        ("reader", TOKENS["reader"], '["consume:orders.dlq:*"]'),
    )
)
EVIL = b"evil"
HOOK_SECRET = b"a-hook-secret-of-32-bytes-length"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    data = tmp_path_factory.mktemp("secure")
    ports = free_ports(7)
    (data / "hook.secret").write_bytes(HOOK_SECRET)
    # A consumer daemon (a member: TLS with its certificate to stores and lock nodes) pushing
    # topic "hooks" to an HTTP handler that test_pushes_are_signed starts, signed.
    hooks = (
        '\n[[topic]]\nname = "hooks"\nqueues = 1\n'
        '\n[[consumer_group]]\nname = "hooked"\ntopic = "hooks"\n'
        f'handler = "http://127.0.0.1:{ports[6]}/hook"\nsigning_secret_file = "hook.secret"\n'
    )
    path = write_dev_config(
        data,
        groups=2,
        store_ports=ports[:3],
        lock_ports=ports[3:6],
        secure=True,
        extra=PRINCIPALS + hooks,
    )
    cluster = ProcessCluster(path, locks=True, consumers=("c1",))
    try:
        cluster.start()
        cluster.wait_ready(timeout=30)
        yield cluster
    finally:
        cluster.stop()


def _ca(cluster: ProcessCluster) -> Path:
    assert cluster.config.security is not None
    return cluster.config.security.ca


def _admin(cluster: ProcessCluster) -> str:
    token = cluster.credentials.token
    assert token is not None
    return token


def _client(cluster: ProcessCluster, **kw: Any) -> phxq.Client:
    kw.setdefault("ca", _ca(cluster))
    return phxq.Client(cluster.store_addresses, retry_timeout=2.0, **kw)


async def _stored(cluster: ProcessCluster) -> dict[str, Any]:
    """Every message of `orders`, each group's chosen prefix, ballots and cursors."""
    async with _client(cluster, token=_admin(cluster)) as admin:
        payloads = []
        for q in range(8):
            payloads += [
                m.payload for m in await admin.dequeue(None, "orders", queue=q, limit=1000)
            ]
        cursors = [await admin.cursor("billing", "orders", queue=q) for q in range(8)]
        views = {}
        for s in cluster.config.stores:
            st = await admin.status(s.addr)
            views[s.id] = [(g["group"], g["ballot"], g["chosen_up_to"]) for g in st["groups"]]
    return {"payloads": payloads, "cursors": cursors, "views": views}


async def test_each_principal_gets_exactly_its_permissions(secure: ProcessCluster) -> None:
    before = await _stored(secure)
    async with _client(secure, token=TOKENS["producer"]) as producer:
        ack = await producer.enqueue("orders", b"legit", key="k")
        with pytest.raises(Forbidden):
            await producer.dequeue("billing", "orders", queue=ack.queue)
        with pytest.raises(Forbidden):
            await producer.status()
        with pytest.raises(Forbidden):
            await producer.enqueue("orders.dlq", EVIL)
    async with _client(secure, token=TOKENS["consumer"]) as consumer:
        msgs = await consumer.dequeue("billing", "orders", queue=ack.queue, limit=100)
        assert b"legit" in [m.payload for m in msgs]
        with pytest.raises(Forbidden):
            await consumer.dequeue("audit", "orders", queue=ack.queue)
        with pytest.raises(Forbidden):
            await consumer.enqueue("orders", EVIL)
        with pytest.raises(Forbidden):
            await consumer.seek("audit", "orders", queue=0, offset=0)
        with pytest.raises(Forbidden):
            await consumer.status()
    async with _client(secure, token=TOKENS["reader"]) as reader:
        await reader.dequeue(None, "orders.dlq", queue=0)  # tail of a granted topic
        with pytest.raises(Forbidden):
            await reader.dequeue(None, "orders", queue=0)
    after = await _stored(secure)
    assert after["payloads"].count(b"legit") == before["payloads"].count(b"legit") + 1
    assert EVIL not in after["payloads"]
    assert after["cursors"] == before["cursors"]


async def test_lock_service_admin_writes_settings_members_only_hold_locks(
    secure: ProcessCluster,
) -> None:
    ca = _ca(secure)
    async with LockClient(secure.lock_addresses, token=_admin(secure), ca=ca) as admin:
        await admin.kv_put("settings/billing/paused", False)
        with pytest.raises(Forbidden):
            await admin.acquire("pair/billing/orders/0", "impostor", 5.0)
        with pytest.raises(Forbidden):
            await admin.kv_put("consumers/impostor", {"weight": 1})
    async with LockClient(secure.lock_addresses, token=TOKENS["producer"], ca=ca) as producer:
        with pytest.raises(Forbidden):
            await producer.kv_put("settings/billing/paused", True)
        with pytest.raises(Forbidden):
            await producer.kv_list("")
    async with LockClient(secure.lock_addresses, ca=ca, retry_timeout=2.0) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.kv_get("settings/billing/paused")


async def test_no_token_wrong_token_and_wrong_ca_are_refused(
    secure: ProcessCluster, tmp_path: Path
) -> None:
    with pytest.raises(Unauthenticated):
        async with _client(secure) as anonymous:
            await anonymous.enqueue("orders", EVIL)
    with pytest.raises(Unauthenticated) as info:
        async with _client(secure, token="guess-" + TOKENS["producer"]) as wrong:
            await wrong.enqueue("orders", EVIL)
    assert TOKENS["producer"] not in str(info.value)
    other_ca, _ = make_ca("someone else's CA")
    (tmp_path / "other.pem").write_bytes(other_ca)
    with pytest.raises(Unauthenticated, match="cannot verify"):
        async with _client(secure, token=_admin(secure), ca=tmp_path / "other.pem") as fooled:
            await fooled.enqueue("orders", EVIL)
    async with _client(secure, token=_admin(secure)) as admin:
        assert (await admin.enqueue("orders", b"still-serving")).offset > 0


def _member_pair(
    cluster: ProcessCluster, tmp_path: Path, *, ca: tuple[bytes, bytes] | None = None, **kw: Any
) -> ssl.SSLContext:
    """A client context presenting a certificate made with ``kw`` (by the cluster CA unless
    ``ca`` is given)."""
    certs = _ca(cluster).parent
    ca_pem, ca_key = ca or ((certs / "ca.pem").read_bytes(), (certs / "ca.key").read_bytes())
    cert, key = make_member_cert(ca_pem, ca_key, "store-9", ["127.0.0.1"], **kw)
    (tmp_path / "m.pem").write_bytes(cert)
    (tmp_path / "m.key").write_bytes(key)
    return client_context(_ca(cluster), tmp_path / "m.pem", tmp_path / "m.key")


async def _impostor_calls(cluster: ProcessCluster, creds: Credentials) -> list[PhxqError]:
    """Peer-only calls and well-formed Paxos notifications with ``creds``: the errors."""
    errors: list[PhxqError] = []
    prepare = Prepare(group=0, sender=1, ballot=Ballot(1 << 20, 1), from_instance=1)
    accept = Accept(group=0, sender=1, ballot=Ballot(1 << 20, 1), instance=1, value=EVIL)
    chosen = Chosen(group=0, sender=1, ballot=Ballot(1 << 20, 1), first=1, last=1)
    async with RpcPool(transport_factory=creds.transport_factory(), connect_timeout=2.0) as pool:
        for s in cluster.config.stores:
            for msg in (prepare, accept, chosen):
                pool.notify(s.addr, "px", encode_message(msg))
            for method in ("rejoin_probe", "rejoin_read", "status"):
                try:
                    await pool.call(s.addr, method, {}, timeout=2.0)
                except PhxqError as exc:
                    errors.append(exc)
    return errors


async def test_impostors_change_nothing(secure: ProcessCluster, tmp_path: Path) -> None:
    before = await _stored(secure)
    ca = _ca(secure)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    impostors = {
        # valid TLS to the server, no member certificate, a valid (non-admin) token
        "no member cert": Credentials(client_context(ca), TOKENS["producer"]),
        # a member certificate from the cluster CA, but expired
        "expired cert": Credentials(_member_pair(secure, tmp_path, days=1, not_before=old)),
        # a self-signed "member" certificate from another CA
        "self-signed": Credentials(_member_pair(secure, tmp_path, ca=make_ca("impostor"))),
    }
    for name, creds in impostors.items():
        errors = await _impostor_calls(secure, creds)
        assert len(errors) == 9, name
        for exc in errors:
            if name == "no member cert":
                assert isinstance(exc, Forbidden), (name, exc)
            else:  # the server closes the handshake: the call sees the connection go
                assert isinstance(exc, (Unavailable, Unauthenticated)), (name, exc)
    async with _client(secure, token=_admin(secure)) as admin:
        await admin.enqueue("orders", b"after-impostors")
    after = await _stored(secure)
    assert EVIL not in after["payloads"]
    for node, rows in before["views"].items():
        now = {g: (ballot, chosen) for g, ballot, chosen in after["views"][node]}
        for g, ballot, chosen in rows:
            assert now[g][0] == ballot, f"store {node} group {g}: an impostor moved the ballot"
            assert chosen <= now[g][1] <= chosen + 1, f"store {node} group {g}: {now[g]}"


def _raw_exchange(addr: str, payload: bytes) -> bytes:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


async def test_plaintext_and_garbage_on_a_tls_port_are_closed(secure: ProcessCluster) -> None:
    request = encode_request(
        1, "enqueue", {"topic": "orders", "batches": [[0, [[EVIL, None, {}, None]]]]}
    )
    for addr in (*secure.store_addresses, secure.lock_addresses[0]):
        for payload in (
            prefix(request) + request,
            b"\x16\x03\x01\xff\xff" + b"\x00" * 300,
            b"GET / HTTP/1.1\r\n\r\n",
        ):
            reply = await asyncio.to_thread(_raw_exchange, addr, payload)
            assert b"orders" not in reply and len(reply) < 64  # at most a TLS alert, then closed
    async with _client(secure, token=_admin(secure)) as admin:
        await admin.enqueue("orders", b"after-plaintext")
    assert EVIL not in (await _stored(secure))["payloads"]


async def test_pushes_are_signed(secure: ProcessCluster) -> None:
    """The consumer (a member over TLS) delivers to an HTTP handler with a signature the
    handler can verify with the group's secret."""
    from aiohttp import web

    from phxq.security.signing import verify

    group = secure.config.consumer_group("hooked")
    port = int(group.handler.rsplit(":", 1)[1].split("/")[0])
    received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        async with _client(secure, token=_admin(secure)) as admin:
            await admin.enqueue("hooks", b"signed push")
        async with asyncio.timeout(30):
            while True:
                headers, body = await received.get()
                if body == b"signed push":
                    break
        assert verify(HOOK_SECRET, headers, body, time.time())
        assert not verify(b"another-secret-of-some-length", headers, body, time.time())
    finally:
        await runner.cleanup()
