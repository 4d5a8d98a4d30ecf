"""Batched trade writes on top of celery-batches, made safe for a journal.

celery-batches buffers a task's messages in the worker's consumer and runs them as one
call, so a batch of trades costs one transaction instead of one per trade. For a
journal, what happens to each message follows the failure model (`tasks.contract.failures`):

* **stored, spooled or dead-lettered:** acknowledged;
* **stored nowhere** (the database and the spool both unavailable), or the batch raised
  an error nobody knows: the message is *held*, unacknowledged, and tried again with a
  growing backoff. It stays in the broker (the transport keeps its visibility fresh, so
  no other worker takes it meanwhile), it is counted in `journal_held_entries` and in
  `/readyz`, and it never counts as a redelivery;
* **the pool process died** (SIGKILL, OOM, time limit): its messages are rejected back
  to the queue, like `task_reject_on_worker_lost` does for ordinary tasks. A redelivered
  message runs in a batch of its own, so a poison message cannot take its neighbours
  down with it, and its runs are counted: once it has been delivered
  `JOURNAL_MAX_REDELIVERIES` times without an outcome it is dead-lettered instead.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import redis
from billiard.einfo import ExceptionInfo
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest

from tasks.contract import REDELIVERIES_PREFIX, brief, classify
from tasks.internals.celery_batches import dropped_by_pool, restart_flush_timer, run_in_pool
from tasks.observability import metrics
from tasks.worker.app import FlaskTask, worker_settings
from tasks.worker.held import report_held
from tasks.worker.journal import count_outage

log = logging.getLogger(__name__)

# What a batch returns when it has dealt with every message; `{"held": [ids]}` names the
# messages stored nowhere. Anything else (celery-batches turns an exception into None)
# holds the whole batch.
BATCH_DONE = "done"
MAX_HOLD_BACKOFF_S = 30.0


_batch_keys = itertools.count()


@dataclass
class _PoolBatch:
    """A batch handed to the pool and not called back yet."""

    key: int
    requests: list[Request]
    suspect: bool
    job: Any = None  # the pool's handle (tasks.internals.celery_batches.dropped_by_pool)


class JournalLedger:
    """What the consumer keeps in the results' Redis: how often each redelivered message
    ran without an outcome, and how many messages each worker holds (for /readyz)."""

    KEY_PREFIX = REDELIVERIES_PREFIX
    TTL_S = 7 * 24 * 3600

    def __init__(self, url: str):
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)

    def report_held(self, reporter: str, count: int) -> None:
        """Best effort: a report that cannot be written now is written on the next try."""
        try:
            report_held(self._redis, reporter, count)
        except redis.RedisError as exc:
            log.debug("could not report the held messages: %s", brief(exc))

    def begin(self, task_id: str) -> int:
        """Count a run; returns the deliveries so far, the first (uncounted) one included."""
        with self._redis.pipeline() as pipe:
            pipe.incr(self.KEY_PREFIX + task_id)
            pipe.expire(self.KEY_PREFIX + task_id, self.TTL_S)
            count, _ = pipe.execute()
        return int(count) + 1

    def undo(self, task_id: str) -> None:
        """The run ended without its process dying (it was held): it does not count."""
        self._best_effort(self._redis.decr, task_id)

    def forget(self, task_id: str) -> None:
        self._best_effort(self._redis.delete, task_id)

    def _best_effort(self, command: Callable[[str], Any], task_id: str) -> None:
        try:
            command(self.KEY_PREFIX + task_id)
        except redis.RedisError as exc:
            log.warning("could not update the delivery count of %s: %s", task_id, brief(exc))


class JournalBatches(FlaskTask, Batches):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    #: Called in the consumer with a request that exceeded its redeliveries.
    on_poison: Callable[[SimpleRequest, int], None] | None = None

    _shared_ledger: JournalLedger | None = None

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[str, Request] = {}  # held, waiting for their retry or in it
        self._in_pool: dict[int, _PoolBatch] = {}  # handed to the pool, no outcome yet
        self._waiting: list[Request] = []  # held, waiting for their retry
        self._reported = 0
        self._retry_timer: Any = None
        self._hold_backoff_s = 0.0
        self._timer: Any = None
        self._reporter = f"{socket.gethostname()}:{self.name}"

    def Strategy(self, task: Batches, app: Any, consumer: Any) -> Callable:
        # How many messages make a batch, how long one waits: the app's settings
        # (celery-batches reads both on every message).
        settings = worker_settings(app)
        self.flush_every, self.flush_interval = settings.journal_batch_size, settings.journal_batch_wait_s
        self._renew_after_reconnection(consumer)
        handler = super().Strategy(task, app, consumer)
        self._timer = consumer.timer  # the consumer's event loop: held messages are retried on it
        self._reporter = f"{consumer.hostname}:{self.name}"
        return handler

    def _renew_after_reconnection(self, consumer: Any) -> None:
        """Celery builds the strategy again on every (re)connection to the broker, after
        clearing the event loop's timers: the flush and retry timers start anew. On
        RabbitMQ a delivery tag dies with its channel (the broker has given those messages
        back already, to be delivered again), so what was buffered or held is dropped; on
        Redis an acknowledgement still reaches the broker, so it is kept."""
        connection = getattr(consumer, "connection", None)
        rabbitmq = connection is not None and connection.transport.driver_type == "amqp"
        dropped = restart_flush_timer(self, consumer.timer, drop_buffered=rabbitmq)
        self._retry_timer = None
        self._run_again_what_the_pool_dropped(consumer.timer, rabbitmq)
        if rabbitmq and (dropped or self._held):
            log.warning(
                "connection renewed: %d buffered and %d held %s messages left to RabbitMQ's redelivery",
                dropped,
                len(self._held),
                self.name,
            )
            self._held.clear()
            self._waiting.clear()
            self._count_held()
        elif self._waiting:
            self._retry_timer = consumer.timer.call_after(self._hold_backoff_s or 0.1, self._retry_held)

    def _run_again_what_the_pool_dropped(self, timer: Any, rabbitmq: bool) -> None:
        """Celery flushed the prefork pool when the connection was lost, discarding the
        batches no process had started. RabbitMQ gives their messages back by itself; on
        Redis nobody would ever acknowledge them, nor renew them (their channel is gone),
        and they would wait for the visibility timeout: they run again now. A batch a
        process had already received may then run twice; the journal's writes are
        idempotent."""
        dropped = [batch for batch in list(self._in_pool.values()) if dropped_by_pool(batch.job)]
        for batch in dropped:
            self._in_pool.pop(batch.key, None)
        if not dropped or rabbitmq:
            return
        log.warning(
            "connection renewed: %d %s messages the pool dropped run again",
            sum(len(batch.requests) for batch in dropped),
            self.name,
        )

        def run_again() -> None:
            for batch in dropped:
                self._run_batch(batch.requests, suspect=batch.suspect)

        timer.call_after(0.0, run_again)

    def flush(self, requests: Collection[Request]) -> None:
        fresh = [request for request in requests if not request.delivery_info.get("redelivered")]
        if fresh:
            self._run_batch(fresh)
        for request in requests:
            if request.delivery_info.get("redelivered"):
                self._run_suspect(request)

    # -- redelivered messages ----------------------------------------------------------

    def _run_suspect(self, request: Request) -> None:
        try:
            deliveries = self._ledger().begin(request.id)
        except redis.RedisError as exc:  # the count cannot be kept now: wait, uncounted
            count_outage(classify(exc), exc)
            self._hold([request])
            return
        limit = worker_settings(self.app).journal_max_redeliveries
        if deliveries <= limit:
            self._run_batch([request], suspect=True)
            return
        log.error(
            "%s %s was delivered %d times without an outcome (limit %d): dead-lettered, not run again",
            request.name,
            request.id,
            deliveries,
            limit,
        )
        try:
            if self.on_poison is not None:
                self.on_poison(SimpleRequest.from_request(request), deliveries)
        except Exception as exc:  # the dead-letter folder refused: hold it, uncounted
            count_outage(classify(exc), exc)
            self._ledger().undo(request.id)
            self._hold([request])
            return
        self._settle([request])
        self._ledger().forget(request.id)

    def _ledger(self) -> JournalLedger:
        if JournalBatches._shared_ledger is None:
            JournalBatches._shared_ledger = JournalLedger(worker_settings(self.app).celery_result_backend)
        return JournalBatches._shared_ledger

    # -- running a batch ---------------------------------------------------------------

    def _run_batch(self, requests: list[Request], suspect: bool = False) -> None:
        batch = _PoolBatch(next(_batch_keys), requests, suspect)
        self._in_pool[batch.key] = batch

        def on_return(result: Any) -> None:
            self._in_pool.pop(batch.key, None)
            if result == BATCH_DONE:
                held: set[str] = set()
            elif isinstance(result, dict):
                held = set(result.get("held") or ())
            else:
                log.error("batch of %d %s messages raised (logged above): held", len(requests), self.name)
                held = {request.id for request in requests}
            kept = [request for request in requests if request.id in held]
            self._settle([request for request in requests if request.id not in held])
            for request in requests if suspect else ():
                if request.id not in held:
                    self._ledger().forget(request.id)
            if kept:
                for request in kept if suspect else ():
                    self._ledger().undo(request.id)
                self._hold(kept)
            else:
                self._hold_backoff_s = 0.0

        def on_error(exc_info: ExceptionInfo) -> None:
            # The pool process died or hit its time limit: every message goes back to
            # the queue, to be run alone and counted.
            self._in_pool.pop(batch.key, None)
            log.warning(
                "batch of %d %s messages lost its process (%r): requeued",
                len(requests),
                self.name,
                exc_info.exception,
            )
            for request in requests:
                request.reject(requeue=True)
                self._held.pop(request.id, None)
            self._count_held()

        simple = [SimpleRequest.from_request(request) for request in requests]
        batch.job = run_in_pool(
            self,
            simple,
            callback=on_return,
            error_callback=on_error,
        )

    # -- held messages -----------------------------------------------------------------

    def _settle(self, requests: list[Request]) -> None:
        """The messages' outcome is known: acknowledged, no longer held."""
        for request in requests:
            request.acknowledge()
            self._held.pop(request.id, None)
        self._count_held()

    def _hold(self, requests: list[Request]) -> None:
        for request in requests:
            self._held[request.id] = request
        self._waiting.extend(requests)
        self._count_held()
        if self._retry_timer is None and self._timer is not None:
            base = max(0.1, worker_settings(self.app).journal_db_backoff_s)
            self._hold_backoff_s = min(MAX_HOLD_BACKOFF_S, max(base, self._hold_backoff_s * 2))
            log.warning(
                "%d %s messages held unacknowledged; trying them again in %.1fs",
                len(self._held),
                self.name,
                self._hold_backoff_s,
            )
            self._retry_timer = self._timer.call_after(self._hold_backoff_s, self._retry_held)

    def _retry_held(self) -> None:
        self._retry_timer = None
        waiting, self._waiting = self._waiting, []
        self._count_held(renew=True)
        if waiting:
            self.flush(waiting)

    def _count_held(self, renew: bool = False) -> None:
        held = len(self._held)
        if held != self._reported or renew:
            metrics.HELD.inc(held - self._reported)
            self._reported = held
            self._ledger().report_held(self._reporter, held)
