"""phxq: a strongly consistent, highly available distributed queue on Multi-Paxos.

The public surface is what ``__all__`` lists (see DESIGN.md §10): the clients, the message
and ack types, and the error tree. Everything else is internal. The client classes are loaded
on first use, so ``import phxq.paxos`` (or any core module) does not pull in the network stack;
type checkers and IDEs see the real classes (the ``TYPE_CHECKING`` imports below).
"""

from typing import TYPE_CHECKING, Any

from phxq.errors import (
    BadArgument,
    ClientError,
    Forbidden,
    LockHeld,
    MessageTooLarge,
    NotMaster,
    PhxqError,
    ProtocolError,
    StaleToken,
    StorageError,
    TransactionAborted,
    Unauthenticated,
    Unavailable,
    UnknownTopic,
    VersionMismatch,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from phxq.client import Ack, Client, ConsumedMessage, Message, SyncClient
    from phxq.lock.client import LockClient

_LAZY = {"Ack", "Client", "ConsumedMessage", "Message", "SyncClient"}

__all__ = [
    "Ack",
    "BadArgument",
    "Client",
    "ClientError",
    "ConsumedMessage",
    "Forbidden",
    "LockClient",
    "LockHeld",
    "Message",
    "MessageTooLarge",
    "NotMaster",
    "PhxqError",
    "ProtocolError",
    "StaleToken",
    "StorageError",
    "SyncClient",
    "TransactionAborted",
    "Unauthenticated",
    "Unavailable",
    "UnknownTopic",
    "VersionMismatch",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "LockClient":
        import phxq.lock.client

        return phxq.lock.client.LockClient
    if name in _LAZY:
        import phxq.client

        return getattr(phxq.client, name)
    raise AttributeError(f"module 'phxq' has no attribute {name!r}")
