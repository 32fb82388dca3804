"""The phxq exception tree.

Every error a caller can see is a :class:`PhxqError`. Each class has a stable wire ``code`` so
an error raised in a daemon travels as ``(code, message, data)`` and is raised as the same class
on the client (see :func:`from_wire`).

::

    PhxqError
    ├── ProtocolError          malformed frame or message (the peer's fault)
    ├── ClientError            bad request from a caller
    │   ├── UnknownTopic
    │   ├── NotFound           a named thing (e.g. a consumer group) does not exist
    │   ├── MessageTooLarge
    │   ├── BadArgument
    │   ├── Unauthenticated    no credentials, or credentials the cluster does not accept
    │   ├── Forbidden          authenticated, but not allowed to do this (``data['permission']``)
    │   └── TransactionAborted the transaction was rolled back (or finished) instead
    ├── NotMaster(hint)        retry at ``hint``; the client follows it automatically
    ├── StaleMap(version)      routed with an old cluster map; the client refreshes it
    │   └── QueueMoved(set)    the queue was sealed here by a queue move; it lives on ``set``
    ├── Unavailable            no majority / timed out; retry is safe with the same dedup id
    ├── StaleToken             a fencing token older than the current owner's
    ├── LockHeld(holder)       the lock is held by someone else (lock service)
    ├── VersionMismatch        a compare-and-set saw another version (lock service KV)
    └── StorageError           corrupt or unwritable log; the replica stops serving that group
"""

from __future__ import annotations

from typing import Any, ClassVar


class PhxqError(Exception):
    """Base of every phxq error. ``data`` is a small msgpack-able dict of extra fields."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str = "", data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = dict(data or {})

    def to_wire(self) -> tuple[str, str, dict[str, Any]]:
        return (self.code, self.message, self.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, data={self.data!r})"


class ProtocolError(PhxqError):
    """A malformed frame or message: the peer's fault. The connection may be closed."""

    code = "protocol"


class ClientError(PhxqError):
    """A bad request from a caller. Retrying the same request will fail the same way."""

    code = "client"


class UnknownTopic(ClientError):
    """The topic is not in the cluster map (or the queue number is out of its range)."""

    code = "unknown_topic"


class NotFound(ClientError):
    """A named thing the request is about does not exist (e.g. ``phxq admin group delete`` of
    a consumer group the cluster map lacks); ``data`` names it (``{"group": name}``)."""

    code = "not_found"


class MessageTooLarge(ClientError):
    """A payload over its topic's ``max_message_bytes``, or a request over the frame limit."""

    code = "message_too_large"


class BadArgument(ClientError):
    """A malformed or out-of-range argument; ``data['field']`` names it where known."""

    code = "bad_argument"


class Unauthenticated(ClientError):
    """The caller presented no credentials, or ones the cluster does not accept (unknown
    token, a certificate not from the cluster CA). The message never contains the token."""

    code = "unauthenticated"


class Forbidden(ClientError):
    """The caller is authenticated but its principal lacks the permission the request needs
    (``data['permission']``, e.g. ``"produce:orders"``)."""

    code = "forbidden"


class TransactionAborted(ClientError):
    """The transaction was rolled back (its home group's decision, maybe a timeout's or a
    check-back's), or is already finished where a late prepare arrived."""

    code = "txn_aborted"


class NotMaster(PhxqError):
    """This replica is not the master of the group. ``hint`` is the likely master's address
    (or node id as a string), or ``None`` when unknown."""

    code = "not_master"

    def __init__(
        self, message: str = "", data: dict[str, Any] | None = None, *, hint: str | None = None
    ) -> None:
        data = dict(data or {})
        if hint is not None:
            data["hint"] = hint
        super().__init__(message or f"not master (hint={data.get('hint')})", data)

    @property
    def hint(self) -> str | None:
        hint = self.data.get("hint")
        return hint if isinstance(hint, str) else None


class StaleMap(PhxqError):
    """The request was routed with an old cluster map: the queue lives on another store set
    (``data['set']``, when known) in the map at ``data['version']``. The client refreshes its
    map and re-sends the request by itself."""

    code = "stale_map"

    @property
    def version(self) -> int | None:
        version = self.data.get("version")
        return version if isinstance(version, int) else None


class QueueMoved(StaleMap):
    """The queue was sealed on this store set by ``phxq admin queue move``: its messages up
    to ``data['sealed']`` (an offset) stay readable here, new ones go to store set
    ``data['set']``. The client refreshes its map and follows it by itself."""

    code = "queue_moved"


class MoveBlocked(PhxqError):
    """A queue move cannot seal the queue on its old store set yet: delayed messages or
    undecided transaction parts are pending there (``data['scheduled']``,
    ``data['transactional']``), and once sealed they would be released where no reader looks.
    The move stays pending and is retried until none are (or it is cancelled)."""

    code = "move_blocked"


class Unavailable(PhxqError):
    """No majority, or the request timed out. The outcome may be unknown: retrying with the
    same dedup id is safe."""

    code = "unavailable"


class StaleToken(PhxqError):
    """A fencing token older than the one the current owner committed with."""

    code = "stale_token"


class LockHeld(PhxqError):
    """The lock is held by another owner (``data['holder']``)."""

    code = "lock_held"


class VersionMismatch(PhxqError):
    """A compare-and-set expected a version the key no longer has (``data['version']``)."""

    code = "version_mismatch"


class StorageError(PhxqError):
    """The log is corrupt or cannot be written. The replica stops serving the group."""

    code = "storage"


def _all_subclasses(cls: type[PhxqError]) -> list[type[PhxqError]]:
    out: list[type[PhxqError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_classes() -> dict[str, type[PhxqError]]:
    """Every error class by wire code (the base included)."""
    classes = {PhxqError.code: PhxqError}
    for cls in _all_subclasses(PhxqError):
        classes[cls.code] = cls
    return classes


def from_wire(code: object, message: object, data: object) -> PhxqError:
    """Rebuild an error received as ``(code, message, data)``. Unknown codes become
    :class:`PhxqError` with the code kept in ``data['code']``; never raises."""
    msg = message if isinstance(message, str) else repr(message)
    extra: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    cls = error_classes().get(code) if isinstance(code, str) else None
    if cls is None:
        extra["code"] = code if isinstance(code, str) else repr(code)
        return PhxqError(msg, extra)
    if cls is NotMaster:
        return NotMaster(msg, extra)
    return cls(msg, extra)
