"""PLog benchmark: durable append throughput/latency, raw fdatasync cost, start-up recovery time.

Run: ``.venv/bin/python -m bench.bench_plog [--seconds 3] [--recovery-mib 1024] [--dir DIR]
[--json OUT]``. Everything runs on real files in a temporary directory (under ``--dir``, default
the current directory, so the disk measured is the one the data would live on).

Reports:
- raw ``pwrite(4 KiB) + fdatasync`` latency on a zero-filled and on a fallocated file;
- append + group-commit: records/s and p50/p99 latency (submit -> durable future resolved) for
  100 B and 4 KiB records with 1 and 64 concurrent writers, on 1 group and spread over 16 groups;
- recovery: time to reopen a group holding ``--recovery-mib`` of log whose chosen values are
  ~4 KiB batches of 40 messages of 100 B, with an indexer that decodes every batch (as the store's
  does), so the per-queue index is rebuilt for every message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from phxq.plog import GroupLog, LogWriter

SEGMENT = 64 << 20


def raw_fsync(directory: Path, *, zero_filled: bool, n: int = 300) -> dict[str, float]:
    path = directory / ("raw-zero" if zero_filled else "raw-falloc")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if zero_filled:
            os.pwrite(fd, bytes(n * 4096 + 4096), 0)
        else:
            os.posix_fallocate(fd, 0, n * 4096 + 4096)
        os.fsync(fd)
        block = os.urandom(4096)
        lat = []
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, block, i * 4096)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return summarize(lat)


def summarize(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3  # noqa: E731
    return {
        "n": len(lat),
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "mean_ms": sum(lat) / len(lat) * 1e3,
    }


async def append_bench(
    directory: Path, *, size: int, writers: int, groups: int, seconds: float
) -> dict[str, Any]:
    async with LogWriter() as writer:
        logs = [
            await GroupLog.open(directory / f"g{g}", g, writer, segment_bytes=SEGMENT)
            for g in range(groups)
        ]
        for glog in logs:
            await glog.append_promise((1, 1))
        value = os.urandom(size)
        lat: list[float] = []
        counts = [0] * writers
        stop = time.perf_counter() + seconds
        fsyncs0, batches0 = writer.fsyncs, writer.batches

        async def one(w: int) -> None:
            glog = logs[w % groups]
            instance = w * 10_000_000
            perf = time.perf_counter
            while True:
                t = perf()
                if t >= stop:
                    return
                instance += 1
                await glog.append_accept(instance, (1, 1), value)
                lat.append(perf() - t)
                counts[w] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(writers)))
        elapsed = time.perf_counter() - t0
        for glog in logs:
            await glog.close()
        total = sum(counts)
        out = summarize(lat)
        out.update(
            records_per_s=total / elapsed,
            mib_per_s=total * size / elapsed / (1 << 20),
            fsyncs=writer.fsyncs - fsyncs0,
            records_per_fsync=total / max(1, writer.fsyncs - fsyncs0),
            batches=writer.batches - batches0,
        )
        return out


MESSAGES = 40
_MSG = struct.Struct("<IId")


def make_batch(instance: int) -> bytes:
    """~4 KiB: 40 messages of 100 B, each tagged with (queue, index, time)."""
    body = b"x" * 84
    return b"".join(_MSG.pack(instance % 8, i, 1.7e9 + instance) + body for i in range(MESSAGES))


def indexer(instance: int, value: bytes) -> Iterable[tuple[object, int, float]]:
    out = []
    for off in range(0, len(value), 100):
        queue, index, t = _MSG.unpack_from(value, off)
        out.append((("topic", queue), index, t))
    return out


async def recovery_bench(directory: Path, mib: int) -> dict[str, Any]:
    path = directory / "recovery"
    async with LogWriter() as writer:
        glog = await GroupLog.open(path, 0, writer, segment_bytes=SEGMENT)
        await glog.append_promise((1, 1))
        t = time.perf_counter()
        instance = 0
        pending: list[asyncio.Future[None]] = []
        target = mib << 20
        written = 0
        while written < target:
            instance += 1
            value = make_batch(instance)
            pending.append(glog.append_accept(instance, (1, 1), value))
            pending.append(glog.append_chosen(instance, (1, 1), instance, value))
            written += len(value) + 80
            if len(pending) >= 512:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        fill_s = time.perf_counter() - t
        disk = glog.disk_bytes()
        await glog.close()
    os.sync()
    async with LogWriter() as writer:
        t = time.perf_counter()
        glog = await GroupLog.open(path, 0, writer, segment_bytes=SEGMENT)

        def replay() -> None:  # as the replication runtime does after open
            for i, value in glog.iter_chosen_blocking():
                glog.restore_index(i, indexer(i, value))

        await asyncio.to_thread(replay)
        warm = time.perf_counter() - t
        assert glog.chosen_up_to == instance
        await glog.close()
    async with LogWriter() as writer:
        t = time.perf_counter()
        glog = await GroupLog.open(path, 0, writer, segment_bytes=SEGMENT)
        no_index = time.perf_counter() - t
        await glog.close()
    return {
        "log_mib": written / (1 << 20),
        "disk_mib": disk / (1 << 20),
        "instances": instance,
        "messages_indexed": instance * MESSAGES,
        "fill_s": fill_s,
        "open_with_index_s (page cache warm)": warm,
        "open_without_replay_s": no_index,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-plog-", dir=args.dir))
    results: dict[str, Any] = {}
    try:
        results["raw_fdatasync_4k_zero_filled"] = raw_fsync(base, zero_filled=True)
        results["raw_fdatasync_4k_fallocated"] = raw_fsync(base, zero_filled=False)
        for groups in (1, 16):
            for size in (100, 4096):
                for writers in (1, 64):
                    if groups > writers:
                        continue
                    key = f"append size={size} writers={writers} groups={groups}"
                    run_dir = base / key.replace(" ", "_").replace("=", "")
                    results[key] = await append_bench(
                        run_dir, size=size, writers=writers, groups=groups, seconds=args.seconds
                    )
                    shutil.rmtree(run_dir)
                    print(key, fmt(results[key]), flush=True)
        if args.recovery_mib:
            results["recovery"] = await recovery_bench(base, args.recovery_mib)
            print("recovery", fmt(results["recovery"]), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


def fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--recovery-mib", type=int, default=1024)
    parser.add_argument("--dir", default=".")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    results = asyncio.run(main_async(args))
    for key in ("raw_fdatasync_4k_zero_filled", "raw_fdatasync_4k_fallocated"):
        print(key, fmt(results[key]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
