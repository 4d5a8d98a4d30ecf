"""How a prediction's outcome is stored and read back: Celery's result format, one pipeline.

Outcomes go to the result backend exactly as Celery stores results (so a bot's
`AsyncResult.get()` works, and raises the same ModelError), and to the caller's reply
list when it gave one. A failure carries the error's message and details, so the web
can answer with the right status and JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from celery import Celery, states

from models import base as model_errors
from models.base import ModelError
from tasks.metrics import count_predictions
from tasks.redis_commands import send_all

REPLY_PREFIX = "ml:reply:"
REPLY_TTL_S = 60


def reply_key(job_id: str) -> str:
    """The list a waiting caller pops its job's outcome from."""
    return REPLY_PREFIX + job_id


class PredictionFailed(ModelError):
    status = 503
    code = "prediction_failed"


class PredictionExpired(ModelError):
    status = 504
    code = "prediction_expired"


class BrokerUnavailable(ModelError):
    status = 503
    code = "broker_unavailable"


_ERRORS = {
    cls.__name__: cls
    for cls in (*vars(model_errors).values(), PredictionFailed, PredictionExpired, BrokerUnavailable)
    if isinstance(cls, type) and issubclass(cls, ModelError)
}


@dataclass(frozen=True)
class Call:
    """One prediction: an `ml.predict` message, or one item of an `ml.predict_batch` message."""

    id: str
    reply_to: str | None
    args: tuple
    kwargs: dict
    expires: float | None = None  # epoch seconds; not worth a model call after that


Outcome = tuple[Call, "dict[str, Any] | ModelError"]


def error_result(error: ModelError) -> dict[str, Any]:
    """A FAILURE result that Celery turns back into the same ModelError."""
    return {
        "exc_type": type(error).__name__,
        "exc_message": [error.message, error.details],
        "exc_module": type(error).__module__,
    }


def error_from_result(result: Any) -> ModelError:
    """The ModelError a stored FAILURE stands for (a generic one if it is not ours)."""
    if isinstance(result, dict):
        cls = _ERRORS.get(result.get("exc_type"))
        message = result.get("exc_message")
        if cls is not None and isinstance(message, list) and len(message) == 2:
            return cls(str(message[0]), message[1] if isinstance(message[1], dict) else None)
    return PredictionFailed("the prediction failed in the worker; see the worker's log")


def _meta(app: Celery, task_id: str, state: str, result: Any, done: str | None) -> tuple[bytes, bytes]:
    # The fields of Celery's result meta (`Backend._get_result_meta`), built directly:
    # Celery's own path costs more than a small prediction.
    meta = {"status": state, "result": result, "traceback": None, "children": None, "date_done": done}
    meta["task_id"] = task_id
    return app.backend.get_key_for_task(task_id), orjson.dumps(meta)


def waits_on_reply(call: Call) -> bool:
    """Whether a caller pops this call's outcome from its reply key (a bot's reply_to is Celery's own)."""
    return bool(call.reply_to and call.reply_to.startswith(REPLY_PREFIX))


def encoded_failure(app: Celery, task_id: str, error: ModelError) -> bytes:
    return _meta(app, task_id, states.FAILURE, error_result(error), datetime.now(UTC).isoformat())[1]


def mark_started(app: Celery, requests: list[Call]) -> None:
    if not requests:
        return
    backend = app.backend
    with backend.client.pipeline(transaction=False) as pipe:
        for request in requests:
            key, encoded = _meta(app, request.id, states.STARTED, None, None)
            pipe.setex(key, backend.expires or 3600, encoded)
        pipe.execute()


def publish_outcomes(app: Celery, outcomes: list[Outcome]) -> None:
    """Store every outcome and push it to its caller's reply list, in one round trip."""
    backend = app.backend
    done = datetime.now(UTC).isoformat()
    keep_s = int(backend.expires or 3600)
    commands: list[tuple] = []
    for request, outcome in outcomes:
        if isinstance(outcome, ModelError):
            key, encoded = _meta(app, request.id, states.FAILURE, error_result(outcome), done)
        else:
            key, encoded = _meta(app, request.id, states.SUCCESS, outcome, done)
        commands.append(("SETEX", key, keep_s, encoded))
        if waits_on_reply(request):
            commands.append(("LPUSH", request.reply_to, encoded))
            commands.append(("EXPIRE", request.reply_to, REPLY_TTL_S))
        else:  # a bot's `send_task`: its AsyncResult.get() listens here
            commands.append(("PUBLISH", key, encoded))
    try:
        send_all(backend.client, commands)
    finally:  # counted once the callers have their answers, and counted if Redis failed
        count_predictions((call.args[0] if call.args else None, outcome) for call, outcome in outcomes)
