"""The queues on RabbitMQ, declared the same way by every side (worker, bot, web, a
`send_task` bot): RabbitMQ refuses a declaration whose arguments differ from the queue's
(PRECONDITION_FAILED), so they are defined here once. Redis brokers do not use them.

* `trades`: a durable quorum queue (replicated, fsynced before it confirms a publish). A
  message returned to it more than `TRADES_DELIVERY_LIMIT` times is dead-lettered to
  `trades.dead-letter`, which the trades worker drains into the dead-letter spool.
* `predict`: a durable classic queue. Predictions are transient (each has `expires`, and
  a caller waits seconds at most), so quorum replication buys nothing for them, and a
  classic queue keeps the prediction path's latency low.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from tasks.contract.names import PREDICT_QUEUE, TRADES_DEAD_LETTER_QUEUE, TRADES_QUEUE

# RabbitMQ's backstop behind the project's own cap (JOURNAL_MAX_REDELIVERIES, default 5,
# which dead-letters a message on its cap+1-th delivery). Queue arguments cannot change
# once declared, so this is a constant rather than a setting; it is well above the cap
# because RabbitMQ also counts returns that are no fault of the message (a worker's
# restart or lost connection returns everything it had prefetched).
TRADES_DELIVERY_LIMIT = 20

_DEFAULT_EXCHANGE = Exchange("", type="direct")

TRADES_QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-delivery-limit": TRADES_DELIVERY_LIMIT,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": TRADES_DEAD_LETTER_QUEUE,
}


def amqp_queues() -> tuple[Queue, ...]:
    """Celery's `task_queues` on RabbitMQ: what a worker consumes and a bot declares."""
    return (
        Queue(TRADES_QUEUE, routing_key=TRADES_QUEUE, durable=True, queue_arguments=TRADES_QUEUE_ARGUMENTS),
        Queue(PREDICT_QUEUE, routing_key=PREDICT_QUEUE, durable=True),
    )


def trades_dead_letter_queue() -> Queue:
    """Where RabbitMQ puts a trade message past its delivery limit (nobody consumes it as
    tasks: the trades worker moves its messages into the dead-letter spool)."""
    return Queue(
        TRADES_DEAD_LETTER_QUEUE,
        exchange=_DEFAULT_EXCHANGE,
        routing_key=TRADES_DEAD_LETTER_QUEUE,
        durable=True,
    )


def declaration_of(queue_name: str) -> Queue | None:
    """The contract's declaration of `queue_name` (None for a queue it does not define)."""
    return {queue.name: queue for queue in (*amqp_queues(), trades_dead_letter_queue())}.get(queue_name)
