"""phxq.plog — the durable Paxos log that is the queue storage (DESIGN.md §4).

Imports nothing of phxq but :mod:`phxq.errors`; ballots are plain ``(round, node)`` int pairs.

Public API::

    writer = LogWriter(fsync=os.fdatasync)        # one per process; one writer thread
    async with writer: ...                        # or: await writer.start(); await writer.close()
        writer.submit(segment_file, record) -> asyncio.Future[None]   # internal, used by GroupLog
        writer.batches / fsyncs / records / bytes_written / fsync_seconds; writer.on_fsync(sec)

    glog = await GroupLog.open(directory, group, writer, segment_bytes=64 << 20)
    glog.recovered: RecoveredLog   # promised, max_round, accepted{i: (ballot, value)} above
                                   # chosen_up_to, chosen_up_to, checksum, first_instance,
                                   # damaged [(lo, hi)], corrupt [(file, start, end)], torn_bytes
    glog.append_promise(ballot) -> Future[None]                    # durable when resolved
    glog.append_accept(instance, ballot, value) -> Future[None]
    glog.append_chosen(instance, ballot | None, checksum, value, index=entries) -> Future[None]
        # instance must be chosen_up_to + 1; ``index``: the IndexEntry list the caller's
        # state machine produced when it applied the value (in memory only, see Recovery)
    glog.iter_chosen_blocking() -> Iterator[(instance, value)]   # replay after open (thread)
    glog.restore_index(instance, entries)                        # ... and its index entries
    await glog.read_chosen(from_instance, max_count, max_bytes) -> list[ChosenRecord]
    await glog.read_value(instance) -> bytes
    glog.positions(queue_key, after: (instance, index) | None, limit) -> [(instance, index)]
    glog.instance_at_time(t) -> int | None
    glog.retention_floor(keep_from=, max_age=, max_bytes=, now_wall=) -> (instance, forced)
    await glog.truncate_below(instance) -> first retained instance
    glog.truncation_point(instance) -> the first instance truncate_below would leave now
    await glog.reset_to(instance, checksum) -> bool   # continue after a peer's snapshot
    glog.chosen_up_to, glog.checksum, glog.first_instance, glog.needs_repair, glog.damaged,
    glog.failed (StorageError | None), glog.disk_bytes()
    glog.promised, glog.max_round, glog.has_state, glog.accepted_values(), glog.checksum_at(i)
    await glog.mark_repaired()   # damage re-learned from peers: forget it (``<dir>/repaired``)
    await glog.close()

    IndexEntry = tuple[Hashable, int, float]   # (queue_key, index, enqueue_time_wall)

Guarantees:

- **Persist, then reply.** A future from ``append_*`` resolves only after the record was written
  and ``fdatasync``\\ ed by the writer thread; records of one group become durable in the order
  they were appended (so the last future of a group resolving means all before it are durable).
- **Group commit.** Every record queued while the writer was busy goes out in the next batch:
  one ``pwrite`` per touched segment file, whatever the number of records. With a journal
  (``LogWriter(journal_dir=data dir)``, as the daemons run) a batch touching several groups
  costs one more ``pwrite`` and a single ``fdatasync``, of the journal (:mod:`phxq.plog.journal`:
  segment files are synced by background checkpoints and redone from the journal on start);
  without one, or for a batch of one file, one ``fdatasync`` per touched file.
- **Errors.** ENOSPC/EIO on write or sync: that batch's waiters get ``StorageError``, the group
  is ``failed`` and never acks again; synced bytes are never rewritten.
- **Storage never calls up.** The log does not interpret values: whoever applies a chosen
  instance passes its index entries to ``append_chosen`` (apply, then write), and after
  ``open`` replays ``iter_chosen_blocking`` through the same apply, handing the entries back
  with ``restore_index``. The index is not on disk, so the format is unchanged by it.
- **Recovery** (in a thread): torn tail truncated and logged; corruption in the middle reported
  (``needs_repair``, ``damaged``), never skipped silently and never served; reads re-check the
  CRC of every record and raise ``StorageError`` rather than return bad bytes.
- **Reads** run on one reader thread per process (recently chosen values come from an in-memory
  tail cache); the per-queue index answers ``positions`` without touching other queues' data.
- **Truncation** deletes whole segments only, after a durable TRUNCATED record; instance numbers
  are never reused.

Measured on this 2-core VM (``python -m bench.bench_plog``; raw pwrite 4 KiB + fdatasync:
p50 0.10-0.12 ms zero-filled, 0.14-0.21 ms fallocated): 64 concurrent writers of 100 B on one
group: 80-110k durable records/s (≈61 records per fdatasync, p50 0.5-0.7 ms, p99 1.2-2 ms; CPU
bound in Python, the fsync is ~15% of a batch); 1 writer: ~4.3k/s, p50 0.22 ms. 64 writers over
16 groups: ~30k/s (100 B), since each batch costs 16 fdatasyncs (fanned out: ~1 ms). 4 KiB x 64
writers, 1 group: ~40k/s (160 MiB/s). Start-up of a 1 GiB log (263k instances of ~4 KiB, 10.5M
messages indexed): 3.4 s scan+CRC alone, 8.2 s with a replay decoding every message.
Sealed segments' record tables (``sidecar``) take the scan of 16 groups x 256 MiB (1.04M
instances of one 4 KiB message) from 13.0 to 6.2 CPU seconds in a store start (24.2 -> 16.5 s
for the whole start, of which the replay through apply is now ~10 s; loaded machine).

Modules: ``records`` (frame format, CRC32C and why), ``writer`` (group commit), ``recovery``
(start-up scan and tail/corruption rules), ``sidecar`` (verified record tables of sealed
segments, so start-up does not parse them again), ``index`` (queue and time indexes), ``group``.
"""

from phxq.plog.group import ChosenRecord, GroupLog, IndexEntry
from phxq.plog.index import INDEX_BITS, QueueIndex, TimeIndex
from phxq.plog.recovery import RecoveredLog
from phxq.plog.segment import SegmentFile
from phxq.plog.writer import LogWriter

__all__ = [
    "INDEX_BITS",
    "ChosenRecord",
    "GroupLog",
    "IndexEntry",
    "LogWriter",
    "QueueIndex",
    "RecoveredLog",
    "SegmentFile",
    "TimeIndex",
]
