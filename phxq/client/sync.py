"""``phxq.SyncClient``: the async :class:`~phxq.client.client.Client` for scripts.

It runs the async client on an event loop in a private thread and blocks on each call; the
method names and arguments are the async client's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from phxq.client.client import Client
from phxq.client.stream import MessageStream, TailStart
from phxq.client.types import Ack, ConsumedMessage, Message

T = TypeVar("T")


class SyncClient:
    """Blocking client: ``with phxq.SyncClient(addrs) as c: c.enqueue("orders", b"x")``."""

    def __init__(self, addresses: Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="phxq-sync", daemon=True
        )
        self._thread.start()
        self._client = Client(addresses, **options)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncClient:
        self._run(self._client.cluster_map())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def enqueue(self, topic: str, payload: bytes, **kwargs: Any) -> Ack:
        return self._run(self._client.enqueue(topic, payload, **kwargs))

    def cancel_scheduled(self, scheduled_id: str) -> bool:
        return self._run(self._client.cancel_scheduled(scheduled_id))

    def enqueue_many(self, topic: str, messages: Any) -> list[Ack]:
        return self._run(self._client.enqueue_many(topic, messages))

    def dequeue(self, group: str | None, topic: str, **kwargs: Any) -> list[Message]:
        return self._run(self._client.dequeue(group, topic, **kwargs))

    def commit(self, group: str, topic: str, **kwargs: Any) -> None:
        self._run(self._client.commit(group, topic, **kwargs))

    def cursor(self, group: str, topic: str, **kwargs: Any) -> int | None:
        return self._run(self._client.cursor(group, topic, **kwargs))

    def seek(self, group: str, topic: str, **kwargs: Any) -> int | None:
        return self._run(self._client.seek(group, topic, **kwargs))

    def status(self, addr: str | None = None) -> dict[str, Any]:
        return self._run(self._client.status(addr))

    def tail(
        self,
        topic: str,
        *,
        from_: TailStart = "now",
        group: str | None = None,
        queues: Sequence[int] | None = None,
        batch: int = 100,
    ) -> SyncMessageStream:
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
    ) -> SyncMessageStream:
        """``Client.consume`` as a blocking iterator (``msg.ack()`` is then a coroutine of the
        client's loop: use ``client.ack(msg)``)."""
        stream = self._client.consume(
            group, topic, queues=queues, batch=batch, auto_commit=auto_commit
        )
        return SyncMessageStream(stream, self._run)

    def ack(self, message: ConsumedMessage) -> None:
        """``await message.ack()`` on the client's loop (for ``consume(auto_commit=False)``)."""
        self._run(message.ack())


class SyncMessageStream:
    """A blocking iterator over an async :class:`~phxq.client.stream.MessageStream`; also a
    context manager (``close`` on exit). Closing the SyncClient closes it too."""

    def __init__(self, stream: MessageStream[Any], run: Any) -> None:
        self._stream = stream
        self._run = run

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            message: Message = self._run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None
        return message

    def close(self) -> None:
        """Stop the stream (cancels its reads)."""
        self._run(self._stream.aclose())

    def __enter__(self) -> SyncMessageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
