"""Push-mode TCP receiving (frames handled from the protocol callback): same rules as recv()."""

from __future__ import annotations

import asyncio
from typing import Any

from phxq.errors import PhxqError, ProtocolError, Unavailable
from phxq.net.frames import decode_body, encode_request, prefix
from phxq.net.rpc import RpcPool, RpcServer
from phxq.net.transport import TcpTransport, connect_tcp


class Gate:
    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0

    async def handle(self, method: str, params: Any) -> Any:
        if method == "wait":
            self.entered += 1
            await self.open.wait()
        return params


async def eventually(condition: Any, what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


async def test_a_tcp_connection_runs_at_most_max_inflight_requests() -> None:
    gate = Gate()
    async with RpcServer(gate.handle, max_inflight=2) as server, RpcPool() as pool:
        await server.start("127.0.0.1", 0)
        calls = [asyncio.ensure_future(pool.call(server.address, "wait", i)) for i in range(5)]
        await eventually(lambda: gate.entered == 2, "two handlers to start")
        for _ in range(50):
            await asyncio.sleep(0)  # give the server every chance to start a third
        assert gate.entered == 2
        gate.open.set()
        assert await asyncio.gather(*calls) == list(range(5))


async def test_bodies_received_before_set_receiver_are_delivered_first() -> None:
    got: list[bytes] = []
    ended: list[PhxqError] = []
    accepted: list[TcpTransport] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: TcpTransport(on_connected=accepted.append), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    client = await connect_tcp(f"127.0.0.1:{port}")
    for body in (b"one", b"two"):
        client.send(body)
    await eventually(lambda: accepted and accepted[0]._inbox_bytes > 0, "bodies queued")
    await asyncio.sleep(0.05)  # both bodies (one write) are in
    accepted[0].set_receiver(got.append, ended.append)
    client.send(b"three")
    await eventually(lambda: len(got) == 3, "three bodies")
    assert got == [b"one", b"two", b"three"]
    client.close()
    await eventually(lambda: bool(ended), "the end of the stream")
    assert isinstance(ended[0], Unavailable) and len(ended) == 1
    accepted[0].close()
    server.close()
    await server.wait_closed()


async def test_broken_framing_ends_a_push_connection_with_a_protocol_error() -> None:
    async with RpcServer(Gate().handle, max_frame=1024) as server:
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ok = encode_request(1, "echo", "hi")
        writer.write(prefix(ok) + ok)
        await writer.drain()
        header = await reader.readexactly(4)
        first = decode_body(await reader.readexactly(int.from_bytes(header, "big")))
        assert type(first).__name__ == "Response"
        writer.write((10_000).to_bytes(4, "big"))  # an oversized length
        bodies = []
        while True:
            header = await reader.read(4)
            if not header:
                break
            body = await reader.readexactly(int.from_bytes(header, "big"))
            bodies.append(decode_body(body))
        writer.close()
        kinds = [type(b).__name__ for b in bodies]
        assert kinds == ["ErrorReply"]
        error = bodies[0].to_exception()  # type: ignore[union-attr]
        assert isinstance(error, ProtocolError)
        await eventually(lambda: server.connections == 0, "the connection to be dropped")
