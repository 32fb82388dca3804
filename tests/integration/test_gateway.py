"""The HTTP gateway against a live cluster, through a real HTTP client (aiohttp): every route,
its errors as problems, bad input that changes nothing, slow and excess clients."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from subprocess import PIPE
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from bench import gateway as gateway_bench
from phxq.client import Client
from phxq.devcluster import ProcessCluster
from phxq.gateway.routes import build_routes
from phxq.gateway.txn import Handle
from phxq.routing import queue_for_key

from .gateway_cluster import gateway_cluster

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
BODY_TIMEOUT = 1.0
MAX_IN_FLIGHT = 24
MAX_BODY = 64 << 10


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    options = (
        f'max_wait = "2s"\nbody_timeout = "{BODY_TIMEOUT}s"\n'
        f"max_in_flight = {MAX_IN_FLIGHT}\nmax_body_bytes = {MAX_BODY}"
    )
    yield from gateway_cluster(tmp_path_factory.mktemp("gw"), gateway=options)


@pytest.fixture
def url(gw: ProcessCluster) -> str:
    assert gw.gateway_url is not None
    return gw.gateway_url + "/v1"


@pytest.fixture
async def native(gw: ProcessCluster) -> AsyncIterator[Client]:
    async with Client(gw.store_addresses) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(method, url, **kw) as resp:
        body = await resp.read()
        data = json.loads(body) if body and "json" in (resp.content_type or "") else body
        return resp.status, data, resp


def assert_problem(status: int, data: Any, resp: aiohttp.ClientResponse, want: int, code: str):
    assert resp.content_type == PROBLEM, (status, data)
    assert (status, data["status"], data["code"]) == (want, want, code), data
    assert data["detail"] and "Traceback" not in data["detail"]


# ----------------------------------------------------------------------------- produce


async def test_raw_enqueue_then_dequeue_returns_payload_key_and_headers(http, url):
    payload = bytes(range(256))
    status, ack, _ = await call(
        http,
        "POST",
        f"{url}/topics/orders/messages",
        data=payload,
        headers={"Phxq-Key": "user-42", "Phxq-Header-Trace-Id": "abc", "Phxq-Header-X": "1"},
    )
    assert status == 200, ack
    assert ack["topic"] == "orders" and ack["queue"] == queue_for_key("user-42", 8)
    assert ack["duplicate"] is False
    status, got, _ = await call(
        http,
        "GET",
        f"{url}/topics/orders/queues/{ack['queue']}/messages",
        params={"after": ack["offset"] - 1, "limit": 1},
    )
    assert status == 200
    (msg,) = got["messages"]
    assert msg["offset"] == ack["offset"] and msg["key"] == "user-42"
    assert base64.b64decode(msg["payload_base64"]) == payload
    assert msg["headers"] == {"trace-id": "abc", "x": "1"}
    assert abs(msg["enqueued_at"] - time.time()) < 60


async def test_retry_with_same_dedup_id_is_stored_once(http, url):
    headers = {"Phxq-Dedup-Id": "retry-1", "Phxq-Queue": "1"}
    _, first, _ = await call(
        http, "POST", f"{url}/topics/orders/messages", data=b"a", headers=headers
    )
    _, again, _ = await call(
        http, "POST", f"{url}/topics/orders/messages", data=b"a", headers=headers
    )
    assert (again["offset"], again["duplicate"]) == (first["offset"], True)
    _, got, _ = await call(
        http, "GET", f"{url}/topics/orders/queues/1/messages", params={"after": first["offset"]}
    )
    assert got["messages"] == []


async def test_json_batch_answers_one_ack_per_message_in_order(http, url, native):
    batch = {
        "messages": [
            {"payload_base64": base64.b64encode(f"m{i}".encode()).decode(), "key": f"k{i}"}
            for i in range(5)
        ]
        + [{"payload_base64": "", "queue": 2, "headers": {"h": "v"}, "dedup_id": "b-1"}]
    }
    status, acks, _ = await call(http, "POST", f"{url}/topics/orders/messages", json=batch)
    assert status == 200 and len(acks) == 6
    assert [a["queue"] for a in acks[:5]] == [queue_for_key(f"k{i}", 8) for i in range(5)]
    assert acks[5]["queue"] == 2
    msgs = await native.dequeue(None, "orders", queue=2, after=acks[5]["offset"] - 1, limit=1)
    assert msgs[0].payload == b"" and msgs[0].headers == {"h": "v"}


async def test_long_poll_answers_as_soon_as_a_message_arrives(http, url):
    _, before, _ = await call(http, "GET", f"{url}/topics/orders/queues/6/messages?wait=0")
    after = before["messages"][-1]["offset"] if before["messages"] else None
    params = {"wait": "2"} if after is None else {"wait": "2", "after": str(after)}
    poll = asyncio.ensure_future(
        call(http, "GET", f"{url}/topics/orders/queues/6/messages", params=params)
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    started = time.monotonic()
    await call(
        http, "POST", f"{url}/topics/orders/messages", data=b"wake", headers={"Phxq-Queue": "6"}
    )
    status, got, _ = await poll
    assert status == 200 and time.monotonic() - started < 1.5
    assert [base64.b64decode(m["payload_base64"]) for m in got["messages"]] == [b"wake"]


async def test_delayed_message_is_invisible_until_due_and_can_be_cancelled(http, url):
    q = f"{url}/topics/orders/queues/0"
    _, before, _ = await call(http, "GET", f"{q}/messages", params={"limit": 10000})
    last = before["messages"][-1]["offset"] if before["messages"] else 0
    headers = {"Phxq-Queue": "0", "Phxq-Delay": "0.5"}
    status, ack, _ = await call(
        http, "POST", f"{url}/topics/orders/messages", data=b"later", headers=headers
    )
    assert status == 200 and ack["offset"] is None and ack["scheduled_id"].startswith("orders/0/")
    batch = {"messages": [{"payload_base64": "bm8=", "queue": 0, "delay": 3600}]}
    _, (never,), _ = await call(http, "POST", f"{url}/topics/orders/messages", json=batch)
    _, now, _ = await call(http, "GET", f"{q}/messages", params={"after": last})
    assert now["messages"] == []  # not due yet
    number = never["scheduled_id"].rsplit("/", 1)[1]
    status, done, _ = await call(http, "DELETE", f"{q}/scheduled/{number}")
    assert (status, done["cancelled"]) == (200, True)
    _, due, _ = await call(http, "GET", f"{q}/messages", params={"after": last, "wait": "2"})
    assert [base64.b64decode(m["payload_base64"]) for m in due["messages"]] == [b"later"]
    status, data, resp = await call(
        http, "POST", f"{url}/topics/orders/messages", data=b"x", headers={"Phxq-Delay": "-1"}
    )
    assert_problem(status, data, resp, 400, "bad_argument")


# ------------------------------------------------------------------- locks and cursors


# Three groups (queue % 4): orders 5 -> 1 (the home), orders 7 -> 3, orders.dlq 0 -> 0.
TXN_QUEUES = (("orders", 5), ("orders", 7), ("orders.dlq", 0))


async def prepare_txn(http: aiohttp.ClientSession, url: str, tag: str) -> dict[str, Any]:
    messages = [
        {"topic": t, "queue": q, "payload_base64": base64.b64encode(f"{tag}-{i}".encode()).decode()}
        for i, (t, q) in enumerate(TXN_QUEUES)
    ]
    status, prepared, _ = await call(
        http, "POST", f"{url}/transactions", json={"messages": messages, "timeout": 60}
    )
    assert status == 200 and prepared["state"] == "prepared", prepared
    assert prepared["topics"] == ["orders", "orders.dlq"] and prepared["messages"] == 3
    return prepared


async def after_marks(native: Client, marks: list[Any]) -> list[bytes]:
    """Payloads after each queue's mark (its offset), every queue of TXN_QUEUES."""
    out = []
    for (topic, q), mark in zip(TXN_QUEUES, marks, strict=True):
        msgs = await native.dequeue(None, topic, queue=q, after=mark.offset, limit=10)
        out += [m.payload for m in msgs]
    return out


