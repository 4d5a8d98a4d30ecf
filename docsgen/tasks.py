"""The Celery tasks reference: the tasks the worker's app registers, where they are routed,
what one message carries, and when beat sends them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from docsgen.markdown import code, table

RABBITMQ_URL = "amqp://guest@127.0.0.1:5672//"


def tasks_table() -> str:
    app = _worker_app()
    schedules = beat_schedules()
    rows = [
        (
            code(name),
            code(app.amqp.router.route({}, name, (), {})["queue"].name),
            ", ".join(code(parameter) for parameter in message_parameters(name, task)) or "none",
            schedules.get(name, ""),
            " ".join((task.__doc__ or "").split()),
        )
        for name, task in sorted(app.tasks.items())
        if not name.startswith("celery.")
    ]
    return table(("task", "queue", "arguments", "beat sends it", "does"), rows)


def task_names() -> list[str]:
    return sorted(name for name in _worker_app().tasks if not name.startswith("celery."))


def message_parameters(name: str, task: Any) -> list[str]:
    """The arguments of one message, as `send_task(name, args=[...])` gives them."""
    from celery_batches import Batches

    if isinstance(task, Batches):  # its `run` takes a batch of requests, not one message's arguments
        try:
            reader = _message_readers()[name]
        except KeyError:
            raise LookupError(f"docsgen/tasks.py: which function reads a {name} message?") from None
    else:
        reader = task.run
    parameters = inspect.signature(reader).parameters.values()
    # `job_id` is the task id, not an argument; annotations say nothing a caller needs.
    return [
        str(parameter.replace(annotation=parameter.empty))
        for parameter in parameters
        if parameter.name != "job_id"
    ]


def beat_schedules() -> dict[str, str]:
    """When beat sends each task, with the default settings; RabbitMQ's own entries said so."""
    from celeryconfig import celery_config
    from config import Settings

    on_redis = _every(celery_config(Settings.model_construct())["beat_schedule"])
    on_rabbitmq = _every(
        celery_config(Settings.model_construct(celery_broker_url=RABBITMQ_URL))["beat_schedule"]
    )
    return on_redis | {
        name: f"{when} (RabbitMQ only)" for name, when in on_rabbitmq.items() if name not in on_redis
    }


def _every(schedule: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {entry["task"]: "every " + _interval(entry["schedule"]) for entry in schedule.values()}


def _interval(every: timedelta) -> str:
    seconds = every.total_seconds()
    for unit, length in (("h", 3600), ("min", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds / length:g} {unit}"
    return f"{seconds:g} s"


def _message_readers() -> dict[str, Callable[..., Any]]:
    # A batched task reads each message with one of these; their parameters are the message's.
    from tasks.contract import PREDICT_TASK, RECORD_TASK, UPDATE_TASK, record_entry, update_entry
    from tasks.worker.ml import _arguments

    return {RECORD_TASK: record_entry, UPDATE_TASK: update_entry, PREDICT_TASK: _arguments}


def _worker_app() -> Any:
    import tasks

    app = tasks.app  # the app `celery -A tasks` runs, which the task modules register with
    app.loader.import_default_modules()
    return app
