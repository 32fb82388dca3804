"""phxq.net — the one place where bytes meet the network (DESIGN.md §2).

Framed msgpack RPC over asyncio TCP. Each module's docstring is the reference for its part:

- ``phxq.net.frames``    wire format without I/O: ``[u32 length][msgpack body]``, body kinds
                         REQUEST/RESPONSE/ERROR/NOTIFY, ``decode_body``, ``FrameDecoder``,
                         ``MAX_FRAME_DEFAULT`` (16 MiB).
- ``phxq.net.transport`` the ``Transport`` interface (``send(body, flush=)``, push delivery
                         with ``set_receiver``/``pause_reading``/``resume_reading``, ``drain``,
                         ``close``), ``Inbound`` (the receiving half every transport shares),
                         ``TcpTransport``, ``connect_tcp``, ``parse_addr``.
- ``phxq.net.server``    ``RpcServer(handler, notify_handler=, max_frame=, max_inflight=)``.
- ``phxq.net.rpc``       ``RpcPool`` (``call``/``notify``), re-exports ``RpcServer``.
- ``phxq.net.loop``      ``run(main)`` on uvloop when installed.

In-memory and fault-injecting transports for tests are in :mod:`phxq.testing`.

Typical use::

    async def handle(method: str, params: Any) -> Any:
        if method == "echo":
            return params
        raise BadArgument(f"unknown method {method!r}")

    async with RpcServer(handle, notify_handler=on_notify) as server:
        await server.start("127.0.0.1", 0)
        async with RpcPool() as pool:
            assert await pool.call(server.address, "echo", [1, b"x"], timeout=1.0) == [1, b"x"]
            pool.notify(server.address, "px", b"...")   # fire-and-forget, never raises

Errors raised by a handler are ``PhxqError`` subclasses and are raised as the same class by
``RpcPool.call``; transport failures and timeouts are ``Unavailable``.
"""

from phxq.net.frames import MAX_FRAME_DEFAULT
from phxq.net.rpc import PoolStats, RpcPool
from phxq.net.server import Handler, NotifyHandler, RpcServer
from phxq.net.transport import Transport, TransportFactory

__all__ = [
    "MAX_FRAME_DEFAULT",
    "Handler",
    "NotifyHandler",
    "PoolStats",
    "RpcPool",
    "RpcServer",
    "Transport",
    "TransportFactory",
]