async def test_transaction_commit_shows_all_rollback_none_and_a_contradiction_is_409(
    http, url, native
):
    marks = [await native.enqueue(t, b"mark", queue=q) for t, q in TXN_QUEUES]
    committed, rolled = await prepare_txn(http, url, "c"), await prepare_txn(http, url, "r")
    assert await after_marks(native, marks) == []  # prepared: durable, readable by nobody

    status, got, _ = await call(http, "POST", f"{url}/transactions/{committed['id']}/commit")
    assert status == 200 and (got["state"], got["txn"]) == ("committed", committed["txn"]), got
    assert {(r["topic"], r["queue"]) for r in got["released"]} <= set(TXN_QUEUES)
    status, got, _ = await call(http, "POST", f"{url}/transactions/{rolled['id']}/rollback")
    assert status == 200 and got["state"] == "rolled_back", got
    ends = [await native.enqueue(t, b"end", queue=q) for t, q in TXN_QUEUES]
    # Every committed message, once; no rolled-back one (they would come before "end").
    assert sorted(await after_marks(native, marks)) == sorted(
        [b"c-0", b"c-1", b"c-2"] + [b"end"] * 3
    )
    assert all(e.offset is not None for e in ends)

    # First decision wins: the same again is answered again, the other one is a 409.
    status, got, _ = await call(http, "POST", f"{url}/transactions/{committed['id']}/commit")
    assert status == 200 and got["state"] == "committed"
    status, got, resp = await call(http, "POST", f"{url}/transactions/{committed['id']}/rollback")
    assert_problem(status, got, resp, 409, "txn_committed")
    assert got["state"] == "committed" and got["txn"] == committed["txn"]
    status, got, resp = await call(http, "POST", f"{url}/transactions/{rolled['id']}/commit")
    assert_problem(status, got, resp, 409, "txn_aborted")
    assert got["state"] == "rolled_back"
    for prepared, state in ((committed, "committed"), (rolled, "rolled_back")):
        status, got, _ = await call(http, "GET", f"{url}/transactions/{prepared['id']}")
        assert status == 200 and got["state"] == state, got

    # An edited handle names no transaction of ours: a 404 before any store is asked.
    status, got, resp = await call(http, "POST", f"{url}/transactions/{committed['id']}x/commit")
    assert_problem(status, got, resp, 404, "not_found")
    # A well-formed handle of a transaction never prepared: no false "committed".
    stranger = Handle(os.urandom(16).hex(), ("orders",), (("orders", 5),)).encode()
    status, got, resp = await call(http, "POST", f"{url}/transactions/{stranger}/commit")
    assert_problem(status, got, resp, 404, "not_found")


