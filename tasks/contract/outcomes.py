"""A prediction's outcome as both sides read it: Celery's result format, and the errors
a stored failure stands for.

The worker stores outcomes exactly as Celery stores results (so a bot's
`AsyncResult.get()` works, and raises the same ModelError) and pushes them to the
caller's reply list when it gave one. A failure carries the error's message and
details, so the web can answer with the right status and JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models import ModelError
from models import base as model_errors
from tasks.contract.names import REPLY_PREFIX

REPLY_TTL_S = 60


class PredictionFailed(ModelError, status=503, code="prediction_failed"):
    """The worker failed while predicting (or its answer cannot be read)."""


class PredictionExpired(ModelError, status=504, code="prediction_expired"):
    """The prediction waited longer than PREDICT_EXPIRES_S for a worker."""


class BrokerUnavailable(ModelError, status=503, code="broker_unavailable"):
    """The broker cannot take the prediction."""


_ERRORS = {
    cls.__name__: cls
    for cls in (*vars(model_errors).values(), PredictionFailed, PredictionExpired, BrokerUnavailable)
    if isinstance(cls, type) and issubclass(cls, ModelError)
}


@dataclass(frozen=True)
class Call:
    """One prediction: an `ml.predict` message, or one item of a direct-lane message."""

    id: str
    reply_to: str | None
    args: tuple
    kwargs: dict
    expires: float | None = None  # epoch seconds; not worth a model call after that
    request_id: str | None = None  # the HTTP request it came from, for the prediction log
    # A direct connection's caller: gives it the encoded outcome (`tasks.contract.direct`)
    answer: Callable[[bytes], None] | None = None


Outcome = tuple[Call, "dict[str, Any] | ModelError"]


def waits_on_reply(call: Call) -> bool:
    """Whether a caller waits for this call's outcome: on its direct connection, or popping
    it from its reply key (a bot's reply_to is Celery's own)."""
    return call.answer is not None or bool(call.reply_to and call.reply_to.startswith(REPLY_PREFIX))


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
