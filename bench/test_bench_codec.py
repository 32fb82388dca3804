"""Codec micro-benchmarks: store log entries, Paxos wire messages, batch values, PLog records.

Run: ``.venv/bin/pytest bench/test_bench_codec.py --benchmark-only`` (``bench/`` is outside the
default test paths, so the normal suite does not collect these). Each test also checks that the
round trip gives back what went in, so a broken codec fails instead of timing garbage.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from phxq.paxos import (
    Accept,
    Ballot,
    Chosen,
    decode_batch,
    decode_message,
    encode_batch,
    encode_message,
)
from phxq.plog.records import encode_accept, iter_records
from phxq.store.entries import EnqueueEntry, Message, decode_entry, encode_entry

PAYLOAD = os.urandom(100)


def _entry(messages: int) -> EnqueueEntry:
    return EnqueueEntry(
        topic="orders",
        queue=3,
        messages=tuple(
            Message(PAYLOAD, key=f"user-{i}", headers={}, dedup_id=f"{i:032x}")
            for i in range(messages)
        ),
        enqueued_at=time.time(),
    )


@pytest.mark.parametrize("messages", [1, 64])
def test_bench_encode_entry(benchmark: Any, messages: int) -> None:
    entry = _entry(messages)
    data = benchmark(encode_entry, entry)
    assert decode_entry(data) == entry
    benchmark.extra_info["messages"] = messages


@pytest.mark.parametrize("messages", [1, 64])
def test_bench_decode_entry(benchmark: Any, messages: int) -> None:
    entry = _entry(messages)
    data = encode_entry(entry)
    assert benchmark(decode_entry, data) == entry
    benchmark.extra_info["messages"] = messages


def _accept(value_bytes: int) -> Accept:
    return Accept(
        group=7, sender=1, ballot=Ballot(3, 1), instance=123_456, value=os.urandom(value_bytes)
    )


@pytest.mark.parametrize("value_bytes", [100, 16384])
def test_bench_encode_accept(benchmark: Any, value_bytes: int) -> None:
    msg = _accept(value_bytes)
    data = benchmark(encode_message, msg)
    assert decode_message(data) == msg


@pytest.mark.parametrize("value_bytes", [100, 16384])
def test_bench_decode_accept(benchmark: Any, value_bytes: int) -> None:
    msg = _accept(value_bytes)
    data = encode_message(msg)
    assert benchmark(decode_message, data) == msg


def test_bench_chosen_roundtrip(benchmark: Any) -> None:
    msg = Chosen(group=7, sender=1, ballot=Ballot(3, 1), first=10, last=17)
    assert benchmark(lambda: decode_message(encode_message(msg))) == msg


def test_bench_batch_roundtrip(benchmark: Any) -> None:
    """64 encoded entries of one message each -> one instance value -> back."""
    items = [encode_entry(_entry(1)) for _ in range(64)]
    assert benchmark(lambda: decode_batch(encode_batch(items))) == items


def test_bench_plog_record_roundtrip(benchmark: Any) -> None:
    """A 4 KiB accept record framed (CRC32C) and parsed back."""
    value = os.urandom(4096)

    def roundtrip() -> list[Any]:
        record = encode_accept(99, (3, 1), value)
        return list(iter_records(memoryview(record)))

    (rec,) = benchmark(roundtrip)
    assert rec.instance == 99
    assert bytes(rec.payload) == value
