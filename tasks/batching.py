"""Batched trade writes on top of celery-batches, made safe for a journal.

celery-batches buffers a task's messages in the worker's consumer and runs them as one
call, so a batch of trades costs one transaction instead of one per trade. For a
journal three things are added here:

* a batch whose pool process dies (SIGKILL, OOM, time limit) or that raises has its
  messages rejected back to the queue, like `task_reject_on_worker_lost` does for
  ordinary tasks (celery-batches would leave them unacknowledged, or acknowledge them);
* a redelivered message runs in a batch of its own, so a poison message cannot keep
  taking its neighbours down with it;
* its deliveries are counted in the broker's Redis, and past
  `JOURNAL_MAX_REDELIVERIES` it is dead-lettered instead of run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import redis
from billiard.einfo import ExceptionInfo
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from config import get_settings
from tasks.factory import FlaskTask

log = logging.getLogger(__name__)

DELIVERY_COUNT_TTL_S = 7 * 24 * 3600
# What a batch returns when it has dealt with every message. Anything else (celery-batches
# turns an exception into None) sends the batch's messages back to the queue.
BATCH_DONE = "done"


class JournalBatches(FlaskTask, Batches):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    flush_every = get_settings().journal_batch_size
    flush_interval = get_settings().journal_batch_wait_s

    #: Called in the consumer with a request that exceeded its redeliveries.
    on_poison: Callable[[SimpleRequest, int], None] | None = None

    _counter: redis.Redis | None = None

    def flush(self, requests: Collection[Request]) -> None:
        fresh = [request for request in requests if not request.delivery_info.get("redelivered")]
        if fresh:
            self._run_batch(fresh)
        for request in requests:
            if request.delivery_info.get("redelivered"):
                self._run_suspect(request)

    def _run_suspect(self, request: Request) -> None:
        deliveries = self._count_delivery(request.id)
        limit = get_settings().journal_max_redeliveries
        if deliveries <= limit:
            self._run_batch([request])
            return
        log.error(
            "%s %s was redelivered %d times (limit %d): dead-lettered, not run again",
            request.name,
            request.id,
            deliveries,
            limit,
        )
        try:
            if self.on_poison is not None:
                self.on_poison(SimpleRequest.from_request(request), deliveries)
        except Exception:
            log.exception("could not dead-letter %s: requeued instead", request.id)
            request.reject(requeue=True)
            return
        request.acknowledge()

    def _run_batch(self, requests: list[Request]) -> None:
        def requeue(reason: object) -> None:
            # Every message goes back to the queue, to be retried alone.
            log.warning("batch of %d %s messages failed (%r): requeued", len(requests), self.name, reason)
            for request in requests:
                request.reject(requeue=True)

        def on_return(result: Any) -> None:
            if result != BATCH_DONE:
                requeue("the batch raised; see the error logged before")
                return
            for request in requests:
                request.acknowledge()

        def on_error(exc_info: ExceptionInfo) -> None:
            requeue(exc_info.exception)  # the pool process died or hit its time limit

        simple = [SimpleRequest.from_request(request) for request in requests]
        self._pool.apply_async(
            apply_batches_task,
            (self, (simple,), 0, None),
            callback=on_return,
            error_callback=on_error,
        )

    def _count_delivery(self, task_id: str) -> int:
        if JournalBatches._counter is None:
            JournalBatches._counter = redis.Redis.from_url(get_settings().celery_broker_url)
        key = f"journal:redeliveries:{task_id}"
        with JournalBatches._counter.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, DELIVERY_COUNT_TTL_S)
            count, _ = pipe.execute()
        return int(count) + 1  # the first delivery was not counted
