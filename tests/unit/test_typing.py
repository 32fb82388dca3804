"""The public classes are typed for users (issue 20): mypy --strict on a user's script sees
phxq.Client, SyncClient and LockClient as their real classes (not ``Any``), so a typo'd
argument is an error, and correct use is clean. phxq ships ``py.typed`` (PEP 561)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import phxq

ROOT = Path(phxq.__file__).resolve().parent.parent

SCRIPT = """\
import phxq
from phxq.client import ConsumedMessage


async def produce_and_consume() -> int | None:
    async with phxq.Client(["127.0.0.1:7101"], retry_timeout=5.0) as client:
        ack: phxq.Ack = await client.enqueue("orders", b"x", key="k", headers={"h": "v"})
        await client.enqueue_many("orders", [(b"y", None)], timeout=1.5)
        cursor: int | None = await client.cursor("billing", "orders", queue=0, timeout=None)
        print(cursor)
        async for msg in client.consume("billing", "orders", auto_commit=False):
            consumed: ConsumedMessage = msg
            await consumed.ack()
            break
        async for seen in client.tail("orders", from_="start"):
            print(seen.payload.decode(), seen.offset + 1)
            break
        return ack.offset


def script() -> None:
    with phxq.SyncClient(["127.0.0.1:7101"]) as sync:
        sync.enqueue("orders", b"x", dedup_id="d-1", timeout=2.0)
        for message in sync.tail("orders"):
            print(message.key)
        acks: list[phxq.Ack] = sync.enqueue_many("orders", [(b"y", None)], timeout=1.5)
        print(acks, sync.cursor("billing", "orders", queue=0))
        with sync.transaction("producers", timeout=5.0) as txn:
            txn.enqueue("orders", b"z", key="k")
    locks = phxq.LockClient(["127.0.0.1:7201"])
    print(locks.hold("name", "me", 3.0))
    print(locks.kv_get("key", timeout=1.0))


async def typos() -> None:
    async with phxq.Client(["127.0.0.1:7101"]) as client:
        await client.enqueue("orders", b"x", kee="k")  # TYPO
        await client.enqueue("orders", "not bytes")  # TYPO
        client.tail("orders", from_="yesterday")  # TYPO
        await client.dequeue(None, "orders", queue=0, timeout="2s")  # TYPO
    phxq.SyncClient(["127.0.0.1:7101"], retry_timout=1.0)  # TYPO
    with phxq.SyncClient(["127.0.0.1:7101"]) as sync:
        sync.enqueue("orders", b"x", kee="k")  # TYPO
        sync.cursor("billing", "orders", queue="0")  # TYPO
        with sync.transaction() as txn:
            txn.enqueue("orders", "not bytes")  # TYPO
        for seen in sync.tail("orders", from_="yesterday"):  # TYPO
            print(seen.offset)
    phxq.LockClient(["127.0.0.1:7201"]).acquire("name", "me")  # TYPO
"""


def test_phxq_ships_py_typed() -> None:
    assert resources.files("phxq").joinpath("py.typed").is_file()
    assert 'phxq = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_mypy_sees_the_real_classes_and_catches_typos(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(SCRIPT)
    # phxq as the user sees it: on the path, its own modules' errors not theirs to fix.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    args = ["--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *args, str(user)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    flagged = {int(n) for n in re.findall(r"user\.py:(\d+): error", result.stdout)}
    typos = {i for i, line in enumerate(SCRIPT.splitlines(), 1) if line.endswith("# TYPO")}
    assert flagged == typos, result.stdout
