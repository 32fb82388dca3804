"""Who owns which (consumer group, topic, queue) pair: a pure, deterministic assignment.

Every consumer daemon computes :func:`assign` from the same inputs (the pairs from the shared
cluster config, the live members and their weights from the lock service's KV), so they all
agree on the result without talking to each other. The locks then make it *safe*: a consumer
only processes a pair whose lock it holds; the assignment only makes it *balanced*.

Public API::

    Pair = tuple[str, str, int]                       # (consumer group, topic, queue)
    pairs_of(groups) -> list[Pair]                    # every pair of the configured groups
    quotas(members, total, salt) -> dict[str, int]    # pairs each member should own
    assign(pairs, members) -> dict[Pair, str]         # pair -> member name
    pair_lock_name(pair) -> str                       # "cg/<group>/<topic>/<queue>"

How: **weighted rendezvous hashing with bounded loads.** Each (member, pair) gets the score
``-weight / ln(u)`` with ``u`` a 64-bit hash of both in (0, 1) (the logarithmic method for
weighted HRW: a member of weight 2 wins twice as many pairs, in expectation, as one of weight 1).
Each consumer group is assigned on its own: each member has a quota of ``queues * weight /
sum(weights)`` of the group's pairs (largest remainder; ties by a hash of member and group),
and the group's pairs are handed out greedily by descending score: the best (member, pair)
match first, skipping members whose quota is full. So:

- *balanced*: every member owns its weighted share of every group (within one pair);
- *deterministic*: a function of the pair and member names and weights only (not of order);
- *minimal movement*: a pair's preference list does not depend on the other members, so when
  a member joins it takes mostly pairs that rank it first, and when one leaves mostly its own
  pairs move. Exact quotas add some churn: with 80 pairs in two groups and 2..12 members, a
  join moves 1.0-2.1x the ideal (what the newcomer takes) and a departure moves 0-1x the
  leaver's pairs among the others (tests/unit/test_consumer_assign.py). Plain modulo hashing
  would move nearly every pair.

Members with weight ``<= 0`` (or not finite) get nothing: a consumer that reports weight 0 is
drained.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

Pair = tuple[str, str, int]

_SCALE = float(1 << 64)


class _GroupLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def topic(self) -> str: ...


def pair_lock_name(pair: Pair) -> str:
    """The lock that guards ``pair``."""
    group, topic, queue = pair
    return f"cg/{group}/{topic}/{queue}"


def pairs_of(groups: Iterable[_GroupLike], queues_of: Mapping[str, int]) -> list[Pair]:
    """Every (consumer group, topic, queue) pair of ``groups``; ``queues_of`` maps a topic to
    its number of queues."""
    return [(g.name, g.topic, q) for g in groups for q in range(queues_of[g.topic])]


def _score(member: str, pair: Pair, weight: float) -> float:
    group, topic, queue = pair
    digest = hashlib.blake2b(
        f"{member}\x00{group}\x00{topic}\x00{queue}".encode(), digest_size=8
    ).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / _SCALE  # strictly inside (0, 1)
    return -weight / math.log(u)


def _live(members: Mapping[str, float]) -> dict[str, float]:
    return {m: float(w) for m, w in members.items() if math.isfinite(w) and w > 0}


def quotas(members: Mapping[str, float], total: int, salt: str = "") -> dict[str, int]:
    """How many of ``total`` pairs each member should own: its weighted share, rounded by
    largest remainder (ties broken by a hash of the member name and ``salt``, so every consumer
    computes the same and different consumer groups round in favour of different members)."""
    live = _live(members)
    if not live or total <= 0:
        return {m: 0 for m in live}
    weight_sum = sum(live.values())
    exact = {m: total * w / weight_sum for m, w in live.items()}
    out = {m: math.floor(x) for m, x in exact.items()}
    left = total - sum(out.values())

    def tie(m: str) -> bytes:
        return hashlib.blake2b(f"{salt}\x00{m}".encode(), digest_size=8).digest()

    for m in sorted(live, key=lambda m: (-(exact[m] - out[m]), tie(m), m))[:left]:
        out[m] += 1
    return out


def assign(pairs: Sequence[Pair], members: Mapping[str, float]) -> dict[Pair, str]:
    """Map each pair to one live member (see the module docstring). No live member: ``{}``.
    Each consumer group is balanced on its own, so its pairs (and its rate limit) are spread
    over the members rather than piling up on one."""
    live = _live(members)
    by_group: dict[str, list[Pair]] = {}
    for pair in dict.fromkeys(pairs):
        by_group.setdefault(pair[0], []).append(pair)
    owner: dict[Pair, str] = {}
    if live:
        for group, group_pairs in by_group.items():
            owner.update(_assign_group(group, group_pairs, live))
    return owner


def _assign_group(group: str, unique: list[Pair], live: dict[str, float]) -> dict[Pair, str]:
    room = quotas(live, len(unique), salt=group)
    ranked = sorted(
        ((_score(m, p, w), m, p) for p in unique for m, w in live.items()),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    owner: dict[Pair, str] = {}
    for _score_value, member, pair in ranked:
        if pair in owner or room[member] == 0:
            continue
        owner[pair] = member
        room[member] -= 1
        if len(owner) == len(unique):
            break
    return owner


def owned_by(assignment: Mapping[Pair, str], member: str) -> set[Pair]:
    """The pairs ``assignment`` gives to ``member``."""
    return {p for p, m in assignment.items() if m == member}
