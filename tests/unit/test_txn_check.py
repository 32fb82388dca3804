"""Check-back handlers: a callable's answer (sync or async, strings or booleans), anything else
and failures are "unknown"; a slow handler times out as "unknown"; max_age per producer group."""

from __future__ import annotations

import asyncio
import time

import pytest

from phxq.config import parse_config
from phxq.store.txn_check import DEFAULT_MAX_AGE, CheckBack

ANSWERS = {"t-yes": "committed", "t-no": "rolled_back", "t-true": True, "t-false": False}


def sync_check(txn: str) -> object:
    if txn == "t-boom":
        raise RuntimeError("the producer's database is down")
    if txn == "t-slow":
        time.sleep(0.5)
    return ANSWERS.get(txn, "maybe")


async def async_check(txn: str) -> object:
    await asyncio.sleep(0)
    return ANSWERS.get(txn)


def cluster(check: str) -> object:
    return parse_config(
        f"""
[cluster]
groups = 1
[[store]]
id = 1
addr = "127.0.0.1:1"
data = "s1"
[[store]]
id = 2
addr = "127.0.0.1:2"
data = "s2"
[[store]]
id = 3
addr = "127.0.0.1:3"
data = "s3"
[[producer_group]]
name = "checkout"
check = "{check}"
max_age = "2m"
check_timeout = "100ms"
"""
    )


@pytest.mark.parametrize("function", ["sync_check", "async_check"])
async def test_callable_answers(function: str) -> None:
    check = CheckBack(cluster(f"tests.unit.test_txn_check:{function}"))  # type: ignore[arg-type]
    assert check.has_handler("checkout") and not check.has_handler("other")
    assert check.max_age("checkout") == 120.0 and check.max_age(None) == DEFAULT_MAX_AGE
    got = {txn: await check.ask("checkout", txn, 0.0) for txn in [*ANSWERS, "t-other"]}
    assert got == {
        "t-yes": "committed",
        "t-no": "rolled_back",
        "t-true": "committed",
        "t-false": "rolled_back",
        "t-other": "unknown",
    }
    assert await check.ask(None, "t-yes", 0.0) == "unknown"  # no producer group: no handler
    await check.close()


async def test_failing_or_slow_handler_is_unknown() -> None:
    check = CheckBack(cluster("tests.unit.test_txn_check:sync_check"))  # type: ignore[arg-type]
    assert await check.ask("checkout", "t-boom", 0.0) == "unknown"
    started = time.monotonic()
    assert await check.ask("checkout", "t-slow", 0.0) == "unknown"
    assert time.monotonic() - started < 0.45  # check_timeout, not the handler's 0.5 s