async def test_reader_owns_a_pair_commits_with_its_token_and_is_fenced(http, url):
    q = f"{url}/topics/orders/queues/4"
    acquire = {"group": "http-readers", "owner": "r1", "ttl": 30}
    status, lock, _ = await call(http, "POST", f"{q}/lock/acquire", json=acquire)
    assert status == 200 and lock["lock"] == "cg/http-readers/orders/4", lock
    token = lock["token"]
    status, data, resp = await call(
        http, "POST", f"{q}/lock/acquire", json={**acquire, "owner": "r2"}
    )
    assert_problem(status, data, resp, 409, "lock_held")
    _, held, _ = await call(http, "GET", f"{q}/lock", params={"group": "http-readers"})
    assert (held["held"], held["owner"], held["token"]) == (True, "r1", token)

    _, ack, _ = await call(
        http, "POST", f"{url}/topics/orders/messages", data=b"c", headers={"Phxq-Queue": "4"}
    )
    commit = {"group": "http-readers", "offset": ack["offset"], "token": token}
    status, done, _ = await call(http, "POST", f"{q}/commit", json=commit)
    assert (status, done["cursor"]) == (200, ack["offset"]), done
    _, cur, _ = await call(http, "GET", f"{q}/cursor", params={"group": "http-readers"})
    assert cur["cursor"] == ack["offset"]
    _, after_cursor, _ = await call(http, "GET", f"{q}/messages", params={"group": "http-readers"})
    assert all(m["offset"] > ack["offset"] for m in after_cursor["messages"])

    status, renewed, _ = await call(
        http,
        "POST",
        f"{q}/lock/renew",
        json={"group": "http-readers", "owner": "r1", "token": token},
    )
    assert status == 200 and renewed["token"] == token
    status, rel, _ = await call(
        http,
        "POST",
        f"{q}/lock/release",
        json={"group": "http-readers", "owner": "r1", "token": token},
    )
    assert (status, rel["released"]) == (200, True)
    # The next owner's token is newer; the old owner's commit is fenced off.
    _, lock2, _ = await call(http, "POST", f"{q}/lock/acquire", json={**acquire, "owner": "r2"})
    assert lock2["token"] > token
    await call(http, "POST", f"{q}/commit", json={**commit, "token": lock2["token"]})
    status, data, resp = await call(http, "POST", f"{q}/commit", json=commit)
    assert_problem(status, data, resp, 409, "stale_token")
    status, data, resp = await call(
        http,
        "POST",
        f"{q}/lock/renew",
        json={"group": "http-readers", "owner": "r1", "token": token},
    )
    assert status == 409 and data["code"] in ("lock_held", "stale_token")


