"""One call's time budget, and what the nodes it asked said (for an ``Unavailable`` that says why).

Every public call of :class:`phxq.Client`, :class:`phxq.SyncClient` and :class:`phxq.LockClient`
that talks to the cluster takes ``timeout=`` (seconds; ``None``: the client's ``retry_timeout``).
A :class:`Budget` is that call's deadline on the local monotonic clock plus a record of each
node's latest answer, so that when the call gives up its ``Unavailable`` says which nodes
answered and which did not -- "no majority" when fewer than a majority of a group's members
answered at all (e.g. two of three stores killed or paused), "no master yet" when a majority
answered but none of them is master (an election in progress). :func:`bounded` is the hard
limit around a whole call: the call raises ``Unavailable`` no later than its deadline, whatever
it was waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from phxq.errors import BadArgument, Unavailable

T = TypeVar("T")


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is None or a positive finite number of seconds; else ``BadArgument``."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise BadArgument(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


@dataclass(slots=True)
class Budget:
    """A call's deadline (``time.monotonic()``) and each node's latest answer, by address.

    ``answers[addr]`` is a short description of what ``addr`` said (``"not master, knows no
    master"``) or ``None`` when it did not answer (``silent[addr]``: why, e.g. ``"timed out"``).
    """

    seconds: float
    deadline: float
    answers: dict[str, str] = field(default_factory=dict)
    silent: dict[str, str] = field(default_factory=dict)
    where: Any = None  # what the call is about, for its error (the client's (topic, queue))

    @classmethod
    def start(cls, timeout: float | None, default: float, extra: float = 0.0) -> Budget:
        """A budget of ``timeout`` seconds (``default`` when None) plus ``extra`` (a long poll's
        wait), from now. ``BadArgument`` for a timeout that is not a positive number."""
        seconds = check_timeout(timeout)
        seconds = (default if seconds is None else seconds) + extra
        return cls(seconds, time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def answered(self, addr: str, what: str) -> None:
        self.silent.pop(addr, None)
        self.answers[addr] = what

    def no_answer(self, addr: str, why: str) -> None:
        self.answers.pop(addr, None)
        self.silent[addr] = why

    def error(self, what: str, members: Sequence[str], names: Mapping[str, str]) -> Unavailable:
        """``Unavailable`` for ``what`` (e.g. ``"group 3"``) after the budget ran out, saying
        which of ``members`` (the addresses of the group's replicas; ``names``: a label for
        each, e.g. ``"store 2"``) answered what and which did not."""
        return Unavailable(self.explain(what, members, names), self.data(members))

    def explain(self, what: str, members: Sequence[str], names: Mapping[str, str]) -> str:
        def label(addr: str) -> str:
            name = names.get(addr)
            return f"{name} ({addr})" if name else addr

        heard = [a for a in members if a in self.answers]
        silent = [a for a in members if a not in self.answers]
        majority = len(members) // 2 + 1
        if not members:
            verdict = "no node answered"
        elif len(heard) < majority:
            verdict = f"no majority: {len(heard)} of {len(members)} answered, {majority} needed"
        else:
            verdict = "a majority answered but none is master (an election in progress?)"
        parts = [f"{what}: no master within {self.seconds:g}s: {verdict}"]
        if heard:
            parts.append("answered: " + ", ".join(f"{label(a)}: {self.answers[a]}" for a in heard))
        if silent:
            parts.append(
                "no answer: "
                + ", ".join(f"{label(a)}: {self.silent.get(a, 'not asked')}" for a in silent)
            )
        return "; ".join(parts)

    def data(self, members: Sequence[str]) -> dict[str, object]:
        return {
            "answered": [a for a in members if a in self.answers],
            "silent": [a for a in members if a not in self.answers],
            "timeout": self.seconds,
        }


def describe(exc: BaseException) -> str:
    """A short reason for a failed request (the error's message, else its class name)."""
    message = getattr(exc, "message", None) or str(exc)
    return message or type(exc).__name__


@contextlib.asynccontextmanager
async def bounded(budget: Budget, on_expiry: Callable[[], Unavailable]) -> AsyncIterator[Budget]:
    """Run the block within ``budget``: if the deadline passes first, the block is cancelled
    and ``on_expiry()`` raised instead (the outcome of a request that was in flight is
    unknown: retrying with the same dedup id is safe)."""
    timer = asyncio.timeout_at(_loop_time(budget.deadline))
    try:
        async with timer:
            yield budget
    except TimeoutError:
        if not timer.expired():
            raise  # not ours
        raise on_expiry() from None


def _loop_time(deadline: float) -> float:
    """``deadline`` (``time.monotonic()``) on the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
