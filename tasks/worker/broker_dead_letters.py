"""RabbitMQ's dead letters into the project's: a trades message RabbitMQ returned more
than its delivery limit (`tasks.contract.queues`) lands in `trades.dead-letter`, and beat
runs this task to move each one into the spool's `dead-letter/`, where a person looks.

The trades worker declares that queue when it starts (so RabbitMQ never drops a dead
letter for want of it); with a Redis broker neither happens.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery.signals import worker_ready

from tasks import app
from tasks.contract import (
    BROKER_UNAVAILABLE,
    DRAIN_DEAD_LETTER_QUEUE_TASK,
    TRADES_DELIVERY_LIMIT,
    brief,
    is_redis_url,
    trades_dead_letter_queue,
)
from tasks.worker.journal import dead_letter

log = logging.getLogger(__name__)

MAX_PER_RUN = 1000  # a run ends; beat starts the next one a few seconds later
REASON = f"poison: RabbitMQ dead-lettered it after more than {TRADES_DELIVERY_LIMIT} deliveries"


@worker_ready.connect
def declare_dead_letter_queue(sender: Any = None, **_: Any) -> None:
    consumer_app = getattr(sender, "app", None) or app
    if is_redis_url(consumer_app.conf.broker_url or ""):
        return
    try:
        with consumer_app.connection_for_write() as connection:
            trades_dead_letter_queue()(connection.default_channel).declare()
    except BROKER_UNAVAILABLE as exc:  # the drain task declares it too
        log.warning("could not declare %s yet: %s", trades_dead_letter_queue().name, brief(exc))


@app.task(name=DRAIN_DEAD_LETTER_QUEUE_TASK, ignore_result=False)
def drain_dead_letter_queue() -> dict[str, int] | None:
    """Move what RabbitMQ dead-lettered into `dead-letter/`; None when it cannot now."""
    moved = 0
    try:
        with app.connection_for_write() as connection:
            queue = trades_dead_letter_queue()(connection.default_channel)
            queue.declare()
            while moved < MAX_PER_RUN and (message := queue.get(no_ack=False)) is not None:
                try:
                    dead_letter(REASON, letter_of(message))
                except OSError as exc:  # the disk refused: the message stays in RabbitMQ
                    log.error("dead-letter folder refused a RabbitMQ dead letter: %s", brief(exc))
                    return {"moved": moved}
                message.ack()
                moved += 1
    except BROKER_UNAVAILABLE as exc:
        log.warning("RabbitMQ's dead letters not drained now: %s", brief(exc))
        return None
    if moved:
        log.error("%d trades messages RabbitMQ dead-lettered moved to dead-letter/", moved)
    return {"moved": moved}


def letter_of(message: Any) -> dict[str, Any]:
    """What a person needs to see: the task, its id, its arguments and RabbitMQ's reasons."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    return {
        "task": headers.get("task"),
        "id": headers.get("id"),
        "delivery_count": headers.get("x-delivery-count"),
        # RabbitMQ's record of why and when (its timestamps as text, so the letter stays JSON).
        "x_death": json.loads(json.dumps(headers.get("x-death"), default=str)),
        "content_type": message.content_type,
        "body": _body_of(message),
    }


def _body_of(message: Any) -> Any:
    raw = message.body
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes | bytearray) else raw
    if message.content_type != "application/json":
        return text  # never decoded otherwise (pickle is never unpickled)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text
