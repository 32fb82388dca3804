"""Helpers for your own tests of code that talks phxq's RPC (as ``trio.testing`` and
``httpx.MockTransport`` are for theirs). Nothing in the daemons imports this package.

- :class:`MemoryNetwork` / :func:`memory_pair` / :class:`MemoryTransport`: in-memory
  transports with the same contract as TCP (tests/unit/test_net_transport.py holds every
  transport to it), so an :class:`~phxq.net.RpcServer` and an :class:`~phxq.net.RpcPool` talk
  without sockets;
- :class:`Faults` / :class:`FaultyTransport` / :class:`FaultStats`: wrap any transport and
  drop, duplicate, delay, stall, sever or one-way partition its frames, from a seeded RNG;
- :class:`Inbox`: ``await inbox.recv()`` over any transport's push delivery, to look at raw
  frame bodies;
- :class:`LocalCluster`: three stores (and lock nodes) in your test's event loop, on real
  sockets and files, for a ``phxq.Client`` to talk to (``phxq.testing.cluster``).

Typical use::

    from phxq.net import RpcPool, RpcServer
    from phxq.testing import Faults, MemoryNetwork

    net, faults = MemoryNetwork(), Faults(seed=7)
    async with RpcServer(handle) as server, RpcPool(
        transport_factory=faults.factory(net.connect)
    ) as pool:
        net.listen("node1:1", server.accept)
        faults.drop_rate = 0.2              # every fifth frame lost, reproducibly
        await pool.call("node1:1", "echo", b"x", timeout=0.5)   # may raise Unavailable

Against a whole cluster::

    async with LocalCluster(tmp_path, locks=True) as cluster:
        async with phxq.Client(cluster.addresses) as client:
            await client.enqueue("orders", b"hello")
"""

from phxq.testing.cluster import LocalCluster
from phxq.testing.faults import Faults, FaultStats, FaultyTransport
from phxq.testing.inbox import Inbox
from phxq.testing.memory import MemoryNetwork, MemoryTransport, memory_pair

__all__ = [
    "FaultStats",
    "Faults",
    "FaultyTransport",
    "Inbox",
    "LocalCluster",
    "MemoryNetwork",
    "MemoryTransport",
    "memory_pair",
]
