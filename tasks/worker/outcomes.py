"""The worker's side of a prediction's outcome: mark jobs started, then store each outcome
and push it to its caller's reply list, in one round trip, or answer it on its caller's
direct connection (`tasks.contract.outcomes` says what they hold).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from celery import Celery, states

from models import ModelError
from tasks.contract import REPLY_TTL_S, Call, Outcome, error_result, send_all, waits_on_reply
from tasks.internals.celery_results import result_meta
from tasks.observability import timeline
from tasks.observability.metrics import count_predictions


def encoded_failure(app: Celery, task_id: str, error: ModelError) -> bytes:
    return result_meta(app, task_id, states.FAILURE, error_result(error), datetime.now(UTC).isoformat())[1]


def mark_started(app: Celery, calls: list) -> None:
    if not calls:
        return
    backend = app.backend
    with backend.client.pipeline(transaction=False) as pipe:
        for call in calls:
            key, encoded = result_meta(app, call.id, states.STARTED, None, None)
            pipe.setex(key, backend.expires or 3600, encoded)
        pipe.execute()


def publish_outcomes(app: Celery, outcomes: list[Outcome]) -> None:
    """Store every outcome and push it to its caller's reply list, in one round trip."""
    backend = app.backend
    done = datetime.now(UTC).isoformat()
    keep_s = int(backend.expires or 3600)
    commands: list[tuple] = []
    direct: list[tuple[Call, bytes]] = []
    for call, outcome in outcomes:
        if isinstance(outcome, ModelError):
            key, encoded = result_meta(app, call.id, states.FAILURE, error_result(outcome), done)
        else:
            key, encoded = result_meta(app, call.id, states.SUCCESS, outcome, done)
        commands.append(("SETEX", key, keep_s, encoded))
        if call.answer is not None:
            direct.append((call, encoded))
        elif waits_on_reply(call):
            commands.append(("LPUSH", call.reply_to, encoded))
            commands.append(("EXPIRE", call.reply_to, REPLY_TTL_S))
        else:  # a bot's `send_task`: its AsyncResult.get() listens here
            commands.append(("PUBLISH", key, encoded))

    def answer_directly() -> None:
        # Once the outcomes are on their way to Redis: a caller that polls its job right
        # after its answer finds it stored. Sent even when Redis cannot store them.
        for call, encoded in direct:
            call.answer(encoded)  # type: ignore[misc]
        # The kernel woke each caller's thread on this CPU, since a socket's wake-up
        # expects its sender to wait next; this thread would instead go on with the
        # batch's bookkeeping (Redis's replies, metrics, the prediction log) while the
        # callers wait for the CPU. Yielding hands it to them now: 40 to 80 µs off one
        # client's answer on 2 cores (docs/benchmarks.md), nothing at 32 clients.
        os.sched_yield()

    timeline.stamp_jobs((call.id for call, _ in outcomes), "answered")
    try:
        send_all(backend.client, commands, answer_directly if direct else None)
        timeline.stamp_jobs((call.id for call, _ in outcomes), "published")
    finally:  # counted once the callers have their answers, and counted if Redis failed
        count_predictions((call.args[0] if call.args else None, outcome) for call, outcome in outcomes)
