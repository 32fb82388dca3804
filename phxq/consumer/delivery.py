"""Delivering one message of a pair: attempts with backoff, then dead letter or block.

Public API::

    Deliverer(pair, runtime, *, client, owner, timings, paxos_group, rng, drain)
    await deliverer.deliver(message, token) -> Result   # ACKED | DEAD_LETTERED | BLOCKED | ABANDONED

It hands each attempt to the group's handler (a :class:`~phxq.consumer.handlers.Delivery`),
retries a failed attempt after :func:`~phxq.consumer.pacing.backoff_delay` (the message keeps
its place), and after ``max_attempts`` enqueues it to the dead-letter topic with dedup id
``dlq/<group>/<topic>/<queue>/<offset>`` and ``phxq-dlq-*`` headers, or reports ``BLOCKED``
(``on_failure = "block"``). ``drain`` set during a backoff abandons the message (the next
owner retries it). See :mod:`phxq.consumer.pair` for the loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time

from phxq import metrics
from phxq.client import Client, Message
from phxq.consumer.assign import Pair, pair_lock_name
from phxq.consumer.group import GroupRuntime, Timings
from phxq.consumer.handlers import Delivery, Outcome
from phxq.consumer.pacing import backoff_delay
from phxq.errors import ClientError, Unavailable
from phxq.routing import split_offset

log = logging.getLogger("phxq.consumer")

MAX_ERROR_HEADER = 512


class Result(enum.Enum):
    ACKED = "acked"
    DEAD_LETTERED = "dead_lettered"
    BLOCKED = "blocked"
    ABANDONED = "abandoned"  # handoff during the backoff: not done, the next owner retries


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` for ``event``; True if it is set."""
    if event.is_set():
        return True
    # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation that comes just as
    # the event is set (a worker cancelled on a lost lease would carry on).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


class Deliverer:
    """See the module docstring."""

    def __init__(
        self,
        pair: Pair,
        runtime: GroupRuntime,
        *,
        client: Client,
        owner: str,
        timings: Timings,
        paxos_group: int,
        rng: random.Random,
        drain: asyncio.Event,
    ) -> None:
        self.group, self.topic, self.queue = pair
        self.lock_name = pair_lock_name(pair)
        self.runtime = runtime
        self._client = client
        self._owner = owner
        self._t = timings
        self._paxos_group = paxos_group
        self._rng = rng
        self._drain = drain
        # Labelled children looked up once: .labels() per message is measurable in profiles.
        self._delivered = metrics.CONSUMER_DELIVERED.labels(self.group)
        self._latency = metrics.CONSUMER_HANDLER_LATENCY.labels(self.group)
        self._acked = metrics.CONSUMER_ACKED.labels(self.group)
        self._failed = metrics.CONSUMER_FAILED.labels(self.group)

    def message_id(self, offset: int) -> str:
        """``<paxos group>-<instance>-<index>``: unique per message in the cluster."""
        instance, index = split_offset(offset)
        return f"{self._paxos_group}-{instance}-{index}"

    async def deliver(self, message: Message, token: int) -> Result:
        """Every attempt at ``message`` (backoff between), then dead letter or block."""
        cfg = self.runtime.config
        outcome = Outcome(False, "not attempted")
        attempt = 0
        for attempt in range(1, cfg.max_attempts + 1):
            delivery = Delivery(
                consumer_group=self.group,
                topic=self.topic,
                queue=self.queue,
                offset=message.offset,
                message_id=self.message_id(message.offset),
                payload=message.payload,
                key=message.key,
                headers=message.headers,
                enqueued_at=message.enqueued_at,
                attempt=attempt,
                consumer=self._owner,
                token=token,
            )
            self._delivered.inc()
            started = time.perf_counter()
            outcome = await self.runtime.handler(delivery)
            self._latency.observe(time.perf_counter() - started)
            if outcome.ok:
                self._acked.inc()
                return Result.ACKED
            self._failed.inc()
            log.info(
                "%s: offset %d attempt %d/%d failed: %s",
                self.lock_name,
                message.offset,
                attempt,
                cfg.max_attempts,
                outcome.reason,
            )
            if attempt == cfg.max_attempts:
                break
            delay = backoff_delay(
                attempt,
                base=self._t.backoff_base,
                cap=self._t.backoff_cap,
                jitter=self._rng.random(),
            )
            if await wait_event(self._drain, delay):
                return Result.ABANDONED
        if cfg.on_failure == "block":
            return Result.BLOCKED
        return await self._dead_letter(message, outcome, attempt)

    async def _dead_letter(self, message: Message, outcome: Outcome, attempts: int) -> Result:
        dlq = self.runtime.config.dead_letter
        assert dlq is not None  # the config fills it in whenever on_failure = "dead_letter"
        origin = {
            "phxq-dlq-group": self.group,
            "phxq-dlq-topic": self.topic,
            "phxq-dlq-queue": str(self.queue),
            "phxq-dlq-offset": str(message.offset),
            "phxq-dlq-attempts": str(attempts),
            "phxq-dlq-error": outcome.reason[:MAX_ERROR_HEADER],
        }
        headers = {**message.headers, **origin}
        dedup_id = f"dlq/{self.group}/{self.topic}/{self.queue}/{message.offset}"
        while True:
            try:
                await self._client.enqueue(
                    dlq, message.payload, key=message.key, headers=headers, dedup_id=dedup_id
                )
                break
            except Unavailable as exc:
                log.warning(
                    "%s: dead-lettering offset %d: %s", self.lock_name, message.offset, exc.message
                )
                if await wait_event(self._drain, 1.0):
                    return Result.ABANDONED
            except ClientError:
                if headers == origin:
                    raise
                # The original headers plus ours broke a store limit: keep ours, which say
                # where the message came from.
                headers = origin
        metrics.CONSUMER_DEAD_LETTERED.labels(self.group).inc()
        log.warning(
            "%s: offset %d dead-lettered to %s after %d attempts (%s)",
            self.lock_name,
            message.offset,
            dlq,
            attempts,
            outcome.reason,
        )
        return Result.DEAD_LETTERED
