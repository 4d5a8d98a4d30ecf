"""Publish a task message with less than `send_task` does, for hot paths.

The message is Celery's own (`app.amqp.as_task_v2`, protocol 2) and its envelope is
kombu's (`channel.prepare_message`, `basic_publish`), so any Celery worker reads it.
What is left out is what costs more than the message itself on a busy bot: Celery's
publish signals, the producer pool, kombu's exchange and binding lookups (messages go
straight to their queue through the default exchange), and the retry machinery (a
failure is one reconnect and one more try, then the caller's fallback takes over).

On RabbitMQ (publisher confirms on, see `connections.amqp_client_options`) a publish
returns once the broker has the message: it first declares its queue as the contract
does (once per channel: the default exchange drops a message for a queue that does not
exist), publishes `mandatory` (a message no queue takes comes back as an error), and
waits `confirm_timeout_s` at most for the confirm (a broker blocked by a memory or disk
alarm never confirms). A nack, a return, a timeout all raise one of BROKER_DOWN.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.utils.json import dumps

from tasks.contract.failures import BROKER_UNAVAILABLE
from tasks.contract.names import TRADES_QUEUE
from tasks.contract.queues import declaration_of, trades_dead_letter_queue
from tasks.observability import request_id

# What a publish raises when the broker cannot take a message now (down, or refusing
# writes: maxmemory, NOREPLICAS, READONLY, MISCONF); callers fall back on these.
BROKER_DOWN = BROKER_UNAVAILABLE


class LeanPublisher:
    def __init__(self, app: Celery, connection: Connection, *, confirm_timeout_s: float = 5.0):
        self._app = app
        self._connection = connection
        self._channel = None
        self._amqp = connection.transport.driver_type == "amqp"
        self._confirm_timeout_s = confirm_timeout_s
        self._declared: set[str] = set()  # queues declared on the current channel

    def publish(
        self,
        name: str,
        args: list[Any],
        task_id: str,
        queue: str,
        argsrepr: str,
        reply_to: str | None = None,
        expires: datetime | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Send task `name` to `queue`; raises one of BROKER_DOWN when the broker cannot take it."""
        headers, properties, body, _ = self._app.amqp.as_task_v2(
            task_id,
            name,
            args=args,
            kwargs=kwargs or {},
            argsrepr=argsrepr,
            kwargsrepr=repr(kwargs or {}),
            reply_to=reply_to,
            expires=expires,
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
        try:
            if self._channel is None:
                self._channel = self._connection.default_channel
            message = self._channel.prepare_message(
                payload,
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
                properties={**properties, "delivery_mode": 2},
            )
            if self._amqp:
                self._publish_confirmed(message, queue)
            else:
                self._channel.basic_publish(message, exchange="", routing_key=queue)
        except MessageNacked as exc:
            self._reset()
            raise OperationalError(f"RabbitMQ refused (nacked) the message for {queue!r}") from exc
        except BROKER_UNAVAILABLE:
            self._reset()  # a channel error closed the channel; a timeout leaves it in doubt
            raise

    def _publish_confirmed(self, message: Any, queue: str) -> None:
        if queue not in self._declared:
            for declaration in self._declarations(queue):
                declaration(self._channel).declare()
            self._declared.add(queue)
        self._channel.basic_publish(
            message,
            exchange="",
            routing_key=queue,
            mandatory=True,
            timeout=self._confirm_timeout_s,
            confirm_timeout=self._confirm_timeout_s,
        )

    @staticmethod
    def _declarations(queue: str) -> list:
        declaration = declaration_of(queue)
        if declaration is None:
            return []  # not the contract's: mandatory still refuses it if nothing takes it
        # The trades queue dead-letters into its own queue, which must exist before it is needed.
        return [declaration, trades_dead_letter_queue()] if queue == TRADES_QUEUE else [declaration]

    def _reset(self) -> None:
        self._channel = None
        self._declared.clear()
        # A broken connection may fail to close cleanly; it is dropped either way.
        with contextlib.suppress(Exception):
            self._connection.collect()
