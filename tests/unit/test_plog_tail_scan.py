"""Start-up finds the end of data in a preallocated segment with a fast scan of its zero tail,
and a torn write far past the data (page writeback out of order) is still detected."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from phxq.plog import GroupLog, LogWriter
from phxq.plog.recovery import _CHUNK, _nonzero_end

SEG = 4 << 20


@pytest.mark.parametrize(
    "spot",
    [0, 1, 100, _CHUNK - 1, _CHUNK, _CHUNK + 1, 2 * _CHUNK - 1, 3 * _CHUNK + 17, SEG - 1],
)
def test_the_last_non_zero_byte_is_found_wherever_it_is(spot: int) -> None:
    buf = bytearray(SEG)
    buf[spot] = 0x5A
    assert _nonzero_end(bytes(buf), 0) == spot + 1
    assert _nonzero_end(bytes(buf), spot + 1) == spot + 1  # only zeros from there
    assert _nonzero_end(bytes(SEG), 0) == 0


def test_a_short_buffer_and_a_start_inside_the_last_chunk() -> None:
    buf = bytearray(1000)
    buf[10] = 1
    assert _nonzero_end(bytes(buf), 5) == 11
    assert _nonzero_end(bytes(buf), 11) == 11


def value(i: int) -> bytes:
    return struct.pack("<I", i) + b"v" * 100


async def test_a_torn_write_megabytes_past_the_data_is_still_a_torn_tail(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=SEG)
        for i in range(1, 11):
            await glog.append_accept(i, (1, 1), value(i))
            await glog.append_chosen(i, (1, 1), i, value(i))
        await glog.close()
    (seg,) = sorted(tmp_path.glob("*.plog"))
    far = 2 * _CHUNK + 12345  # beyond the zero-filled window the writer keeps ahead
    with open(seg, "r+b") as fh:
        fh.seek(far)
        fh.write(b"\xab" * 300)
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=SEG)
        rec = glog.recovered
        assert rec.torn_bytes > 0 and not glog.needs_repair
        assert rec.chosen_up_to == 10
        await glog.close()
    data = seg.read_bytes()
    assert data[far : far + 300] == bytes(300), "the torn bytes were zeroed out"