async def test_seek_moves_the_cursor_by_offset_and_by_time(http, url):
    q = f"{url}/topics/orders/queues/5"
    _, ack, _ = await call(
        http, "POST", f"{url}/topics/orders/messages", data=b"s", headers={"Phxq-Queue": "5"}
    )
    status, sought, _ = await call(
        http, "POST", f"{q}/seek", json={"group": "seekers", "offset": ack["offset"]}
    )
    assert (status, sought["cursor"]) == (200, ack["offset"] - 1)
    _, got, _ = await call(http, "GET", f"{q}/messages", params={"group": "seekers", "limit": 1})
    assert got["messages"][0]["offset"] == ack["offset"]
    status, sought, _ = await call(http, "POST", f"{q}/seek", json={"group": "seekers", "time": 0})
    assert status == 200 and sought["cursor"] < ack["offset"]
    status, data, resp = await call(http, "POST", f"{q}/seek", json={"group": "seekers"})
    assert_problem(status, data, resp, 400, "bad_argument")


# ---------------------------------------------------------------------------- admin


async def test_topics_topic_status_and_lag(http, url, gw):
    status, data, _ = await call(http, "GET", f"{url}/topics")
    by_name = {t["name"]: t for t in data["topics"]}
    assert status == 200 and by_name["orders"]["queues"] == 8
    assert by_name["orders"]["consumer_groups"] == ["billing"]
    _, one, _ = await call(http, "GET", f"{url}/topics/orders")
    assert one == by_name["orders"]
    status, data, resp = await call(http, "GET", f"{url}/topics/nope")
    assert_problem(status, data, resp, 404, "unknown_topic")

    status, st, _ = await call(http, "GET", f"{url}/status")
    assert status == 200 and set(st["stores"]) == {"1", "2", "3"}
    masters = {g["group"] for s in st["stores"].values() for g in s["groups"] if g["is_master"]}
    assert masters == set(range(4))
    pairs = st["ownership"]["pairs"]
    assert {(p["group"], p["queue"]) for p in pairs} == {("billing", q) for q in range(8)}

    status, lag, _ = await call(http, "GET", f"{url}/lag", params={"group": "billing"})
    assert status == 200 and {r["queue"] for r in lag["lag"]} == set(range(8))
    assert all(r["group"] == "billing" for r in lag["lag"])
    status, data, resp = await call(http, "GET", f"{url}/lag", params={"group": "nobody"})
    assert_problem(status, data, resp, 404, "not_found")


