"""The streaming half of :class:`phxq.Client`: ``tail`` and ``consume`` (and the lock client
``consume`` needs). A mixin so that ``client.py`` keeps the request path; it relies on the
attributes :class:`~phxq.client.client.Client` sets up (declared below)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from phxq.client.stream import MessageStream, StreamRegistry, TailStart, tail_messages
from phxq.client.types import ClusterMap, ConsumedMessage, Message
from phxq.errors import BadArgument
from phxq.lock.client import LockClient

if TYPE_CHECKING:
    from phxq.client.client import Client


class StreamingMixin:
    _streams: StreamRegistry
    _map: ClusterMap | None
    _lock_seeds: list[str] | None
    _credentials: tuple[str | None, str | os.PathLike[str] | ssl.SSLContext | None]

    def tail(
        self,
        topic: str,
        *,
        from_: TailStart = "now",
        group: str | None = None,
        queues: Sequence[int] | None = None,
        batch: int = 100,
    ) -> MessageStream[Message]:
        """A read-only stream of ``topic``'s messages as they arrive: ``async for msg in
        client.tail("orders"):``. Commits nothing, holds no lock. ``from_``: ``"now"`` (default,
        only what is chosen from now on), ``"start"``, ``"cursor"`` (after ``group``'s committed
        cursor) or an offset. Each queue's messages come in offset order; ``batch`` is the most
        read per request. Raises ``UnknownTopic`` / ``BadArgument`` on the first iteration, and
        ``Unavailable`` when a queue's master cannot be reached within ``retry_timeout``. Close
        it with ``aclose()`` or ``async with``; closing the client closes it too."""
        return self._streams.add(
            lambda stop: tail_messages(
                cast("Client", self),
                topic,
                from_=from_,
                group=group,
                queues=queues,
                batch=batch,
                stop=stop,
            )
        )

    def consume(
        self,
        group: str,
        topic: str,
        *,
        queues: Sequence[int] | None = None,
        batch: int = 100,
        auto_commit: bool = True,
    ) -> MessageStream[ConsumedMessage]:
        """Consume ``topic`` as a member of consumer ``group``: ``async for msg in
        client.consume("billing", "orders"):``. Joins the group's membership in the lock
        service, holds the lock of each queue assigned to it (rebalanced as members come and
        go), yields each queue's messages in order, and commits with the lock's fencing token:
        when the loop moves on (``auto_commit``), or at ``await msg.ack()``. ``queues``: exactly
        these queues, without membership. ``batch``: messages read ahead per queue. Closing
        the stream hands its queues over. Raises ``UnknownTopic`` / ``BadArgument`` on the first
        iteration, ``BadArgument`` if the cluster has no lock service. See
        :mod:`phxq.consumer.stream`."""
        from phxq.consumer.stream import consume_messages

        return self._streams.add(
            lambda stop: consume_messages(
                cast("Client", self),
                group,
                topic,
                queues=queues,
                batch=batch,
                auto_commit=auto_commit,
                stop=stop,
            )
        )

    def lock_client(self) -> LockClient:
        """A :class:`phxq.LockClient` for this cluster's lock service (the ``locks`` given, or
        the lock nodes the cluster map lists), with this client's credentials. Call after the
        cluster map is known (``async with`` the client, or any request). The caller closes it."""
        seeds = self._lock_seeds or (self._map.locks if self._map is not None else [])
        if not seeds:
            raise BadArgument("the cluster map lists no lock nodes: give Client(locks=[...])")
        token, ca = self._credentials
        return LockClient(seeds, token=token, ca=ca)
