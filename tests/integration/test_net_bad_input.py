"""Bad bytes sent to a live RpcServer socket get a typed error frame or a closed connection,
and the server keeps serving every other connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest

from phxq.client import Client
from phxq.devcluster import ProcessCluster
from phxq.errors import BadArgument
from phxq.net import frames
from phxq.net.frames import ErrorReply, Response, decode_body
from phxq.net.rpc import RpcPool, RpcServer
from phxq.net.server import LogLimiter

MAX = 1 << 20


async def handle(method: str, params: Any) -> Any:
    if method == "echo":
        return params
    if method == "want_int":  # quotes the bad value, as the daemons' validators do
        raise BadArgument(f"want an int, got {params!r}")
    raise BadArgument(f"unknown method {method!r}")


@pytest.fixture
async def server() -> AsyncIterator[RpcServer]:
    async with RpcServer(handle, max_frame=MAX) as srv:
        await srv.start("127.0.0.1", 0)
        yield srv


@pytest.fixture
async def pool() -> AsyncIterator[RpcPool]:
    async with RpcPool() as p:
        yield p


OPEN: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def close_raw_clients() -> AsyncIterator[None]:
    yield
    while OPEN:
        writer = OPEN.pop()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class RawClient:
    """A client that speaks bytes, not RPC: what an attacker or a broken peer would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        OPEN.append(writer)

    @classmethod
    async def connect(cls, server: RpcServer) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_body(self, body: bytes) -> None:
        await self.send_raw(frames.prefix(body) + body)

    async def read_frame(self) -> frames.Frame:
        header = await asyncio.wait_for(self.reader.readexactly(4), 5)
        (length,) = struct.unpack(">I", header)
        return decode_body(await asyncio.wait_for(self.reader.readexactly(length), 5))

    async def read_eof(self) -> None:
        assert await asyncio.wait_for(self.reader.read(), 5) == b""

    async def echo_works(self, request_id: int = 99) -> None:
        await self.send_body(frames.encode_request(request_id, "echo", "still here"))
        assert await self.read_frame() == Response(request_id, "still here")

    def close(self) -> None:
        self.writer.close()


async def test_garbage_on_the_port_gets_a_protocol_error_then_close(
    server: RpcServer, pool: RpcPool
) -> None:
    bystander = await RawClient.connect(server)
    raw = await RawClient.connect(server)
    await raw.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await raw.read_frame()
    assert isinstance(reply, ErrorReply) and reply.id is None and reply.code == "protocol"
    await raw.read_eof()
    await bystander.echo_works()
    assert await pool.call(server.address, "echo", 1) == 1
    bystander.close()


async def test_an_oversized_length_is_refused_before_its_body_is_sent(server: RpcServer) -> None:
    raw = await RawClient.connect(server)
    await raw.send_raw(struct.pack(">I", MAX + 1))  # and no body at all
    reply = await raw.read_frame()
    assert isinstance(reply, ErrorReply) and reply.code == "protocol"
    assert reply.data == {"size": MAX + 1, "max": MAX}
    await raw.read_eof()


