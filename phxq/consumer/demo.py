"""Built-in handlers for trying phxq out. ``phxq dev`` delivers its "log" consumer group (topic
``orders``) to :func:`log_message`, so enqueued messages show up in ``logs/consumerdev.log``."""

from __future__ import annotations

import logging

from phxq.consumer.handlers import Delivery

log = logging.getLogger("phxq.consumer.demo")


async def log_message(delivery: Delivery) -> None:
    """Log the message and ack it."""
    log.info(
        "%s/%s q%d @%d key=%s attempt=%d: %r",
        delivery.consumer_group,
        delivery.topic,
        delivery.queue,
        delivery.offset,
        delivery.key,
        delivery.attempt,
        delivery.payload[:200],
    )
