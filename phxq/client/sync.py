"""``phxq.SyncClient``: the async :class:`~phxq.client.client.Client` for scripts.

It runs the async client on an event loop in a private thread and blocks on each call; the
method names and arguments are the async client's.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from types import EllipsisType
from typing import Any, Generic, TypeVar, final

from phxq.client.batching import DEFAULT_WINDOW
from phxq.client.client import Client
from phxq.client.stream import MessageStream, TailStart
from phxq.client.txn import DEFAULT_TIMEOUT as DEFAULT_TXN_TIMEOUT
from phxq.client.txn import Transaction
from phxq.client.types import Ack, ConsumedMessage, Message

T = TypeVar("T")


@final
class SyncClient:
    """Blocking client: ``with phxq.SyncClient(addrs) as c: c.enqueue("orders", b"x")``.

    The constructor's parameters and every method's are :class:`phxq.Client`'s (see there for
    what each promises and raises); each call blocks until the async call returns, at most
    its ``timeout`` seconds (default ``retry_timeout``), then raises ``Unavailable``."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        request_timeout: float = 2.0,
        retry_timeout: float = 15.0,
        batching: bool = True,
        window: int = DEFAULT_WINDOW,
        token: str | None = None,
        ca: str | os.PathLike[str] | ssl.SSLContext | None = None,
        locks: Sequence[str] | None = None,
    ) -> None:
        self._client = Client(
            addresses,
            request_timeout=request_timeout,
            retry_timeout=retry_timeout,
            batching=batching,
            window=window,
            token=token,
            ca=ca,
            locks=locks,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="phxq-sync", daemon=True
        )
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncClient:
        self._run(self._client.cluster_map())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close open streams and the connections, and stop the loop thread. Idempotent."""
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        if not self._loop.is_closed():
            self._loop.close()

    def enqueue(
        self,
        topic: str,
        payload: bytes,
        *,
        key: str | None = None,
        queue: int | None = None,
        dedup_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        deliver_at: float | None = None,
        timeout: float | None = None,
    ) -> Ack:
        """:meth:`phxq.Client.enqueue`: returns once the message is durable on a majority."""
        return self._run(
            self._client.enqueue(
                topic,
                payload,
                key=key,
                queue=queue,
                dedup_id=dedup_id,
                headers=headers,
                delay=delay,
                deliver_at=deliver_at,
                timeout=timeout,
            )
        )

    def cancel_scheduled(self, scheduled_id: str, *, timeout: float | None = None) -> bool:
        """:meth:`phxq.Client.cancel_scheduled`."""
        return self._run(self._client.cancel_scheduled(scheduled_id, timeout=timeout))

    def transaction(
        self, producer_group: str | None = None, *, timeout: float = DEFAULT_TXN_TIMEOUT
    ) -> SyncTransaction:
        """:meth:`phxq.Client.transaction`: ``with client.transaction() as txn:
        txn.enqueue(...)`` commits on exit, rolls back on an exception."""
        return SyncTransaction(self._client.transaction(producer_group, timeout=timeout), self._run)

    def enqueue_many(
        self,
        topic: str,
        messages: Iterable[tuple[bytes, str | None] | tuple[bytes, str | None, str | None]],
        *,
        queue: int | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        deliver_at: float | None = None,
        timeout: float | None = None,
    ) -> list[Ack]:
        """:meth:`phxq.Client.enqueue_many`: one ack per message, in order."""
        return self._run(
            self._client.enqueue_many(
                topic,
                messages,
                queue=queue,
                headers=headers,
                delay=delay,
                deliver_at=deliver_at,
                timeout=timeout,
            )
        )

    def dequeue(
        self,
        group: str | None,
        topic: str,
        *,
        queue: int,
        after: int | None = None,
        limit: int = 100,
        wait: float = 0.0,
        timeout: float | None = None,
    ) -> list[Message]:
        """:meth:`phxq.Client.dequeue`: one queue's messages in offset order."""
        return self._run(
            self._client.dequeue(
                group, topic, queue=queue, after=after, limit=limit, wait=wait, timeout=timeout
            )
        )

    def commit(
        self,
        group: str,
        topic: str,
        *,
        queue: int,
        offset: int,
        token: int,
        expect: int | EllipsisType | None = ...,
        timeout: float | None = None,
    ) -> None:
        """:meth:`phxq.Client.commit`: ``StaleToken`` if a newer lock holder committed."""
        self._run(
            self._client.commit(
                group,
                topic,
                queue=queue,
                offset=offset,
                token=token,
                expect=expect,
                timeout=timeout,
            )
        )

    def cursor(
        self, group: str, topic: str, *, queue: int, timeout: float | None = None
    ) -> int | None:
        """:meth:`phxq.Client.cursor`: the committed cursor, or None."""
        return self._run(self._client.cursor(group, topic, queue=queue, timeout=timeout))

    def seek(
        self,
        group: str,
        topic: str,
        *,
        queue: int,
        offset: int | None = None,
        time: float | None = None,
        timeout: float | None = None,
    ) -> int | None:
        """:meth:`phxq.Client.seek`: move the group's cursor once; the new cursor."""
        return self._run(
            self._client.seek(group, topic, queue=queue, offset=offset, time=time, timeout=timeout)
        )

    def status(self, addr: str | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """:meth:`phxq.Client.status`: one store's status."""
        return self._run(self._client.status(addr, timeout=timeout))

    def tail(
        self,
        topic: str,
        *,
        from_: TailStart = "now",
        group: str | None = None,
        queues: Sequence[int] | None = None,
        batch: int = 100,
    ) -> SyncMessageStream[Message]:
        """``Client.tail`` as a blocking iterator: ``for msg in client.tail("orders"):``."""
        stream = self._client.tail(topic, from_=from_, group=group, queues=queues, batch=batch)
        return SyncMessageStream(stream, self._run)

    def consume(
        self,
        group: str,
        topic: str,
        *,
        queues: Sequence[int] | None = None,
        batch: int = 100,
        auto_commit: bool = True,
    ) -> SyncMessageStream[ConsumedMessage]:
        """``Client.consume`` as a blocking iterator (``msg.ack()`` is then a coroutine of the
        client's loop: use ``client.ack(msg)``)."""
        stream = self._client.consume(
            group, topic, queues=queues, batch=batch, auto_commit=auto_commit
        )
        return SyncMessageStream(stream, self._run)

    def ack(self, message: ConsumedMessage) -> None:
        """``await message.ack()`` on the client's loop (for ``consume(auto_commit=False)``)."""
        self._run(message.ack())


M = TypeVar("M", bound=Message)


@final
class SyncTransaction:
    """A blocking :class:`phxq.client.txn.Transaction` (same methods and promises)."""

    def __init__(self, txn: Transaction, run: Any) -> None:
        self._txn = txn
        self._run = run
        self.id = txn.id

    @property
    def state(self) -> str:
        return self._txn.state

    def enqueue(
        self,
        topic: str,
        payload: bytes,
        *,
        key: str | None = None,
        queue: int | None = None,
        dedup_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._run(
            self._txn.enqueue(
                topic, payload, key=key, queue=queue, dedup_id=dedup_id, headers=headers
            )
        )

    def prepare(self, *, timeout: float | None = None) -> None:
        self._run(self._txn.prepare(timeout=timeout))

    def commit(self, *, timeout: float | None = None) -> list[Ack]:
        acks: list[Ack] = self._run(self._txn.commit(timeout=timeout))
        return acks

    def rollback(self, *, timeout: float | None = None) -> None:
        self._run(self._txn.rollback(timeout=timeout))

    def __enter__(self) -> SyncTransaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._run(self._txn.__aexit__(exc_type, exc, tb))


class SyncMessageStream(Generic[M]):
    """A blocking iterator over an async :class:`~phxq.client.stream.MessageStream`; also a
    context manager (``close`` on exit). Closing the SyncClient closes it too."""

    def __init__(self, stream: MessageStream[M], run: Any) -> None:
        self._stream = stream
        self._run = run

    def __iter__(self) -> Iterator[M]:
        return self

    def __next__(self) -> M:
        try:
            message: M = self._run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None
        return message

    def close(self) -> None:
        """Stop the stream (cancels its reads)."""
        self._run(self._stream.aclose())

    def __enter__(self) -> SyncMessageStream[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
