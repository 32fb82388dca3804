"""``phxq.SyncClient``: the async :class:`~phxq.client.client.Client` for scripts.

It runs the async client on an event loop in a private thread and blocks on each call. The
constructor and the calls are the async client's own, wrapped (:func:`_blocking`,
:func:`_blocking_stream`): their signatures and docstrings are derived from
:class:`~phxq.client.client.Client` and :class:`~phxq.client.txn.Transaction`, so they cannot
drift from them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, final

from phxq.client.client import Client
from phxq.client.stream import MessageStream
from phxq.client.txn import DEFAULT_TIMEOUT as DEFAULT_TXN_TIMEOUT
from phxq.client.txn import Transaction
from phxq.client.types import ConsumedMessage, Message

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", bound=Message)
Inner = TypeVar("Inner", covariant=True)
_TXN = "phxq.client.txn.Transaction"


class _Blocking(Generic[Inner]):
    """A blocking face of the async object ``inner``: its calls run on ``loop`` (another
    thread's) and block until they return."""

    def __init__(self, inner: Inner, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


def _derived_doc(method: Callable[..., Any], of: str, what: str) -> str:
    own = inspect.cleandoc(method.__doc__ or "")
    return f"{what} :meth:`{of}.{method.__name__}`:\n\n{own}"


def _blocking(
    method: Callable[Concatenate[Inner, P], Coroutine[Any, Any, T]], of: str = "phxq.Client"
) -> Callable[Concatenate[_Blocking[Inner], P], T]:
    """The blocking form of async ``method`` (of the class named ``of``): the same arguments,
    result and errors; its docstring is ``method``'s."""

    @functools.wraps(method)
    def call(self: _Blocking[Inner], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._inner, *args, **kwargs))

    call.__doc__ = _derived_doc(method, of, "Blocks on")
    return call


def _blocking_stream(
    method: Callable[Concatenate[Inner, P], MessageStream[M]], note: str = ""
) -> Callable[Concatenate[_Blocking[Inner], P], SyncMessageStream[M]]:
    """``phxq.Client`` ``method``'s stream as a blocking iterator (:class:`SyncMessageStream`),
    with ``method``'s arguments and docstring (after ``note``)."""

    @functools.wraps(method)
    def call(self: _Blocking[Inner], /, *args: P.args, **kwargs: P.kwargs) -> SyncMessageStream[M]:
        return SyncMessageStream(method(self._inner, *args, **kwargs), self._loop)

    what = f"{note}A blocking iterator (``for m in ...:``) of"
    call.__doc__ = _derived_doc(method, "phxq.Client", what)
    signature = inspect.signature(method)
    returns = str(signature.return_annotation).replace("MessageStream", "SyncMessageStream", 1)
    call.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    return call


def _params_of(
    source: Callable[Concatenate[Any, P], None],
) -> Callable[[Callable[..., None]], Callable[Concatenate[Any, P], None]]:
    """Give the decorated ``__init__`` the parameters of ``source`` (for type checkers and
    ``inspect.signature``); it must pass them on to ``source`` unchanged."""

    def decorate(init: Callable[..., None]) -> Callable[Concatenate[Any, P], None]:
        init.__wrapped__ = source  # type: ignore[attr-defined]
        return init

    return decorate


@final
class SyncClient(_Blocking[Client]):
    """Blocking client: ``with phxq.SyncClient(addrs) as c: c.enqueue("orders", b"x")``.

    The constructor's parameters and every method's are :class:`phxq.Client`'s (see there for
    what each promises and raises); each call blocks until the async call returns, at most
    its ``timeout`` seconds (default ``retry_timeout``), then raises ``Unavailable``."""

    @_params_of(Client.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(Client(*args, **kwargs), asyncio.new_event_loop())
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="phxq-sync", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> SyncClient:
        self._run(self._inner.cluster_map())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close open streams and the connections, and stop the loop thread. Idempotent."""
        if self._loop.is_running():
            self._run(self._inner.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        if not self._loop.is_closed():
            self._loop.close()

    enqueue = _blocking(Client.enqueue)
    cancel_scheduled = _blocking(Client.cancel_scheduled)
    enqueue_many = _blocking(Client.enqueue_many)
    dequeue = _blocking(Client.dequeue)
    commit = _blocking(Client.commit)
    cursor = _blocking(Client.cursor)
    seek = _blocking(Client.seek)
    status = _blocking(Client.status)
    tail = _blocking_stream(Client.tail)
    consume = _blocking_stream(
        Client.consume,
        note="Each ``msg.ack()`` is a coroutine of the client's loop: use ``client.ack(msg)``. ",
    )

    def transaction(
        self, producer_group: str | None = None, *, timeout: float = DEFAULT_TXN_TIMEOUT
    ) -> SyncTransaction:
        """:meth:`phxq.Client.transaction`: ``with client.transaction() as txn:
        txn.enqueue(...)`` commits on exit, rolls back on an exception."""
        txn = self._inner.transaction(producer_group, timeout=timeout)
        return SyncTransaction(txn, self._loop)

    def ack(self, message: ConsumedMessage) -> None:
        """``await message.ack()`` on the client's loop (for ``consume(auto_commit=False)``;
        a consumed message's ``ack()`` is a coroutine of that loop)."""
        self._run(message.ack())


@final
class SyncTransaction(_Blocking[Transaction]):
    """A blocking :class:`phxq.client.txn.Transaction` (same methods and promises)."""

    def __init__(self, txn: Transaction, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(txn, loop)
        self.id = txn.id

    @property
    def state(self) -> str:
        return self._inner.state

    enqueue = _blocking(Transaction.enqueue, _TXN)
    prepare = _blocking(Transaction.prepare, _TXN)
    commit = _blocking(Transaction.commit, _TXN)
    rollback = _blocking(Transaction.rollback, _TXN)

    def __enter__(self) -> SyncTransaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._run(self._inner.__aexit__(exc_type, exc, tb))


class SyncMessageStream(_Blocking[MessageStream[M]]):
    """A blocking iterator over an async :class:`~phxq.client.stream.MessageStream`; also a
    context manager (``close`` on exit). Closing the SyncClient closes it too."""

    def __iter__(self) -> Iterator[M]:
        return self

    def __next__(self) -> M:
        try:
            return self._run(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Stop the stream (cancels its reads)."""
        self._run(self._inner.aclose())

    def __enter__(self) -> SyncMessageStream[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