async def test_a_topic_and_group_created_online_are_served_without_a_restart(http, url, gw):
    from phxq import admin

    # The gateway reads the map again on an unknown group and still finds none: 404.
    status, data, resp = await call(http, "GET", f"{url}/lag", params={"group": "web"})
    assert_problem(status, data, resp, 404, "not_found")
    await admin.topic_create(gw.config, "clicks", queues=2)
    handler = "phxq.consumer.demo:log_message"
    await admin.group_create(gw.config, "web", topic="clicks", handler=handler)

    status, lag, _ = await call(http, "GET", f"{url}/lag", params={"group": "web"})
    assert status == 200 and {(r["topic"], r["queue"]) for r in lag["lag"]} == {
        ("clicks", 0),
        ("clicks", 1),
    }
    status, clicks, _ = await call(http, "GET", f"{url}/topics/clicks")
    assert (status, clicks["queues"], clicks["consumer_groups"]) == (200, 2, ["web"]), clicks

    # Read and commit as the new group: lock, dequeue after the cursor, commit, lag follows.
    q = f"{url}/topics/clicks/queues/1"
    status, lock, _ = await call(
        http, "POST", f"{q}/lock/acquire", json={"group": "web", "owner": "w1", "ttl": 30}
    )
    assert status == 200 and lock["lock"] == "cg/web/clicks/1", lock
    _, ack, _ = await call(
        http, "POST", f"{url}/topics/clicks/messages", data=b"k", headers={"Phxq-Queue": "1"}
    )
    status, got, _ = await call(http, "GET", f"{q}/messages", params={"group": "web"})
    assert status == 200 and [m["offset"] for m in got["messages"]] == [ack["offset"]]
    commit = {"group": "web", "offset": ack["offset"], "token": lock["token"]}
    status, done, _ = await call(http, "POST", f"{q}/commit", json=commit)
    assert (status, done["cursor"]) == (200, ack["offset"]), done
    _, again, _ = await call(http, "GET", f"{q}/messages", params={"group": "web"})
    assert again["messages"] == []
    deadline = time.monotonic() + 10
    while True:  # the stores report the new group's lag once they serve the new map
        _, lag, _ = await call(http, "GET", f"{url}/lag", params={"group": "web"})
        row = next(r for r in lag["lag"] if r["queue"] == 1)
        if (row["cursor"], row["lag"]) == (ack["offset"], 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert (row["cursor"], row["lag"]) == (ack["offset"], 0), row
    _, st, _ = await call(http, "GET", f"{url}/status")
    assert {(p["group"], p["queue"]) for p in st["ownership"]["pairs"]} >= {("web", 0), ("web", 1)}
    status, data, resp = await call(http, "GET", f"{url}/lag", params={"group": "nobody"})
    assert_problem(status, data, resp, 404, "not_found")

    # Deleted online: no longer listed at once, and 404 once the gateway's cached view of the
    # map is older than VIEW_MAX_AGE (1 s); the cursor it committed stays in the stores.
    row = await admin.group_delete(gw.config, "web")
    assert (row["name"], row["settings_removed"]) == ("web", 0)
    status, clicks, _ = await call(http, "GET", f"{url}/topics/clicks")
    assert (status, clicks["consumer_groups"]) == (200, []), clicks
    deadline = time.monotonic() + 5
    while True:
        status, data, resp = await call(http, "GET", f"{url}/lag", params={"group": "web"})
        if status == 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert_problem(status, data, resp, 404, "not_found")
    status, cursor, _ = await call(http, "GET", f"{q}/cursor", params={"group": "web"})
    assert (status, cursor["cursor"]) == (200, ack["offset"]), cursor


# ---------------------------------------------------------------------------- stream


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    event: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len(events) < count:
            line = (await resp.content.readline()).decode()
            assert line, f"stream ended after {events}"
            line = line.rstrip("\n")
            if not line:
                if "data" in event:
                    events.append(event)
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value
    return events


async def test_stream_tails_new_messages_and_resumes_from_last_event_id(http, url):
    async with http.get(f"{url}/topics/orders/stream") as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert (await resp.content.readline()).startswith(b": tail of orders")
        for i in range(3):
            await call(
                http,
                "POST",
                f"{url}/topics/orders/messages",
                data=f"t{i}".encode(),
                headers={"Phxq-Key": "tail"},
            )
        events = await read_events(resp, 3)
    payloads = [base64.b64decode(json.loads(e["data"])["payload_base64"]) for e in events]
    assert payloads == [b"t0", b"t1", b"t2"] and {e["event"] for e in events} == {"message"}
    # Resume after the first event: exactly the two later ones come again.
    headers = {"Last-Event-ID": events[0]["id"]}
    params = {"limit": "2", "timeout": "5"}
    async with http.get(f"{url}/topics/orders/stream", headers=headers, params=params) as resp:
        again = await read_events(resp, 2)
    assert [e["id"] for e in again] == [e["id"] for e in events[1:]]
    # From an offset of one queue, ending after a timeout.
    first = json.loads(events[0]["data"])
    params = {"queue": first["queue"], "after": first["offset"], "timeout": "0.3"}
    status, text, _ = await call(http, "GET", f"{url}/topics/orders/stream", params=params)
    assert status == 200 and text.count(b"event: message") == 2


# ------------------------------------------------------------------------ bad input


async def chosen(native: Client, gw: ProcessCluster) -> dict[int, int]:
    out: dict[int, int] = {}
    for addr in gw.store_addresses:
        for g in (await native.status(addr))["groups"]:
            out[g["group"]] = max(out.get(g["group"], 0), g["chosen_up_to"])
    return out


BAD: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "POST",
        "/topics/orders/messages",
        {"data": b"{", "headers": {"Content-Type": "application/json"}},
        400,
        "bad_argument",
    ),
    ("POST", "/topics/orders/messages", {"json": {"messages": []}}, 400, "bad_argument"),
    (
        "POST",
        "/topics/orders/messages",
        {"json": {"messages": [{"payload_base64": "!!"}]}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/messages",
        {"json": {"messages": [{"payload_base64": "", "key": 7}]}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/messages",
        {"json": {"messages": [{"payload_base64": "", "extra": 1}]}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/messages",
        {"json": {"messages": [{"payload_base64": "", "queue": 99}]}},
        400,
        "bad_argument",
    ),
    ("POST", "/topics/orders/messages", {"json": [1, 2]}, 400, "bad_argument"),
    (
        "POST",
        "/topics/orders/messages",
        {
            "data": b'{"messages": [{"payload_base64": "", "key": "\\ud800"}]}',
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/messages",
        {"data": b"[" * 60_000, "headers": {"Content-Type": "application/json"}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/messages",
        {"data": b"x", "headers": {"Phxq-Queue": "-1"}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/messages",
        {"data": b"x", "headers": {"Phxq-Queue": "abc"}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/messages",
        {"data": b"x", "headers": {"Phxq-Dedup-Id": "d" * 300}},
        400,
        "bad_argument",
    ),
    ("POST", "/topics/orders/messages", {"data": b"x" * (MAX_BODY + 1)}, 413, "message_too_large"),
    ("POST", "/topics/nope/messages", {"data": b"x"}, 404, "unknown_topic"),
    ("GET", "/topics/orders/queues/0/messages?limit=0", {}, 400, "bad_argument"),
    ("GET", "/topics/orders/queues/0/messages?limit=ten", {}, 400, "bad_argument"),
    ("GET", "/topics/orders/queues/0/messages?wait=1e999", {}, 400, "bad_argument"),
    ("GET", "/topics/orders/queues/0/messages?wait=3", {}, 400, "bad_argument"),
    (
        "GET",
        "/topics/orders/queues/0/messages?after=99999999999999999999999",
        {},
        400,
        "bad_argument",
    ),
    ("GET", "/topics/orders/queues/8/messages", {}, 400, "bad_argument"),
    ("GET", "/topics/orders/queues/x/messages", {}, 400, "bad_argument"),
    (
        "POST",
        "/topics/orders/queues/0/commit",
        {"json": {"group": "g", "offset": "1", "token": 1}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/queues/0/commit",
        {"json": {"group": "g", "offset": 1}},
        400,
        "bad_argument",
    ),
    (
        "POST",
        "/topics/orders/queues/0/commit",
        {"json": {"group": "g", "offset": 1, "token": True}},
        400,
        "bad_argument",
    ),
    ("POST", "/topics/orders/queues/0/commit", {"data": b""}, 400, "bad_argument"),
    (
        "POST",
        "/topics/orders/queues/0/lock/acquire",
        {"json": {"group": "g", "owner": "o", "ttl": -1}},
        400,
        "bad_argument",
    ),
    ("GET", "/topics/orders/stream?from=yesterday", {}, 400, "bad_argument"),
    ("GET", "/topics/orders/stream", {"headers": {"Last-Event-ID": "zz"}}, 400, "bad_argument"),
    ("GET", "/nothing/here", {}, 404, "not_found"),
    ("DELETE", "/topics/orders/messages", {}, 405, "method_not_allowed"),
    # No [gateway] cors_origins: a preflight is just a method this path does not take.
    (
        "OPTIONS",
        "/topics/orders/messages",
        {"headers": {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}},
        405,
        "method_not_allowed",
    ),
]


@pytest.mark.parametrize(
    "method,path,kw,want,code", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)]
)
async def test_bad_input_gets_a_problem_and_changes_nothing(
    http, url, native, gw, method, path, kw, want, code
):
    before = await chosen(native, gw)
    status, data, resp = await call(http, method, url + path, **kw)
    assert_problem(status, data, resp, want, code)
    if want == 405:
        assert resp.headers["Allow"]
    assert await chosen(native, gw) == before  # nothing was proposed
    status, _, _ = await call(http, "GET", f"{url}/topics")
    assert status == 200  # and the gateway serves on


async def test_slow_body_times_out_while_others_are_served(http, url, gw):
    host, port = gw.config.gateway.listen.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/topics/orders/messages HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 100\r\n\r\n0123456789"
    )
    await writer.drain()
    started = time.monotonic()
    status, _, _ = await call(http, "GET", f"{url}/topics")
    assert status == 200 and time.monotonic() - started < BODY_TIMEOUT / 2
    async with asyncio.timeout(BODY_TIMEOUT + 5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    writer.close()
    assert time.monotonic() - started >= BODY_TIMEOUT * 0.9
    assert head.startswith(b"HTTP/1.1 408") and b"problem+json" in head, head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["code"] == "request_timeout"


async def test_requests_beyond_max_in_flight_get_429_with_retry_after(http, url):
    streams = []
    try:
        for _ in range(MAX_IN_FLIGHT):  # each open stream is a request in flight
            resp = await http.get(f"{url}/topics/orders/stream", params={"timeout": "30"})
            streams.append(resp)
            assert resp.status == 200
        status, data, resp = await call(http, "GET", f"{url}/topics")
        assert_problem(status, data, resp, 429, "overloaded")
        assert resp.headers["Retry-After"] == "1"
    finally:
        for resp in streams:
            resp.close()

    async def served() -> bool:
        return (await call(http, "GET", f"{url}/topics"))[0] == 200

    deadline = time.monotonic() + 5  # the streams end as their readers hang up
    while not await served():
        assert time.monotonic() < deadline, "still 429 after the streams closed"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ the docs' examples

DOC = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"
BLOCK = re.compile(r"^```(sh|json|text)\n(.*?)^```", re.S | re.M)


def shape(value: Any, depth: int = 3) -> Any:
    """Field names (nested ``depth`` deep), not values: offsets and times differ per run; a
    documented ``"..."`` stands for anything."""
    if value == "..." or depth == 0:
        return "..."
    if isinstance(value, dict):
        return {k: shape(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0], depth - 1)] if value else []
    return None


def same_shape(doc: Any, got: Any) -> bool:
    if doc == "...":
        return True
    if isinstance(doc, dict):
        return (
            isinstance(got, dict)
            and doc.keys() == got.keys()
            and all(same_shape(doc[k], got[k]) for k in doc)
        )
    if isinstance(doc, list):
        return isinstance(got, list) and len(doc) == len(got) and all(map(same_shape, doc, got))
    return doc == got


def test_every_curl_example_in_the_docs_answers_as_documented(url, tmp_path):
    blocks = BLOCK.findall(DOC.read_text())
    script, expected = [], []
    for i, (lang, text) in enumerate(blocks):
        if lang != "sh":
            continue
        answer = blocks[i + 1] if i + 1 < len(blocks) and blocks[i + 1][0] != "sh" else None
        script += [f"echo '@@{len(expected)}'", text.rstrip("\n"), "echo"]
        expected.append((text, answer))
    commands = "\n".join(text for text, _ in expected)
    for route in build_routes(60.0):  # every route has an example
        pattern = re.sub(r"\\{\w+\\}", r"[^/?\"\\s]+", re.escape(route.path)) + r"[?\"\s]"
        assert re.search(pattern, commands), f"no example of {route.method} {route.path}"
    env = {**os.environ, "GW": url.removesuffix("/v1")}
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(script)],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    outputs = re.split(r"^@@\d+\n", run.stdout, flags=re.M)[1:]
    assert len(outputs) == len(expected), run.stdout
    for (command, answer), out in zip(expected, outputs, strict=True):
        if answer is None:
            continue
        lang, text = answer
        if lang == "json":
            doc, got = json.loads(text), json.loads(out)
            assert same_shape(shape(doc), shape(got)), f"{command}\ndocumented {text}\ngot {out}"
            if isinstance(doc, dict) and "code" in doc:
                assert got["code"] == doc["code"], f"{command}\ngot {out}"
        else:
            fields = {line.split(":")[0] for line in text.splitlines() if line}
            got_fields = {line.split(":")[0] for line in out.splitlines() if line}
            assert fields <= got_fields, f"{command}\ndocumented {text}\ngot {out}"


# ----------------------------------------------------------------- another language

NODE_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node" / "roundtrip.mjs"


async def test_node_example_enqueues_reads_and_commits_with_builtin_fetch(url, native):
    node = shutil.which("node")
    assert node is not None, "Node.js 20 is needed for this test (apt-get install nodejs)"
    env = {**os.environ, "PHXQ_GATEWAY": url.removesuffix("/v1"), "PHXQ_GROUP": "node-test"}
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_EXAMPLE), env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    ack = report["enqueued"]
    assert report["read"]["payload"].startswith("hello from Node.js v")
    # What the script did is really in the cluster: the message and the group's cursor.
    assert await native.cursor("node-test", "orders", queue=ack["queue"]) == ack["offset"]
    (msg,) = await native.dequeue(
        None, "orders", queue=ack["queue"], after=ack["offset"] - 1, limit=1
    )
    assert msg.payload.decode() == report["read"]["payload"] and msg.headers == {
        "lang": "javascript"
    }


# ------------------------------------------------------- driven by its own OpenAPI document


# What must hold for any request, valid or not: no 5xx, and every answer (status, content type,
# headers, body) is one the document declares. Valid-but-refused requests are fine (a queue
# number past the topic's queues is a 400 the static schema cannot know about). The stream is
# left out: a tail never ends by itself (its own tests are above).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
EXAMPLES = 5  # per operation and mode (about 140 requests in all)


def test_openapi_document_drives_the_live_gateway_without_5xx_or_schema_violations(gw):
    """Schemathesis generates requests (valid ones, and invalid ones) for every operation of
    the document the gateway serves, sends them to the live gateway and validates each answer
    against the same document. (Driven here with Hypothesis directly: schemathesis' pytest
    plugin does not run under pytest 9.)"""
    doc = schemathesis.openapi.from_url(f"{gw.gateway_url}/v1/openapi.json")
    operations = [op.ok() for op in doc.exclude(operation_id="stream").get_all_operations()]
    assert len(operations) >= 14  # schemathesis leaves out the document itself
    raw = json.loads(urllib.request.urlopen(f"{gw.gateway_url}/v1/openapi.json").read())
    for operation in operations:
        spec = raw["paths"][operation.path][operation.method.lower()]
        takes_input = "parameters" in spec or "requestBody" in spec
        for mode in GenerationMode if takes_input else [GenerationMode.POSITIVE]:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def drive(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=gw.gateway_url, checks=CHECKS, timeout=10)

            drive()


async def test_gateway_benchmark_runs_beside_the_native_client(gw):
    """bench/gateway.py's measurement on this cluster, tiny: it works (no figure is checked)."""
    args = gateway_bench.parse_args(["--quick", "--topic", "orders", "--outstanding", "8"])
    args.count, args.seconds, args.warmup_seconds = 20, 0.3, 0.1
    runs = await gateway_bench.measure(gw, args)
    assert [(r["system"], r["name"]) for r in runs] == [
        ("phxq", "latency"),
        ("gateway", "latency"),
        ("phxq", "throughput"),
        ("gateway", "throughput"),
    ]
    assert all(r["messages"] > 0 and r["errors"] == 0 for r in runs), runs
    assert all(r["params"]["http_client"] == "raw" for r in runs)  # the lean load generator
    summary = gateway_bench.ratios(runs)
    assert sum("gateway/native" in line for line in summary) == 2
    assert sum(re.search(r"gateway CPU \d+ us/msg", line) is not None for line in summary) == 2


async def test_metrics_count_requests_by_operation_and_status(http, url):
    await call(http, "GET", f"{url}/topics/nope")
    status, text, resp = await call(http, "GET", url.removesuffix("/v1") + "/metrics")
    assert status == 200 and resp.content_type == "text/plain"
    lines = text.decode().splitlines()
    assert any(
        line.startswith('phxq_gateway_requests_total{operation="topic",status="404"}')
        for line in lines
    )
    assert any(line.startswith("phxq_gateway_in_flight ") for line in lines)
