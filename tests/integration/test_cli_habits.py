"""The command line as kcat / nats CLI users expect it, against one live cluster (CliRunner in
process, and the real ``python -m phxq`` where a signal is involved): ``enqueue --lines``
with headers and a fixed queue, ``tail`` raw by default, ``--format``, binary-safe ``--json``,
``--from TIME``, Ctrl-C exits 0, and admin tables without Python reprs."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime

import pytest
from click.testing import CliRunner, Result

import phxq
from phxq.cli import cli
from phxq.devcluster import ProcessCluster

pytestmark = pytest.mark.integration

GROUP = """
[[consumer_group]]
name = "log"
topic = "orders"
handler = "phxq.consumer.demo:log_message"
"""


def run(*args: str, stdin: bytes | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_enqueue_and_tail_follow_kcat_habits_and_admin_tables_are_human(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    cluster = make_cluster(locks=True, extra=GROUP)
    s = ("-s", ",".join(cluster.store_addresses))
    cfg = ("--config", str(cluster.config_path))

    # enqueue --lines: one message per line, all to --queue 1, with every --header.
    lines = b"alpha\nbeta\r\ngamma\n"
    out = run(
        "enqueue", *s, "orders", "--lines", "--queue", "1", "--header", "trace=t1",
        "--header", "x=y=z", "--timeout", "5", "--json", stdin=lines,
    ).output  # fmt: skip
    acks = [json.loads(line) for line in out.splitlines()]
    assert [a["queue"] for a in acks] == [1, 1, 1]
    assert acks[0]["offset"] < acks[1]["offset"] < acks[2]["offset"]

    # tail: the raw payloads by default, one per line, nothing else.
    tail = ("tail", *s, "orders", "--queue", "1", "--from", "start")
    raw = run(*tail, "--count", "3").stdout_bytes
    assert raw == b"alpha\nbeta\ngamma\n"
    # --format: the fields and escapes; headers as name=value pairs; no key prints empty.
    fmt = "{topic}/{queue}@{offset}\\t[{key}] {headers} {payload} {size}"
    rows = run(*tail, "--count", "3", "--format", fmt).output.splitlines()
    assert rows[0] == f"orders/1@{acks[0]['offset']}\t[] trace=t1,x=y=z alpha 5", rows
    assert "None" not in "".join(rows)
    # --json: binary-safe, headers and key shown.
    with phxq.SyncClient(cluster.store_addresses) as client:
        binary = client.enqueue("orders", b"\xff\x00bin", key="k1", queue=1, headers={"h": "v"})
    got = [json.loads(x) for x in run(*tail, "--count", "4", "--json").output.splitlines()]
    assert base64.b64decode(got[3]["payload_base64"]) == b"\xff\x00bin"
    assert got[3]["payload"] is None and got[3]["key"] == "k1" and got[3]["headers"] == {"h": "v"}
    assert got[0]["payload"] == "alpha" and got[0]["headers"] == {"trace": "t1", "x": "y=z"}
    assert got[3]["offset"] == binary.offset
    # An unknown field is refused before connecting, naming the fields there are.
    bad = CliRunner().invoke(cli, [*tail, "--format", "{nope}"])
    assert bad.exit_code == 2 and "{payload}" in bad.output

    # --from TIME: the first message enqueued at or after that time, in every queue read.
    with phxq.SyncClient(cluster.store_addresses) as client:
        for i in range(3):
            client.enqueue("orders", b"early%d" % i, queue=2)
        late = [client.enqueue("orders", b"late%d" % i, queue=2) for i in range(3)]
        queue2 = client.dequeue(None, "orders", queue=2, after=None, limit=10)
    assert [m.payload for m in queue2] == [
        b"early0",
        b"early1",
        b"early2",
        b"late0",
        b"late1",
        b"late2",
    ]
    last_early, first_late = queue2[2], queue2[3]
    assert first_late.offset == late[0].offset
    # Between the two (an ISO time has microseconds: not the exact stamp, which may round up).
    since = datetime.fromtimestamp((last_early.enqueued_at + first_late.enqueued_at) / 2)
    since_text = since.isoformat()
    q2 = ("tail", *s, "orders", "--queue", "2")
    assert run(*q2, "--from", since_text, "--count", "3").stdout_bytes == b"late0\nlate1\nlate2\n"
    assert run(*q2, "--from", "1h", "--count", "1").stdout_bytes == b"early0\n"
    bad = CliRunner().invoke(cli, [*q2, "--from", "yesterday-ish"])
    assert bad.exit_code == 2 and "duration ago" in bad.output

    # Ctrl-C ends a tail with exit 0 and no traceback (the real process, a real SIGINT).
    proc = subprocess.Popen(
        [sys.executable, "-m", "phxq", *tail],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"alpha\n"  # it is reading
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()

    # admin status: paused groups and runtime limits visible, sizes in KiB/MiB, no reprs.
    run("admin", "pause", *cfg, "--group", "log")
    run("admin", "limit", *cfg, "--group", "log", "--rate", "20", "--bytes", "2MiB")
    status = run("admin", "status", *cfg).output
    assert "consumer group log: PAUSED, 20 messages/s, 2.0 MiB/s (runtime)" in status, status
    assert "MiB" in status.split("\n")[0] or "KiB" in status.split("\n")[0], status
    for leak in ("None", "b'", "True", "False"):
        assert leak not in status, (leak, status)
    lag = run("admin", "lag", *cfg).output
    assert "None" not in lag and lag.count("\nlog  orders  ") == 8, lag
