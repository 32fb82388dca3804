"""phxq.lock: the lock service (DESIGN.md §6) -- lease locks with fencing tokens and a
versioned KV with compare-and-set, replicated by the same Paxos core and PLog as the store.

- :mod:`phxq.lock.entries`: the log entries and their codec;
- :mod:`phxq.lock.state`: the pure replicated state machine (the safety argument lives there);
- :mod:`phxq.lock.node` / :mod:`phxq.lock.service`: the daemon (``phxq lock``) and its RPCs;
- :mod:`phxq.lock.client`: ``LockClient``, ``Lease``, ``LockInfo`` (loaded on first use, so
  importing the pure modules does not pull in the network stack).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phxq.lock.client import Lease, LockClient, LockInfo

__all__ = ["Lease", "LockClient", "LockInfo"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import phxq.lock.client

        return getattr(phxq.lock.client, name)
    raise AttributeError(f"module 'phxq.lock' has no attribute {name!r}")
