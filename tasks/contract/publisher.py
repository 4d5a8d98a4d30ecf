"""Publish a task message with less than `send_task` does, for hot paths.

The message is Celery's own (`app.amqp.as_task_v2`, protocol 2) and its envelope is
kombu's (`channel.prepare_message`, `basic_publish`), so any Celery worker reads it.
What is left out is what costs more than the message itself on a busy bot: Celery's
publish signals, the producer pool, kombu's exchange and binding lookups (messages go
straight to their queue through the default exchange), and the retry machinery (a
failure is one reconnect and one more try, then the caller's fallback takes over).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from celery import Celery
from kombu import Connection
from kombu.utils.json import dumps

from tasks.contract.failures import BROKER_UNAVAILABLE
from tasks.observability import request_id

# What a publish raises when the broker cannot take a message now (down, or refusing
# writes: maxmemory, NOREPLICAS, READONLY, MISCONF); callers fall back on these.
BROKER_DOWN = BROKER_UNAVAILABLE


class LeanPublisher:
    def __init__(self, app: Celery, connection: Connection):
        self._app = app
        self._connection = connection
        self._channel = None

    def publish(
        self,
        name: str,
        args: list[Any],
        task_id: str,
        queue: str,
        argsrepr: str,
        reply_to: str | None = None,
        expires: datetime | None = None,
    ) -> None:
        """Send task `name` to `queue`; raises one of BROKER_DOWN when the broker cannot take it."""
        headers, properties, body, _ = self._app.amqp.as_task_v2(
            task_id, name, args=args, argsrepr=argsrepr, kwargsrepr="{}", reply_to=reply_to, expires=expires
        )
        if (rid := request_id.current()) is not None:
            headers[request_id.HEADER] = rid  # the worker logs its handling of the message with it
        payload = dumps(body)
        try:
            self._send(payload, headers, properties, queue)
        except self._connection.connection_errors:
            self._reset()  # a stale connection: one fresh try before giving up
            self._send(payload, headers, properties, queue)

    def close(self) -> None:
        self._reset()

    def _send(self, payload: str, headers: dict, properties: dict, queue: str) -> None:
        if self._channel is None:
            self._channel = self._connection.default_channel
        message = self._channel.prepare_message(
            payload,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            properties={**properties, "delivery_mode": 2},
        )
        self._channel.basic_publish(message, exchange="", routing_key=queue)

    def _reset(self) -> None:
        self._channel = None
        # A broken connection may fail to close cleanly; it is dropped either way.
        with contextlib.suppress(Exception):
            self._connection.collect()
