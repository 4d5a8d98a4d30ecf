"""Which live workers consume which queue, asked over Celery's remote control (on Redis or
RabbitMQ alike: the broadcast and the replies go through the broker's own exchanges).

Readiness asks on every probe of every web process, so the answer is kept for a couple
of seconds and one inspection runs at a time: a scrape storm costs the broker at most
one broadcast per process and interval. Each inspection waits `timeout_s` for replies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from kombu.exceptions import KombuError

from config import get_settings
from tasks.contract import BROKER_DOWN, QUEUES, client_app, is_redis_url


@dataclass(frozen=True)
class QueueConsumers:
    queues: dict[str, list[str]] = field(default_factory=lambda: {queue: [] for queue in QUEUES})
    error: str | None = None

    @property
    def idle_queues(self) -> list[str]:
        """The queues no live worker consumes."""
        return [queue for queue, workers in self.queues.items() if not workers]


class WorkerStatus:
    def __init__(self, broker_url: str | None = None, timeout_s: float = 1.0, max_age_s: float = 2.0):
        broker_url = broker_url or get_settings().celery_broker_url
        self._app = client_app(
            "readiness",
            broker_url,
            timeout_s=timeout_s,
            socket_timeout_s=timeout_s + 1,
            connection_retry=False,
        )
        if not is_redis_url(broker_url):
            # py-amqp takes its socket timeouts under these names: a silent RabbitMQ must
            # not hold the inspection past its deadline.
            options = self._app.conf.broker_transport_options
            self._app.conf.broker_transport_options = {
                **options,
                "read_timeout": timeout_s + 1,
                "write_timeout": timeout_s + 1,
            }
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._answer: tuple[float, QueueConsumers] | None = None

    def consumers(self) -> QueueConsumers:
        with self._lock:  # concurrent probes share one inspection
            now = time.monotonic()
            if self._answer is None or now - self._answer[0] > self._max_age_s:
                self._answer = (time.monotonic(), self._inspect())
            return self._answer[1]

    def _inspect(self) -> QueueConsumers:
        try:
            # A connection of its own each time: the app's pooled one, idle between probes,
            # can keep a reply wait of an earlier inspection that swallows this one's
            # replies (kombu then drops it as stale, and readiness saw no worker at all).
            with self._app.connection_for_read() as connection:
                inspect = self._app.control.inspect(timeout=self._timeout_s, connection=connection)
                replies = inspect.active_queues() or {}
        except (*BROKER_DOWN, KombuError) as exc:
            return QueueConsumers(error=f"the broker does not answer: {exc}")
        consumed = {worker: {q.get("name") for q in queues} for worker, queues in replies.items()}
        queues = {queue: sorted(w for w, names in consumed.items() if queue in names) for queue in QUEUES}
        return QueueConsumers(queues)
