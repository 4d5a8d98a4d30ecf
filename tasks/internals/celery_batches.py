"""Handing a batch to the worker's pool, as celery-batches' own `Batches.flush` does, and
telling whether the pool dropped it.

celery-batches acknowledges a whole batch when it returns; the journal must decide per
message (some are held, some requeued), so its tasks override `flush` and need the two
private pieces that `Batches.flush` uses: the consumer's pool (`task._pool`, set by
`Batches.Strategy`) and `apply_batches_task`.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from tasks.internals import written_for

written_for("celery-batches", "0.11", __name__)
written_for("billiard", "4.3", __name__)  # dropped_by_pool: its ApplyResult's cache


def run_in_pool(
    task: Batches,
    requests: list[SimpleRequest],
    *,
    callback: Callable[[Any], None],
    error_callback: Callable[[Any], None],
    accept_callback: Callable[..., None] | None = None,
) -> Any:
    """Run `task` on `requests` in a pool process; `callback` gets what it returned,
    `error_callback` the ExceptionInfo of a process that died or timed out. Returns the
    pool's handle of the job (see `dropped_by_pool`)."""
    return task._pool.apply_async(
        apply_batches_task,
        (task, (requests,), 0, None),
        accept_callback=accept_callback,
        callback=callback,
        error_callback=error_callback,
    )


def dropped_by_pool(job: Any) -> bool:
    """Whether the pool let go of `job` without running it or calling back.

    On a broker connection loss Celery's consumer flushes the prefork pool, which discards
    every job no process has started yet, because "the broker will redeliver them". On
    RabbitMQ it does; on Redis their messages stay unacknowledged, renewed by nobody (their
    channel is gone), until the visibility timeout. A job the pool still knows is in its
    `_cache` (billiard's ApplyResult); the threads and solo pools never discard one.
    """
    cache = getattr(job, "_cache", None)
    return cache is not None and cache.get(getattr(job, "_job", None)) is not job


def restart_flush_timer(task: Batches, timer: Any, *, drop_buffered: bool) -> int:
    """Start `task`'s flush timer anew after a broker reconnection.

    Celery clears the event loop's timers when the broker connection is lost, but
    celery-batches keeps the handle of its cleared flush timer and never starts another
    (a partial batch would wait for ever). With `drop_buffered` (RabbitMQ: a delivery tag
    dies with its channel, and the broker has given the messages back already) the
    buffered messages are dropped, to be delivered again; otherwise they are flushed by
    the new timer. Returns how many were dropped.
    """
    if task._tref is not None:
        task._tref.cancel()
    task._tref = None
    dropped = 0
    if drop_buffered:
        for buffered in (task._buffer, task._pending):
            while not buffered.empty():
                buffered.get_nowait()
                dropped += 1
        task._count = count(1)
    elif not (task._buffer.empty() and task._pending.empty()):
        task._tref = timer.call_repeatedly(task.flush_interval, task._do_flush)
    return dropped
