"""Transactions in the client: ``async with client.transaction() as txn: await txn.enqueue(...)``.

What it promises (the protocol: :mod:`phxq.store.txn`):

- ``await txn.enqueue(topic, payload, key=..., queue=..., headers=..., dedup_id=...)`` buffers
  a message (any topics, queues, groups and store sets); nothing leaves until
  :meth:`Transaction.prepare`.
- ``await txn.prepare()`` writes every message as a *half message*: the home group's (the
  group of the first message) first, then the other groups' in parallel. When it returns,
  all of them are durable on a majority of their groups and invisible to every reader. Until
  the producer decides, the store waits ``timeout`` seconds; then it asks the producer group's
  check-back handler (``[[producer_group]] check``) or, without one, rolls back.
- ``await txn.commit()`` (prepares first if needed) writes the decision in the home group --
  the single source of truth -- and asks every participant group to apply it; it returns one
  :class:`~phxq.client.types.Ack` per message, in enqueue order, with the offset each got at
  commit (``None`` for a group that had not applied it yet: it will, from the decision,
  without the producer). ``TransactionAborted`` if the decision turned out to be a rollback
  (the store rolled back a transaction undecided past its timeout, or an operator did).
- ``await txn.rollback()``: none of the messages ever becomes visible. Idempotent; a no-op
  before ``prepare``.
- As a context manager: commit on normal exit, rollback on an exception (which propagates).
- Retries (``Unavailable``, a new master) resend the same transaction id and part numbers, so a
  prepare or decision applies once; deciding twice answers with the first decision.
- ``prepare``, ``commit`` and ``rollback`` take ``timeout=`` (seconds this call may take;
  default the client's ``retry_timeout``), then raise ``Unavailable`` -- like Kafka's
  ``commitTransaction(timeout)``; not the transaction's own ``timeout`` (how long the store
  waits for the decision). An ``Unavailable`` decision may still have been written: calling
  ``commit()`` / ``rollback()`` again answers with the decision the home group holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from phxq.budget import Budget
from phxq.client.types import Ack
from phxq.errors import BadArgument, PhxqError, TransactionAborted

if TYPE_CHECKING:
    from phxq.client.client import Client

DEFAULT_TIMEOUT: Final = 10.0  # seconds the store waits for the decision before checking back


class Transaction:
    """One transaction (see the module docstring); made by ``Client.transaction()``."""

    def __init__(self, client: Client, *, producer_group: str | None, timeout: float) -> None:
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
            raise BadArgument(f"timeout must be in (0, 86400] seconds, got {timeout!r}")
        if producer_group is not None and not isinstance(producer_group, str):
            raise BadArgument("producer_group must be a str or None")
        self.id = os.urandom(16).hex()
        self.producer_group = producer_group
        self.timeout = float(timeout)
        self._client = client
        # (topic, queue, [payload, key, headers, dedup_id]) in enqueue order
        self._messages: list[tuple[str, int, list[Any]]] = []
        self._state = "open"  # open -> prepared -> committed | rolled_back
        self._home: tuple[str, int] | None = None  # topic and queue of the home's first message
        # (route = (store set, group), topic) -> [(queue, part, positions)]
        self._plan: dict[tuple[tuple[int, int], str], list[tuple[int, int, list[int]]]] = {}

    @property
    def state(self) -> str:
        return self._state

    @property
    def participants(self) -> list[tuple[str, int]]:
        """After :meth:`prepare`: one ``(topic, queue)`` in each group the transaction wrote,
        the home's first (its first message's). With :func:`decide`, all a process that did
        not prepare the transaction (a stateless gateway) needs to decide and apply it."""
        if self._home is None:
            raise BadArgument(f"transaction {self.id} is not prepared")
        out = [self._home]
        seen = {g for (g, t), batches in self._plan.items() if (t, batches[0][0]) == self._home}
        for (group, topic), batches in self._plan.items():
            if group not in seen:
                seen.add(group)
                out.append((topic, batches[0][0]))
        return out

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.commit()
        else:
            # The original exception matters more; if this fails the store rolls back at timeout.
            with contextlib.suppress(PhxqError):
                await self.rollback()

    async def enqueue(
        self,
        topic: str,
        payload: bytes,
        *,
        key: str | None = None,
        queue: int | None = None,
        dedup_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Add a message to the transaction (it leaves at :meth:`prepare`)."""
        if self._state != "open":
            raise BadArgument(f"transaction {self.id} is {self._state}: no more messages")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise BadArgument("payload must be bytes")
        if key is not None and not isinstance(key, str):
            raise BadArgument("key must be a str or None")
        if dedup_id is not None and not isinstance(dedup_id, str):
            raise BadArgument("dedup_id must be a str or None")
        cmap = await self._client.cluster_map()
        q = self._client._queue_of(cmap, topic, key, queue)
        wire = [bytes(payload), key, dict(headers or {}), dedup_id]
        self._messages.append((topic, q, wire))

    async def prepare(self, *, timeout: float | None = None) -> None:
        """Write every message as a half message (durable, invisible); see the module doc.
        ``Unavailable`` after ``timeout`` seconds (default the client's ``retry_timeout``)."""
        budget = self._client._within(timeout)
        if not self._messages:
            return await self._prepare(budget)  # BadArgument (or nothing to do)
        topic, queue, _ = self._messages[0]
        async with self._client._bounded(budget, topic, queue):
            await self._prepare(budget)

    async def _prepare(self, budget: Budget) -> None:
        if self._state == "prepared":
            return
        if self._state != "open":
            raise BadArgument(f"transaction {self.id} is {self._state}")
        if not self._messages:
            raise BadArgument("a transaction needs at least one message")
        cmap = await self._client.cluster_map()
        home_topic, home_queue, _ = self._messages[0]
        home = cmap.route(home_topic, home_queue)  # (store set, group)
        multi = len(set(cmap.sets.values())) > 1
        self._home = (home_topic, home_queue)
        # One request per (set and group, topic); one part (prepare entry) per queue within it.
        plan: dict[tuple[tuple[int, int], str], dict[int, tuple[int, list[int], list[Any]]]] = {}
        part = 0
        for position, (topic, q, wire) in enumerate(self._messages):
            batches = plan.setdefault((cmap.route(topic, q), topic), {})
            if q not in batches:
                batches[q] = (part, [], [])
                part += 1
            batches[q][1].append(position)
            batches[q][2].append(wire)
        # Every (group, part), with its set when not the home's (a part on the home's set is
        # [group, part] as before sets: the home's prepare entries keep their old bytes).
        expect = [
            [r[1], p] if r[0] == home[0] else [r[1], p, r[0]]
            for (r, _), batches in plan.items()
            for p, _, _ in batches.values()
        ]
        self._plan = {
            key: [(q, p, positions) for q, (p, positions, _) in batches.items()]
            for key, batches in plan.items()
        }

        async def send(group: tuple[int, int], topic: str) -> None:
            batches = plan[(group, topic)]
            params: dict[str, Any] = {
                "txn": self.id,
                "home": home[1],
                "timeout": self.timeout,
                "producer_group": self.producer_group,
                "topic": topic,
                "expect": expect if group == home else [],
                "batches": [[q, p, wire] for q, (p, _, wire) in batches.items()],
            }
            if multi:
                # The home as [set, group], and the set this request is meant for: should the
                # queue move meanwhile, the store it reaches refuses it (never a part whose
                # home it would misread; the transaction then fails, undecided: rolled back).
                params["home"] = list(home)
                params["set"] = group[0]
            queue = next(iter(batches))
            await self._client._call_master(topic, queue, "txn_prepare", params, budget=budget)

        home_keys = [k for k in plan if k[0] == home]
        for group, topic in home_keys:  # the home first: see phxq.store.txn
            await send(group, topic)
        others = [send(g, t) for g, t in plan if g != home]
        if others:
            results = await asyncio.gather(*others, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        self._state = "prepared"

    async def commit(self, *, timeout: float | None = None) -> list[Ack]:
        """Prepare if needed, decide commit, apply it everywhere; one ack per message.
        ``Unavailable`` when the decision is not written within ``timeout`` seconds (default
        the client's ``retry_timeout``); applying it after that is left to the stores (offsets
        ``None``)."""
        budget = self._client._within(timeout)
        if self._state == "open" and self._messages:
            topic, queue, _ = self._messages[0]
            async with self._client._bounded(budget, topic, queue):
                await self._prepare(budget)
        elif self._state == "open":
            await self._prepare(budget)  # BadArgument: no messages
        if self._state != "prepared":
            raise BadArgument(f"transaction {self.id} is {self._state}")
        decision = await self._decide(True, budget)
        if not decision["commit"]:
            self._state = "rolled_back"
            raise TransactionAborted(
                f"transaction {self.id} was rolled back ({decision.get('reason')})",
                {"txn": self.id, "reason": decision.get("reason")},
            )
        self._state = "committed"
        return await self._resolve(budget)

    async def rollback(self, *, timeout: float | None = None) -> None:
        """Decide rollback: none of the messages ever becomes visible. ``Unavailable`` when
        the decision is not written within ``timeout`` seconds (default ``retry_timeout``)."""
        if self._state in ("rolled_back", "open") and self._home is None:
            self._state = "rolled_back"
            return
        if self._state == "committed":
            raise BadArgument(f"transaction {self.id} is committed")
        budget = self._client._within(timeout)
        decision = await self._decide(False, budget)
        self._state = "committed" if decision["commit"] else "rolled_back"
        if decision["commit"]:
            raise BadArgument(f"transaction {self.id} was already committed")
        await self._resolve(budget)

    async def _decide(self, commit: bool, budget: Budget | None = None) -> dict[str, Any]:
        assert self._home is not None
        budget = budget or self._client._within(None)
        topic, queue = self._home
        params = {"txn": self.id, "topic": topic, "queue": queue, "commit": commit}
        async with self._client._bounded(budget, topic, queue):
            result: dict[str, Any] = await self._client._call_master(
                topic, queue, "txn_decide", params, budget=budget
            )
        return result

    async def _resolve(self, budget: Budget | None = None) -> list[Ack]:
        """Ask each participant to apply the decision now; acks in enqueue order."""
        budget = budget or self._client._within(None)
        offsets: list[int | None] = [None] * len(self._messages)
        positions: dict[tuple[str, int], list[int]] = {}
        for (_, topic), batches in self._plan.items():
            for q, _, ps in batches:
                positions[(topic, q)] = list(ps)

        async def one(group: tuple[int, int], topic: str) -> None:
            queue = self._plan[(group, topic)][0][0]
            params = {"txn": self.id, "topic": topic, "queue": queue}
            try:
                reply = await self._client._call_master(
                    topic, queue, "txn_resolve", params, budget=budget
                )
            except PhxqError:
                return  # decided: the group's master applies it on its own (phxq.store.txn)
            # Per queue, released in enqueue order (ids increase within a queue's part).
            for topic_, q, offset in reply.get("offsets") or []:
                waiting = positions.get((topic_, q))
                if waiting:
                    offsets[waiting.pop(0)] = offset

        # One call per group: it applies the decision to all of the group's half messages.
        first_topic: dict[tuple[int, int], str] = {}
        for g, t in self._plan:
            first_topic.setdefault(g, t)
        await asyncio.gather(*(one(g, t) for g, t in first_topic.items()))
        return [Ack(topic, q, offsets[i]) for i, (topic, q, _) in enumerate(self._messages)]


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` found: the decision in force (the first one written, maybe not
    the one asked for), who made it, ``(topic, queue, offset)`` of each message this call
    released (a participant that applied it on its own is not listed), and ``known``: False
    when the home group holds no such transaction (never prepared there, or finished and
    forgotten: ``phxq.store.txn.REMEMBER``), so the decision written concerns nothing."""

    commit: bool
    reason: str | None
    released: tuple[tuple[str, int, int], ...]
    known: bool


async def decide(
    client: Client, txn: str, participants: list[tuple[str, int]], commit: bool
) -> Decision:
    """Decide a prepared transaction by its id and :attr:`Transaction.participants` (the
    home's first), then ask each participant to apply the decision now (see
    :class:`Decision`; never raises for a contradicting decision)."""
    topic, queue = participants[0]
    params = {"txn": txn, "topic": topic, "queue": queue, "commit": commit}
    decision = await client._call_master(topic, queue, "txn_decide", params)
    released: list[tuple[str, int, int]] = []
    known = True

    async def one(i: int, topic: str, queue: int) -> None:
        nonlocal known
        params = {"txn": txn, "topic": topic, "queue": queue}
        try:
            reply = await client._call_master(topic, queue, "txn_resolve", params)
        except PhxqError:
            return  # decided: the group's master applies it on its own (phxq.store.txn)
        if i == 0 and reply.get("commit") is None:
            known = False  # decided, yet the home knows neither an open nor a finished one
        released.extend((t, q, o) for t, q, o in reply.get("offsets") or [])

    await asyncio.gather(*(one(i, t, q) for i, (t, q) in enumerate(participants)))
    return Decision(bool(decision["commit"]), decision.get("reason"), tuple(released), known)


async def decision_of(client: Client, txn: str, home: tuple[str, int]) -> bool | None:
    """The decision of a transaction as its home group knows it (``home``: its first
    participant): True committed, False rolled back, None undecided (after waiting about two
    seconds for one) or unknown there (never prepared, or finished and forgotten)."""
    topic, queue = home
    params = {"txn": txn, "topic": topic, "queue": queue}
    reply = await client._call_master(topic, queue, "txn_resolve", params)
    commit = reply.get("commit")
    return None if commit is None else bool(commit)
