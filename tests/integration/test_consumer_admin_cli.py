"""``phxq admin limit|replay|pause|resume|lag|status`` against real daemons, run as the real CLI
(``python -m phxq admin ...``) while consumer daemons deliver to a recording HTTP handler."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from phxq.client import Client
from phxq.devcluster import ProcessCluster
from tests.integration import test_consumer_delivery as delivery
from tests.integration.conftest import wait_until
from tests.integration.test_consumer_delivery import (
    TOPIC,
    Recorder,
    _true,
    consumer_cluster,
    wait_owned,
)

handler_port = delivery.handler_port  # the fixtures, shared
recorder = delivery.recorder

pytestmark = pytest.mark.integration


async def phxq(config: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phxq",
        "admin",
        args[0],
        "--config",
        str(config),
        *args[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"phxq admin {args}: {err.decode()}"
    return out.decode()


def rate(recorder: Recorder, start: float, end: float) -> float:
    return sum(1 for h in recorder.acked() if start <= h.finished < end) / (end - start)


async def test_admin_limit_paces_the_group_and_a_raise_applies_without_restart(
    make_cluster: Callable[..., ProcessCluster], handler_port: int, recorder: Recorder
) -> None:
    cluster = await consumer_cluster(make_cluster, handler_port)
    await phxq(cluster.config_path, "limit", "--group", "billing", "--rate", "50")
    cluster.start_node("consumer", "c1")
    cluster.start_node("consumer", "c2")
    await wait_owned(cluster, {"c1", "c2"})
    async with Client(cluster.store_addresses) as client:
        await client.enqueue_many(TOPIC, [(b"x%d" % i, f"k{i}") for i in range(1500)])
    await asyncio.sleep(1.0)  # past the initial burst
    t0 = time.monotonic()
    await asyncio.sleep(4.0)
    limited = rate(recorder, t0, time.monotonic())
    out = await phxq(cluster.config_path, "limit", "--group", "billing", "--rate", "400", "--json")
    assert json.loads(out)["messages"] == 400
    await asyncio.sleep(1.5)  # consumers poll the settings every 0.5 s
    t1 = time.monotonic()
    await asyncio.sleep(2.0)
    raised = rate(recorder, t1, time.monotonic())
    print(f"limited {limited:.1f}/s, raised {raised:.1f}/s")
    assert 35 <= limited <= 62, limited  # two consumers, 25/s each
    assert raised >= 2.5 * limited, (limited, raised)


async def test_admin_replay_since_delivers_later_messages_again_once(
    make_cluster: Callable[..., ProcessCluster], handler_port: int, recorder: Recorder
) -> None:
    cluster = await consumer_cluster(make_cluster, handler_port)
    cluster.start_node("consumer", "c1")
    await wait_owned(cluster, {"c1"})
    early = [(b"early-%d" % i, f"k{i}") for i in range(40)]
    late = [(b"late-%d" % i, f"k{i}") for i in range(40)]
    async with Client(cluster.store_addresses) as client:
        await client.enqueue_many(TOPIC, early)
        await wait_until(lambda: _true(len(recorder.acked()) == 40), 30, "early delivered")
        await asyncio.sleep(0.3)
        since = time.time()
        await asyncio.sleep(0.3)
        await client.enqueue_many(TOPIC, late)
        await wait_until(lambda: _true(len(recorder.acked()) == 80), 30, "late delivered")
        out = await phxq(
            cluster.config_path, "replay", "--group", "billing", "--since", repr(since), "--json"
        )
        assert set(json.loads(out)) == {str(q) for q in range(8)}
        replayed_at = time.monotonic()
        await wait_until(lambda: _true(len(recorder.acked()) == 120), 30, "late delivered again")
        picked_up = min(h.started for h in recorder.acked()[80:]) - replayed_at
        await asyncio.sleep(1.5)  # once: nothing more
        lag = json.loads(await phxq(cluster.config_path, "lag", "--group", "billing", "--json"))
    counts = Counter(h.payload for h in recorder.acked())
    assert all(counts[p] == 1 for p, _ in early)
    assert all(counts[p] == 2 for p, _ in late)
    assert len(recorder.acked()) == 120
    assert picked_up < 2.0, picked_up  # owners notice within a second (plus slack)
    assert len(lag) == 8 and all(row["lag"] == 0 for row in lag)


async def test_admin_pause_resume_and_status_show_the_owners(
    make_cluster: Callable[..., ProcessCluster], handler_port: int, recorder: Recorder
) -> None:
    cluster = await consumer_cluster(make_cluster, handler_port)
    cluster.start_node("consumer", "c1")
    await wait_owned(cluster, {"c1"})
    status = json.loads(await phxq(cluster.config_path, "status", "--json"))
    owners = {p["owner"].split("#")[0] for p in status["ownership"]["pairs"]}
    assert owners == {"c1"} and set(status["ownership"]["members"]) == {"c1"}
    assert "c1#" in await phxq(cluster.config_path, "status")
    await phxq(cluster.config_path, "pause", "--group", "billing")
    await asyncio.sleep(1.0)  # consumers poll every 0.5 s
    async with Client(cluster.store_addresses) as client:
        await client.enqueue_many(TOPIC, [(b"p%d" % i, f"k{i}") for i in range(20)])
        await asyncio.sleep(1.5)
        assert recorder.acked() == []
        lag = json.loads(await phxq(cluster.config_path, "lag", "--json"))
        assert sum(row["lag"] for row in lag) == 20
        await phxq(cluster.config_path, "resume", "--group", "billing")
        await wait_until(lambda: _true(len(recorder.acked()) == 20), 15, "delivery after resume")
