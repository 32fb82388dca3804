"""phxq: a strongly consistent, highly available distributed queue on Multi-Paxos.

The public surface is what ``__all__`` lists (see DESIGN.md §10). Client classes are added here
as they land; everything else is internal.
"""

from phxq.errors import (
    BadArgument,
    ClientError,
    LockHeld,
    MessageTooLarge,
    NotMaster,
    PhxqError,
    ProtocolError,
    StaleToken,
    StorageError,
    Unavailable,
    UnknownTopic,
    VersionMismatch,
)

__version__ = "0.1.0"

__all__ = [
    "BadArgument",
    "ClientError",
    "LockHeld",
    "MessageTooLarge",
    "NotMaster",
    "PhxqError",
    "ProtocolError",
    "StaleToken",
    "StorageError",
    "Unavailable",
    "UnknownTopic",
    "VersionMismatch",
    "__version__",
]
