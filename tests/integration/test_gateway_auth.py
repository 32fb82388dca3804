"""The gateway of a secure cluster ([security]): HTTPS with the cluster's member certificate,
bearer tokens of the [[principal]] table, the RPC's permissions; it reaches the stores and lock
nodes as a member."""

from __future__ import annotations

import signal
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from phxq.devcluster import ProcessCluster
from phxq.security import new_token, token_sha256

from .conftest import wait_until
from .gateway_cluster import BILLING, gateway_cluster

pytestmark = pytest.mark.integration

APP = "https://app.example.com"  # the one browser origin allowed ([gateway] cors_origins)
PRODUCER = new_token()
READER = new_token()
PRINCIPALS = f"""
[[principal]]
name = "producer"
token_sha256 = "{token_sha256(PRODUCER)}"
allow = ["produce:orders"]

[[principal]]
name = "reader"
token_sha256 = "{token_sha256(READER)}"
allow = ["consume:orders:billing"]
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    yield from gateway_cluster(
        tmp_path_factory.mktemp("gwsec"),
        extra=BILLING + PRINCIPALS,
        secure=True,
        gateway=f'cors_origins = ["{APP}"]',
    )


@pytest.fixture
async def http(gw: ProcessCluster) -> AsyncIterator[aiohttp.ClientSession]:
    assert gw.config.security is not None
    tls = ssl.create_default_context(cafile=str(gw.config.security.ca))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as resp:
        data = await resp.json(content_type=None)
        if resp.status == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json"
        return resp.status, data


async def test_https_with_tokens_enforces_the_principals_permissions(gw, http):
    url = f"{gw.gateway_url}/v1"
    assert url.startswith("https://")
    admin = (gw.config.client.token_file).read_text().strip()
    enqueue = f"{url}/topics/orders/messages"
    read = f"{url}/topics/orders/queues/0/messages"

    assert (await call(http, "POST", enqueue, data=b"x"))[1]["code"] == "unauthenticated"
    status, data = await call(http, "POST", enqueue, data=b"x", headers=bearer("wrong"))
    assert (status, data["code"]) == (401, "unauthenticated")
    status, data = await call(
        http, "POST", enqueue, data=b"x", headers={"Authorization": "Basic eA=="}
    )
    assert status == 401

    status, ack = await call(
        http, "POST", enqueue, data=b"p", headers={**bearer(PRODUCER), "Phxq-Queue": "0"}
    )
    assert status == 200, ack
    status, data = await call(
        http, "POST", f"{url}/topics/orders.dlq/messages", data=b"p", headers=bearer(PRODUCER)
    )
    assert (status, data["code"]) == (403, "forbidden")
    status, data = await call(
        http, "GET", read, params={"group": "billing"}, headers=bearer(PRODUCER)
    )
    assert (status, data["code"]) == (403, "forbidden")

    # consume:orders:billing reads with its group, takes the pair lock and commits.
    status, got = await call(
        http,
        "GET",
        read,
        params={"group": "billing", "after": ack["offset"] - 1},
        headers=bearer(READER),
    )
    assert status == 200 and got["messages"][0]["offset"] == ack["offset"]
    q = f"{url}/topics/orders/queues/0"
    status, lock = await call(
        http,
        "POST",
        f"{q}/lock/acquire",
        json={"group": "billing", "owner": "r", "ttl": 10},
        headers=bearer(READER),
    )
    assert status == 200, lock
    commit = {"group": "billing", "offset": ack["offset"], "token": lock["token"]}
    assert (await call(http, "POST", f"{q}/commit", json=commit, headers=bearer(READER)))[0] == 200
    status, data = await call(
        http, "POST", f"{q}/commit", json={**commit, "group": "other"}, headers=bearer(READER)
    )
    assert (status, data["code"]) == (403, "forbidden")
    status, data = await call(http, "POST", enqueue, data=b"x", headers=bearer(READER))
    assert status == 403
    assert (await call(http, "GET", f"{url}/status", headers=bearer(READER)))[0] == 403

    # admin may do everything; any principal may list topics; the document needs no token.
    status, st = await call(http, "GET", f"{url}/status", headers=bearer(admin))
    assert status == 200 and all("groups" in s for s in st["stores"].values()), st
    assert (await call(http, "GET", f"{url}/topics", headers=bearer(PRODUCER)))[0] == 200
    status, doc = await call(http, "GET", f"{url}/openapi.json")
    assert status == 200 and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/topics/{topic}/messages"]["post"]["security"] == [{"bearer": []}]


async def test_transactions_need_produce_on_every_topic_to_prepare_and_to_decide(gw, http):
    url = f"{gw.gateway_url}/v1/transactions"
    admin = (gw.config.client.token_file).read_text().strip()
    body = {
        "messages": [
            {"topic": "orders", "payload_base64": "YQ=="},
            {"topic": "orders.dlq", "payload_base64": "Yg=="},
        ]
    }
    # produce:orders alone does not cover orders.dlq: refused before anything is prepared.
    status, data = await call(http, "POST", url, json=body, headers=bearer(PRODUCER))
    assert (status, data["code"]) == (403, "forbidden"), data
    assert (await call(http, "POST", url, json=body))[0] == 401

    status, prepared = await call(http, "POST", url, json=body, headers=bearer(admin))
    assert status == 200 and prepared["state"] == "prepared", prepared
    commit = f"{url}/{prepared['id']}/commit"
    for token in (PRODUCER, READER):  # the handle names both topics
        status, data = await call(http, "POST", commit, headers=bearer(token))
        assert (status, data["code"]) == (403, "forbidden"), data
        status, data = await call(http, "GET", f"{url}/{prepared['id']}", headers=bearer(token))
        assert status == 403
    status, done = await call(http, "POST", commit, headers=bearer(admin))
    assert status == 200 and done["state"] == "committed", done

    # produce:orders is enough for a transaction on orders only.
    single = {"messages": [{"topic": "orders", "payload_base64": "Yw=="}]}
    status, prepared = await call(http, "POST", url, json=single, headers=bearer(PRODUCER))
    assert status == 200, prepared
    status, done = await call(
        http, "POST", f"{url}/{prepared['id']}/rollback", headers=bearer(PRODUCER)
    )
    assert status == 200 and done["state"] == "rolled_back", done


async def test_plain_http_to_a_secure_gateway_is_refused(gw):
    plain = gw.gateway_url.replace("https://", "http://") + "/v1/topics"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(plain) as resp:
                await resp.read()


async def test_sighup_applies_a_new_principal_without_a_restart(gw, http):
    url = f"{gw.gateway_url}/v1/topics/orders/messages"
    newcomer = new_token()
    status, _ = await call(http, "POST", url, data=b"n", headers=bearer(newcomer))
    assert status == 401
    gw.config_path.write_text(
        gw.config_path.read_text()
        + f'\n[[principal]]\nname = "newcomer"\ntoken_sha256 = "{token_sha256(newcomer)}"\n'
        + 'allow = ["produce:orders"]\n'
    )
    gw.signal("gateway", "1", signal.SIGHUP)

    async def accepted() -> bool:
        return (await call(http, "POST", url, data=b"n", headers=bearer(newcomer)))[0] == 200

    await wait_until(accepted, 10, "the new principal's token to be accepted")
    assert (await call(http, "POST", url, data=b"p", headers=bearer(PRODUCER)))[0] == 200


async def test_cors_serves_the_allowed_origin_and_refuses_others_still_checking_tokens(gw, http):
    enqueue = f"{gw.gateway_url}/v1/topics/orders/messages"
    ask = {"Access-Control-Request-Method": "POST"}
    ask["Access-Control-Request-Headers"] = "authorization, phxq-key, content-type"

    # Preflight from the allowed origin (browsers send no token): the route's methods and the
    # asked headers, cacheable; nothing stored.
    async with http.options(enqueue, headers={"Origin": APP, **ask}) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert resp.headers["Access-Control-Allow-Methods"] == "POST"
        assert resp.headers["Access-Control-Allow-Headers"] == ask["Access-Control-Request-Headers"]
        assert int(resp.headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in resp.headers.getall("Vary")
    # Preflight from another origin: 403, no CORS headers, so the browser never sends it.
    for origin in ("https://evil.example.com", "https://app.example.com.evil.net", None):
        headers = {**ask, **({"Origin": origin} if origin else {})}
        async with http.options(enqueue, headers=headers) as resp:
            assert resp.status == 403
            assert (await resp.json(content_type=None))["code"] == "forbidden"
            assert "Access-Control-Allow-Origin" not in resp.headers
    # A preflight for a method the path does not take is a plain 405.
    async with http.options(
        enqueue, headers={"Origin": APP, "Access-Control-Request-Method": "DELETE"}
    ) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"

    # The request itself still needs its token and permission: CORS grants nothing.
    async with http.post(enqueue, data=b"cors", headers={"Origin": APP}) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == APP  # the page may read why
        assert "WWW-Authenticate" in resp.headers["Access-Control-Expose-Headers"]
    reader = {"Origin": APP, **bearer(READER)}
    async with http.post(enqueue, data=b"cors", headers=reader) as resp:
        assert resp.status == 403
    async with http.post(
        enqueue, data=b"cors", headers={"Origin": APP, **bearer(PRODUCER)}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["offset"] is not None
        assert resp.headers["Access-Control-Allow-Origin"] == APP
    # From a refused origin the answer is the same but carries no CORS headers.
    evil = {"Origin": "https://evil.example.com", **bearer(PRODUCER)}
    async with http.post(enqueue, data=b"cors", headers=evil) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers
    # An event stream (prepared by its handler) gets the headers too.
    stream = f"{gw.gateway_url}/v1/topics/orders/stream?group=billing&timeout=0.1"
    async with http.get(stream, headers={"Origin": APP, **bearer(READER)}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        await resp.read()