async def test_malformed_msgpack_in_a_good_frame_is_answered_and_the_connection_goes_on(
    server: RpcServer,
) -> None:
    raw = await RawClient.connect(server)
    await raw.send_body(b"\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    reply = await raw.read_frame()
    assert isinstance(reply, ErrorReply) and reply.id is None and reply.code == "protocol"
    await raw.echo_works()
    raw.close()


@pytest.mark.parametrize(
    ("body", "expected_id"),
    [
        (msgpack.packb([0, 5, 123, None]), 5),  # method is not a string
        (msgpack.packb([0, 6, "echo"]), 6),  # params missing
        (msgpack.packb([0, "x", "echo", None]), None),  # id is not an int
        (msgpack.packb({"method": "echo"}), None),  # not an array
        (msgpack.packb([1, 7, "a response sent to a server"]), None),
        (msgpack.packb([42, 1, 2]), None),  # unknown kind
    ],
)
async def test_wrong_types_get_a_typed_error_with_the_request_id_when_known(
    server: RpcServer, body: bytes, expected_id: int | None
) -> None:
    raw = await RawClient.connect(server)
    await raw.send_body(body)
    reply = await raw.read_frame()
    assert isinstance(reply, ErrorReply)
    assert (reply.id, reply.code) == (expected_id, "protocol")
    await raw.echo_works()
    raw.close()


async def test_an_unknown_method_is_a_bad_argument_for_that_request(server: RpcServer) -> None:
    raw = await RawClient.connect(server)
    await raw.send_body(frames.encode_request(3, "drop_tables", {}))
    reply = await raw.read_frame()
    assert isinstance(reply, ErrorReply)
    assert (reply.id, reply.code) == (3, "bad_argument")
    raw.close()


async def test_a_half_closed_client_still_gets_its_replies(server: RpcServer) -> None:
    raw = await RawClient.connect(server)
    await raw.send_body(frames.encode_request(1, "echo", "a"))
    await raw.send_body(frames.encode_request(2, "echo", "b"))
    raw.writer.write_eof()
    replies = {await raw.read_frame(), await raw.read_frame()}
    assert replies == {Response(1, "a"), Response(2, "b")}
    await raw.read_eof()


async def test_a_client_vanishing_mid_frame_does_not_disturb_the_server(
    server: RpcServer, pool: RpcPool
) -> None:
    raw = await RawClient.connect(server)
    await raw.send_raw(struct.pack(">I", 1000) + b"only part of it")
    raw.writer.transport.abort()
    assert await pool.call(server.address, "echo", "ok") == "ok"


async def test_random_bytes_on_many_connections_never_stop_the_server(
    server: RpcServer, pool: RpcPool
) -> None:
    rng = random.Random(1234)

    async def fuzz_one() -> None:
        raw = await RawClient.connect(server)
        for _ in range(5):
            chunk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
            if rng.random() < 0.5:  # a well-framed random body exercises the decoder, too
                chunk = frames.prefix(chunk) + chunk
            try:
                await raw.send_raw(chunk)
            except ConnectionError:
                break
        raw.writer.transport.abort()

    async def keep_calling() -> None:
        for i in range(200):
            assert await pool.call(server.address, "echo", i) == i

    await asyncio.gather(keep_calling(), *(fuzz_one() for _ in range(50)))
    assert await pool.call(server.address, "echo", "alive") == "alive"


def deep(depth: int) -> bytes:
    """A msgpack value nested ``depth`` arrays deep (msgpack decodes ~1000 levels, more than
    Python's repr can print)."""
    return b"\x91" * depth + b"\xc0"


async def test_a_deeply_nested_body_is_a_protocol_error_not_a_dead_connection(
    server: RpcServer,
) -> None:
    raw = await RawClient.connect(server)
    await raw.send_body(deep(999))  # its "kind" is a 998-deep array: repr of it overflows
    reply = await raw.read_frame()
    assert isinstance(reply, ErrorReply) and (reply.id, reply.code) == (None, "protocol")
    await raw.echo_works()
    raw.close()


async def test_params_too_deep_to_print_are_a_bad_argument_without_a_traceback(
    server: RpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await RawClient.connect(server)
    body = frames.encode_request(4, "want_int", None)
    await raw.send_body(body[:-1] + deep(990))  # params: 990 nested arrays
    reply = await raw.read_frame()
    assert isinstance(reply, ErrorReply) and (reply.id, reply.code) == (4, "bad_argument")
    assert "nested too deeply" in reply.message
    assert not [r for r in caplog.records if r.exc_info]
    await raw.echo_works()
    raw.close()


async def test_an_error_quoting_a_huge_value_still_fits_in_a_frame(
    server: RpcServer, pool: RpcPool
) -> None:
    # repr of 400 KiB of 0xff is 1.6 MB, above this server's 1 MiB frame limit
    with pytest.raises(BadArgument) as info:
        await pool.call(server.address, "want_int", b"\xff" * (400 << 10), timeout=5.0)
    assert len(info.value.message) < frames.MAX_ERROR_MESSAGE + 100
    assert info.value.message.startswith("want an int, got b'\\xff")
    assert await pool.call(server.address, "echo", "alive") == "alive"


@pytest.mark.integration
def test_a_store_refuses_names_too_long_to_keep_and_times_that_are_not_finite(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    cluster = make_cluster(groups=1)
    long_name = "g" * 257  # a cursor under it would live in every snapshot of the group

    async def check() -> None:
        async with RpcPool() as pool:
            for addr in cluster.store_addresses:
                params = {"group": long_name, "topic": "orders", "queue": 0, "offset": 1}
                with pytest.raises(BadArgument):
                    await pool.call(addr, "commit", {**params, "token": 1})
            for when in (math.nan, math.inf, -math.inf):  # any node answers reconcile
                with pytest.raises(BadArgument):
                    params = {"topic": "orders", "queue": 0, "since": when}
                    await pool.call(cluster.store_addresses[0], "reconcile", params)
        async with Client(cluster.store_addresses) as client:
            assert await client.cursor("g" * 256, "orders", queue=0) is None  # the limit itself
            # a time that is no time: refused, not turned into a replay that moves the cursor
            for when in (math.nan, math.inf, -math.inf):
                with pytest.raises(BadArgument):
                    await client.seek("billing", "orders", queue=0, time=when)
            assert await client.cursor("billing", "orders", queue=0) is None
        async with RpcPool() as pool:  # a huge bad value is quoted briefly
            with pytest.raises(BadArgument) as info:
                params = {"topic": "orders", "queue": [0] * (1 << 20), "limit": 1}
                await pool.call(cluster.store_addresses[0], "dequeue", params, timeout=30.0)
            assert info.value.message.endswith("got [0, 0, 0, 0, ...]")

    asyncio.run(check())


async def test_broken_connections_are_counted_and_their_warnings_rate_limited(
    server: RpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="phxq.net.server")
    for _ in range(40):  # 40 peers each breaking the framing: one warning each would flood
        raw = await RawClient.connect(server)
        await raw.send_raw(struct.pack(">I", MAX + 1))
        reply = await raw.read_frame()
        assert isinstance(reply, ErrorReply) and reply.code == "protocol"
        await raw.read_eof()
    raw = await RawClient.connect(server)
    await raw.send_body(b"\xc1")  # a malformed body: answered and counted, not logged
    assert isinstance(await raw.read_frame(), ErrorReply)
    assert server.bad_frames == 41
    warnings = [r for r in caplog.records if "closing connection" in r.getMessage()]
    assert 1 <= len(warnings) <= 10


def test_the_log_limiter_lets_a_burst_through_then_reports_what_it_held_back() -> None:
    now = [0.0]
    limiter = LogLimiter(burst=2, interval=10.0, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(5)] == [0, 0, None, None, None]
    now[0] = 10.0
    assert limiter.allow() == 3  # the first record of a new window says how many were held
    assert limiter.allow() == 0


def test_shown_quotes_any_decoded_value_briefly_whatever_its_size_or_depth() -> None:
    """Validators quote bad values with ``shown``: a full repr of a 4M-element array took
    seconds of a daemon's event loop, and of a 1000-deep one overflowed the stack."""
    nested: Any = None
    for _ in range(990):
        nested = [nested]
    assert frames.shown([0] * (4 << 20)) == "[0, 0, 0, 0, ...]"
    assert frames.shown(nested) == "[[[[...]]]]"
    assert frames.shown({i: i for i in range(1 << 16)}) == "{0: 0, 1: 1, 2: 2, 3: 3, ...}"
    assert frames.shown(b"\xff" * (4 << 20)) == repr(b"\xff" * 60)[:60] + "..."
    assert frames.shown("orders") == "'orders'" and frames.shown(None) == "None"
    assert frames.shown(msgpack.ExtType(1, b"x" * 1000)).startswith("[1, b'xxx")
