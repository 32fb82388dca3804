"""A seeded simulation of the queue move protocol (phxq.store.mover, phxq.store.move_state).

Two groups' state machines (set A's and set B's group of the queue) apply "chosen" instances
built from whatever was proposed, in an order the seed picks; around them:

- producers, one message of a key in flight at a time, each with a dedup id; replies get
  lost (the producer retries with the same id, possibly at the other set); a producer follows
  ``QueueMoved`` to set B; B refuses the queue until it adopted it (the store's placement
  check);
- a move driver whose steps are duplicated and reordered as after failovers: seals proposed
  again, the seal's answer read from A's state at different moments (a second driver after a
  failover), adopt entries re-proposed, some proposals lost;
- a consumer committing cursors on A before the seal and between the seal and the adopt.

At the end the queue is read as a client reads it: A's messages up to the seal, then B's
from the adopt on, offsets through each tenure. Checked: every acked message is read exactly
once at its acked offset, offsets increase, per-key order holds, and B's cursor is at least
the cursor A had at the seal. A planted bug (the dedup window not carried over) must be caught.
A failure prints ``seed=N``; ``pytest tests/sim/test_queue_move_sim.py --sim-seed N`` replays it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from phxq.errors import QueueMoved
from phxq.store.entries import CommitEntry, EnqueueEntry, Message, encode_entry
from phxq.store.move_entries import AdoptEntry, SealEntry, encode_move
from phxq.store.move_state import Sealed
from phxq.store.schedule import SCHEDULED_FLAG
from phxq.store.state import Committed, Enqueued, Rejected, StoreState

TOPIC, QUEUE = "t", 0
KEY = (TOPIC, QUEUE)
KEYS = 4
PER_KEY = 12
MOVE = "m1"


@dataclass
class Group:
    name: str
    state: StoreState = field(default_factory=lambda: StoreState(0, dedup_window=1e9))
    instance: int = 0
    pending: list[tuple[bytes, object]] = field(default_factory=list)  # (item, who waits)
    positions: list[tuple[int, int]] = field(default_factory=list)  # of the queue, in order

    def propose(self, item: bytes, waiter: object) -> None:
        self.pending.append((item, waiter))

    def choose(self, rng: random.Random) -> list[tuple[object, object]]:
        """One instance of some pending items (in a shuffled order: a new master's
        re-proposals race the old one's); their results with their waiters."""
        if not self.pending:
            return []
        rng.shuffle(self.pending)
        take = rng.randint(1, len(self.pending))
        batch, self.pending = self.pending[:take], self.pending[take:]
        self.instance += 1
        items = [item for item, _ in batch]
        results = self.state.apply(self.instance, items)
        for key, index, _ in self.state.index_entries(self.instance, items):
            if key == KEY:
                self.positions.append((self.instance, index))
        return [(waiter, result) for (_, waiter), result in zip(batch, results, strict=True)]


class World:
    def __init__(self, seed: int, *, carry_dedup: bool = True) -> None:
        self.rng = random.Random(seed)
        self.carry_dedup = carry_dedup
        self.a, self.b = Group("A"), Group("B")
        # Both groups have history of their own (other queues): B's log far behind A's.
        for _ in range(self.rng.randint(0, 30)):
            self.a.propose(encode_entry(EnqueueEntry(TOPIC, 1, (Message(b"o"),), 1.0)), None)
            self.a.choose(self.rng)
        self.next_seq = dict.fromkeys(range(KEYS), 0)
        self.in_flight: dict[int, tuple[int, str]] = {}  # key -> (seq, group it went to)
        self.moved_seen: set[int] = set()  # keys whose producer learned of the move
        self.acked: dict[tuple[int, int], int] = {}  # (key, seq) -> offset
        self.seal: Sealed | None = None
        self.adopted = False
        self.sealed_cursor: int | None = None
        self.step_count = 0

    # ---------------------------------------------------------------------------- actors

    def produce(self, key: int) -> None:
        if key in self.in_flight:
            seq, _ = self.in_flight[key]  # a retry of a lost reply: same dedup id
        elif self.next_seq[key] < PER_KEY:
            seq = self.next_seq[key]
            self.next_seq[key] += 1
        else:
            return
        stale = self.rng.random() < 0.2  # a stale map: the old set once more
        to_b = key in self.moved_seen and not stale
        if to_b and not self.state_open_on_b():
            to_b = False  # B refuses the queue until it adopted it: back to A
        group = self.b if to_b else self.a
        self.in_flight[key] = (seq, group.name)
        msg = Message(f"{key}:{seq}".encode(), str(key), {}, f"{key}-{seq}")
        group.propose(encode_entry(EnqueueEntry(TOPIC, QUEUE, (msg,), 1.0)), ("enq", key, seq))

    def state_open_on_b(self) -> bool:
        return self.b.state.moves.is_open(KEY)

    def drive(self) -> None:
        """One driver step, as a (possibly duplicated or stale) driver would take it."""
        roll = self.rng.random()
        if roll < 0.4 or self.seal is None:
            self.a.propose(encode_move(SealEntry(TOPIC, QUEUE, MOVE, 2)), ("seal",))
        elif roll < 0.9:
            self.b.propose(self.adopt_entry(), ("adopt",))

    def adopt_entry(self) -> bytes:
        """What ``move_seal`` answers, read from A's state now (after the seal)."""
        assert self.seal is not None
        state = self.a.state
        cursors = tuple(
            (cg, off, tok) for (cg, t, q), (off, tok) in state.cursors().items() if (t, q) == KEY
        )
        mine = {state.moves.offset(KEY, i, x) for i, x in self.a.positions}
        dedup = tuple(
            (at, d, ref)
            for at, t, d, ref in state._dedup.rows()
            if t == TOPIC and ref < SCHEDULED_FLAG and ref in mine
        )
        if not self.carry_dedup:
            dedup = ()
        end = state.end_offset(TOPIC, QUEUE)
        return encode_move(AdoptEntry(TOPIC, QUEUE, MOVE, 1, self.seal.sealed, end, cursors, dedup))

    def consume(self) -> None:
        """A consumer commits on A (before the seal, or between seal and adopt)."""
        if self.adopted or not self.a.positions:
            return
        instance, index = self.rng.choice(self.a.positions)
        offset = self.a.state.moves.offset(KEY, instance, index)
        current = self.a.state.cursor("g", TOPIC, QUEUE)
        if current is None or offset > current:
            self.a.propose(encode_entry(CommitEntry("g", TOPIC, QUEUE, offset, 1)), ("commit",))

    # ----------------------------------------------------------------------------- steps

    def deliver(self, results: list[tuple[object, object]]) -> None:
        for waiter, result in results:
            if waiter is None:
                continue
            kind = waiter[0]  # type: ignore[index]
            if kind == "seal" and isinstance(result, Sealed):
                assert self.seal in (None, result), "a second seal differs from the first"
                if self.seal is None:
                    self.seal = result
                    self.sealed_cursor = self.a.state.cursor("g", TOPIC, QUEUE)
            elif kind == "adopt":
                self.adopted = self.adopted or not isinstance(result, Rejected)
            elif kind == "enq":
                _, key, seq = waiter  # type: ignore[misc]
                if self.rng.random() < 0.25:
                    continue  # the reply is lost: the producer retries with the same id
                if isinstance(result, Rejected):
                    assert isinstance(result.error, QueueMoved), result
                    self.moved_seen.add(key)
                    continue  # retried (to B)
                assert isinstance(result, Enqueued)
                offset = result.offsets[0]
                prior = self.acked.setdefault((key, seq), offset)
                assert prior == offset, f"{key}:{seq} acked at {prior} and at {offset}"
                if self.in_flight.get(key, (None,))[0] == seq:
                    del self.in_flight[key]
            elif kind == "commit":
                assert isinstance(result, (Committed, Rejected))

    def step(self) -> None:
        self.step_count += 1
        roll = self.rng.random()
        if roll < 0.45:
            self.produce(self.rng.randrange(KEYS))
        elif roll < 0.55 and self.step_count > 20:
            self.drive()
        elif roll < 0.6:
            self.consume()
        else:
            group = self.a if self.rng.random() < 0.5 else self.b
            if group.pending and self.rng.random() < 0.05:
                group.pending.pop(self.rng.randrange(len(group.pending)))  # lost with a master
            self.deliver(group.choose(self.rng))

    def done(self) -> bool:
        return (
            self.adopted
            and not self.in_flight
            and all(n == PER_KEY for n in self.next_seq.values())
        )

    def run(self, max_steps: int = 20_000) -> None:
        while not self.done():
            assert self.step_count < max_steps, "no progress"
            self.step()
        while self.a.pending or self.b.pending:  # leftovers (duplicates) get chosen too
            self.deliver(self.a.choose(self.rng) + self.b.choose(self.rng))

    # ----------------------------------------------------------------------------- check

    def read(self) -> list[tuple[int, str]]:
        """(offset, payload) of the queue as a client reads it across the move."""
        out: list[tuple[int, str]] = []
        assert self.seal is not None
        for group in (self.a, self.b):
            moves = group.state.moves
            pos, last, _ = moves.read_window(KEY, None if group is self.a else self.seal.sealed)
            for instance, index in group.positions:
                if pos is not None and (instance, index) <= pos:
                    continue
                if last is not None and instance > last:
                    continue
                out.append((moves.offset(KEY, instance, index), f"{instance}/{index}"))
        return out

    def check(self) -> None:
        rows = self.read()
        offsets = [o for o, _ in rows]
        assert offsets == sorted(set(offsets)), "offsets do not increase across the move"
        by_offset = {o: k for (k, _), o in self.acked.items()}
        assert len(by_offset) == len(self.acked), "two messages acked at one offset"
        assert set(by_offset) == set(offsets), (
            f"read {len(offsets)} messages, acked {len(self.acked)} "
            f"(missing {sorted(set(by_offset) - set(offsets))[:3]}, "
            f"extra {sorted(set(offsets) - set(by_offset))[:3]})"
        )
        seqs: dict[int, list[int]] = defaultdict(list)
        for o in offsets:
            seqs[by_offset[o]].append(o)
        for (key, seq), o in self.acked.items():
            assert seqs[key].index(o) == seq, f"key {key}: message {seq} out of order"
        cursor = self.b.state.cursor("g", TOPIC, QUEUE)
        if self.sealed_cursor is not None:
            assert cursor is not None and cursor >= self.sealed_cursor, "the cursor went back"


def test_moves_racing_failovers_lose_nothing_and_keep_order(sim_seeds: list[int]) -> None:
    for seed in sim_seeds:
        world = World(seed)
        try:
            world.run()
            world.check()
        except AssertionError as exc:
            raise AssertionError(f"seed={seed}: {exc}") from exc


def test_the_simulation_catches_a_move_that_forgets_the_dedup_window(
    sim_seeds: list[int],
) -> None:
    caught = 0
    for seed in sim_seeds[:100]:
        world = World(seed, carry_dedup=False)
        try:
            world.run()
            world.check()
        except AssertionError:
            caught += 1
    assert caught, "a planted bug (dedup ids not carried over) went unnoticed"
