"""Celery's consumer, with two changes: a trade message it cannot run is dead-lettered, and a
RabbitMQ queue declared otherwise than the contract is left unconsumed instead of ending the worker.

Celery logs a message whose body it cannot decode (JSON nested deeper than Python's
parser goes), whose content type it refuses (pickle: never unpickled), or whose task it
does not know, and then drops it: it can never run, and it would loop otherwise. For a
journal such a message is an entry that can never be stored (class (b),
`tasks.contract.failures`), so on the trades queue it is kept in `dead-letter/` first, as it came.

RabbitMQ refuses the contract's declaration of a queue that exists with other arguments (an
older deployment's classic `trades`), and Celery takes that refusal for an unrecoverable
error: the worker exits. So on every connection, before Celery declares its queues, each
is asked first (`tasks.contract.queue_agreement`); a disagreeing one is set aside with an
error that names it and the command that fixes it (`flask --app web queues migrate`), the
others are consumed, and the set-aside ones are asked again every `RECHECK_S` until they
agree, then consumed.

Selected by `worker_consumer` in celeryconfig.
"""

from __future__ import annotations

import logging
import time

from celery.worker.consumer import Consumer

from tasks.contract import TRADES_QUEUE, brief, declaration_of, queue_disagreement
from tasks.worker.journal import dead_letter

log = logging.getLogger(__name__)

RECHECK_S = 10.0
REPEAT_ERROR_S = 60.0  # how often a queue still set aside is named again in the log


class JournalConsumer(Consumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_aside: set[str] = set()
        self._rechecking = False
        self._last_said = 0.0

    def connect(self):
        connection = super().connect()
        if connection.transport.driver_type == "amqp":
            self._set_aside_disagreeing(connection)
        return connection

    def _set_aside_disagreeing(self, connection) -> None:
        queues = self.app.amqp.queues
        for name in list(queues.consume_from):
            found = queue_disagreement(connection, name)
            if found is not None:
                self._last_said = time.monotonic()
                log.error("%s", found.describe())
                queues.deselect(name)  # Celery declares only what it consumes
                self._set_aside.add(name)
        if self._set_aside and not self._rechecking:
            self._rechecking = True
            # The timer fires in the consumer's own loop, which owns the connection.
            self.timer.call_repeatedly(RECHECK_S, self._consume_agreeing)

    def _consume_agreeing(self) -> None:
        if not self._set_aside or self.task_consumer is None or self.connection is None:
            return
        for name in sorted(self._set_aside):
            try:
                found = queue_disagreement(self.connection, name)
            except (*self.connection_errors, *self.channel_errors, OSError) as exc:
                log.warning("could not ask RabbitMQ about queue %r (asking again): %s", name, brief(exc))
                return
            if found is not None:
                if time.monotonic() - self._last_said >= REPEAT_ERROR_S:
                    self._last_said = time.monotonic()
                    log.error("%s", found.describe())
                continue
            self.app.amqp.queues.select_add(declaration_of(name))
            self.add_task_queue(name)
            self._set_aside.discard(name)
            log.info("queue %r is the contract's now: consuming it", name)

    def on_decode_error(self, message, exc):
        if not self._dead_lettered(message, "undecodable", exc):
            super().on_decode_error(message, exc)

    def on_invalid_task(self, body, message, exc):
        if not self._dead_lettered(message, "invalid", exc):
            super().on_invalid_task(body, message, exc)

    def on_unknown_task(self, body, message, exc):
        if not self._dead_lettered(message, "unknown task", exc):
            super().on_unknown_task(body, message, exc)

    def _dead_lettered(self, message, reason: str, exc: BaseException) -> bool:
        """Dead-letter a trades message Celery cannot run; False for other queues' messages."""
        if (message.delivery_info or {}).get("routing_key") != TRADES_QUEUE:
            return False
        headers = message.headers if isinstance(message.headers, dict) else {}
        kept = {"task": headers.get("task"), "id": headers.get("id"), "content_type": message.content_type}
        try:
            dead_letter(f"{reason}: {brief(exc)}", {**kept, "body": message.body})
        except Exception as spool_error:  # the disk refused: left unacknowledged, to come back
            log.error("trades message %s kept unacknowledged: %s", kept["id"], brief(spool_error))
            return True
        log.error(
            "trades message %s (%s) dead-lettered, %s: %s", kept["id"], kept["task"], reason, brief(exc)
        )
        message.ack()
        return True
