"""Moved queues for :class:`phxq.Client` (``phxq admin queue move``; DESIGN §5.1).

A moved queue has segments on several store sets: each older set holds the offsets up to its
seal, the current set the ones above the last seal (``ClusterMap.history``). This mixin reads,
commits and looks up cursors across them:

- a read goes to the set holding the messages after its ``after`` offset; a sealed set with
  nothing more before its seal answers ``QueueMoved`` (seal offset, new set) and the read
  goes on there, before the client's map says so;
- a commit goes to the set holding its offset; a compare-and-set commit whose ``expect`` is
  on the old side of a seal first brings the new set's cursor (adopted at the seal, so
  possibly older than the commits the old set took since) up to ``expect``;
- a cursor is the newest of the queue's sets' (commits go where their offsets live, so the
  set committed to last has the newest).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from phxq.client.types import ClusterMap
from phxq.errors import BadArgument, QueueMoved, Unavailable, VersionMismatch

__all__ = ["MovesMixin"]


class MovesMixin:
    """The moved-queue half of :class:`phxq.Client` (see the module docstring)."""

    _call_master: Callable[..., Awaitable[Any]]
    _map_within: Callable[..., Awaitable[ClusterMap]]
    cluster_map: Callable[..., Awaitable[ClusterMap]]

    async def _commit_at(self, topic: str, q: int, params: dict[str, Any], budget: Any) -> None:
        """A commit at the set holding its offset (a moved queue's segments; ``QueueMoved``
        from a sealed set when the map does not know yet). A compare-and-set commit whose
        ``expect`` is on the old side of a seal first brings the new set's cursor (adopted at
        the seal) up to ``expect``: the old set is the one that knew it."""
        offset, expect = params["offset"], params.get("expect")
        at = offset - 1 if isinstance(offset, int) and offset > 0 else None
        cmap = await self._map_within(budget)
        to_set: int | None = None
        carried = False

        def crossing(cmap: ClusterMap) -> bool:
            return (
                isinstance(expect, int)
                and cmap.moved(topic, q)
                and cmap.set_for(topic, q, expect - 1 if expect else None)
                != cmap.set_for(topic, q, at)
            )

        while True:
            if not carried and crossing(cmap):
                await self._carry(topic, q, params, budget, at, to_set)
                carried = True
            try:
                await self._call_master(
                    topic,
                    q,
                    "commit",
                    params,
                    budget=budget,
                    after=at,
                    follow_moves=False,
                    to_set=to_set,
                )
                return
            except VersionMismatch:
                # The map may have changed during the call (the move completed) and the commit
                # gone to the new set: carry `expect` over if it now crosses, and try again.
                cmap = await self._map_within(budget)
                if carried or not crossing(cmap):
                    raise
            except QueueMoved as exc:
                sealed, target = exc.data.get("sealed"), exc.data.get("set")
                if not isinstance(target, int) or budget.remaining() <= 0:
                    raise
                to_set = target
                if not carried and isinstance(expect, int) and isinstance(sealed, int):
                    if expect <= sealed:
                        await self._carry(topic, q, params, budget, at, to_set)
                    carried = True
                cmap = await self._map_within(budget)

    async def _carry(
        self,
        topic: str,
        q: int,
        params: dict[str, Any],
        budget: Any,
        at: int | None,
        to_set: int | None,
    ) -> None:
        """Commit ``params['expect']`` (no compare-and-set) where ``params['offset']`` goes."""
        carry = {k: v for k, v in params.items() if k != "expect"}
        carry["offset"] = params["expect"]
        with contextlib.suppress(BadArgument):  # the cursor is past it there: the CAS decides
            await self._call_master(
                topic, q, "commit", carry, budget=budget, after=at, to_set=to_set
            )

    async def _cursor_of(self, group: str, topic: str, q: int, budget: Any) -> int | None:
        """The cursor of a queue: for a moved one, the newest of its sets' (commits go to the
        set holding their offset, so the set a consumer committed to last has the newest)."""
        cmap = await self._map_within(budget)
        params = {"group": group, "topic": topic, "queue": q}
        if not cmap.moved(topic, q):
            result = await self._call_master(topic, q, "cursor", params, budget=budget)
            return None if result is None else int(result)
        best: int | None = None
        segments = cmap.history.get(topic, {}).get(q, [])
        firsts = [None, *(sealed for _, sealed in segments)]
        for at in dict.fromkeys(firsts):
            got = await self._call_master(topic, q, "cursor", dict(params), budget=budget, after=at)
            if got is not None and (best is None or int(got) > best):
                best = int(got)
        return best

    async def _read(
        self, topic: str, q: int, params: dict[str, Any], wait: float, budget: Any
    ) -> Any:
        """``dequeue`` at the set holding the messages after ``params['after']``; a sealed
        set's ``QueueMoved`` (nothing more before its seal) moves on to the next set."""
        at = params.get("after")
        to_set: int | None = None
        while True:
            try:
                return await self._call_master(
                    topic,
                    q,
                    "dequeue",
                    params,
                    extra_time=wait,
                    budget=budget,
                    after=at,
                    follow_moves=False,
                    to_set=to_set,
                )
            except QueueMoved as exc:
                sealed, target = exc.data.get("sealed"), exc.data.get("set")
                if not isinstance(sealed, int) or budget.remaining() <= 0:
                    raise
                at = sealed if at is None else max(at, sealed)
                to_set = target if isinstance(target, int) else None
                with contextlib.suppress(Unavailable):
                    await self.cluster_map(refresh=True, timeout=budget.remaining())
