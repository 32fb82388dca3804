"""CPU cost of applying chosen enqueue entries on one replica (no I/O): the per-replica work.

    .venv/bin/python -m bench.profile_apply [--messages 1,8,64] [--instances 3000] [--repeat 5]

For each batch size, builds ``--instances`` chosen instances of one enqueue entry of that many
100-byte messages (unique dedup ids, as the client sends them), then times, per instance, what
every replica does for it: ``StoreState.apply`` + ``index_entries`` (``apply_instance``'s
work), and separately what a reader does once (``instance_messages``: unpack the bodies) and
what the master does once (``encode_entry``). Prints the best of ``--repeat`` runs in
microseconds per instance and per message. Only public calls are used, so the same script
measures any checkout (run it from that checkout's directory to compare).
"""

from __future__ import annotations

import argparse
import os
import time

from phxq.store.entries import EnqueueEntry, Message, encode_entry, instance_messages
from phxq.store.state import StoreState


def _entries(messages: int, instances: int) -> list[EnqueueEntry]:
    payload = os.urandom(100)
    out = []
    for n in range(instances):
        batch = tuple(
            Message(payload, None, {}, f"0123456789abcdef01234567-{n * messages + i:x}")
            for i in range(messages)
        )
        out.append(EnqueueEntry("orders", n % 8, batch, 1_700_000_000.0 + n * 1e-4))
    return out


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", default="1,8,64")
    ap.add_argument("--instances", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for m in (int(x) for x in args.messages.split(",")):
        entries = _entries(m, args.instances)
        items = [[encode_entry(e)] for e in entries]

        def apply(items: list[list[bytes]] = items) -> None:
            state = StoreState(0, dedup_window=300.0)
            for i, batch in enumerate(items, start=1):
                state.apply(i, batch)
                state.index_entries(i, batch)

        def read(items: list[list[bytes]] = items) -> None:
            for batch in items:
                instance_messages(batch)

        def encode(entries: list[EnqueueEntry] = entries) -> None:
            for e in entries:
                encode_entry(e)

        n = args.instances
        for name, fn in (("apply+index", apply), ("read", read), ("encode", encode)):
            s = _best(fn, args.repeat)
            print(
                f"messages/entry={m:3d} {name:12s} {1e6 * s / n:8.1f} us/instance "
                f"{1e6 * s / (n * m):7.2f} us/message",
                flush=True,
            )


if __name__ == "__main__":
    main()
