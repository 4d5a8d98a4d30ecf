"""Celery's consumer, with one change: a trade message it cannot run is dead-lettered.

Celery logs a message whose body it cannot decode (JSON nested deeper than Python's
parser goes), whose content type it refuses (pickle: never unpickled), or whose task it
does not know, and then drops it: it can never run, and it would loop otherwise. For a
journal such a message is an entry that can never be stored (class (b),
`tasks.contract.failures`), so on the trades queue it is kept in `dead-letter/` first, as it came.
Selected by `worker_consumer` in celeryconfig.
"""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer

from tasks.contract import TRADES_QUEUE, brief
from tasks.worker.journal import dead_letter

log = logging.getLogger(__name__)


class JournalConsumer(Consumer):
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
