"""Log format of every process: readable text by default, JSON lines with LOG_FORMAT=json.

Each record gets a `request_id` attribute (None outside a request or its tasks), so a
JSON line carries it and one HTTP request can be followed into the workers. The web
calls `configure_root()`; Celery workers and beat are configured through Celery's
logging signals (connected when the worker's Celery app is built).
"""

from __future__ import annotations

import logging
import sys

from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun
from pythonjsonlogger.orjson import OrjsonFormatter

from config import get_settings
from tasks.observability import request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
# Fields of every JSON line; `extra=` fields of a log call are added to them.
JSON_FIELDS = ["levelname", "name", "process", "processName", "message", "request_id"]
JSON_RENAMED = {"levelname": "level", "name": "logger"}
JSON_TIMESTAMP = "time"  # ISO 8601, UTC


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every record passing the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.current()
        return True


def json_formatter() -> logging.Formatter:
    # orjson: a third cheaper than the standard library per line (the access line is one per request).
    return OrjsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMED, timestamp=JSON_TIMESTAMP)


def json_logs() -> bool:
    # Celery's logging signals carry no app: workers and beat go by the process's settings.
    return get_settings().log_format == "json"


def formatter(json_lines: bool | None = None) -> logging.Formatter | None:
    """The JSON formatter for JSON lines (by default when LOG_FORMAT=json); None keeps the
    process's own text format."""
    if json_lines is None:
        json_lines = json_logs()
    return json_formatter() if json_lines else None


def adopt(handler: logging.Handler, json_lines: bool | None = None) -> None:
    """Give a handler the request id filter and, in JSON mode, the JSON format."""
    if not any(isinstance(existing, RequestIdFilter) for existing in handler.filters):
        handler.addFilter(RequestIdFilter())
    chosen = formatter(json_lines)
    if chosen is not None:
        handler.setFormatter(chosen)


def configure_root(level: int = logging.INFO, json_lines: bool | None = None) -> None:
    """Log to stderr from the root logger (the web's own lines), unless already set up;
    `json_lines` as in `formatter`."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
        if root.level == logging.WARNING:  # Python's default: nobody chose a level
            root.setLevel(level)
            # Alembic announces each of its plugins at INFO when Flask-Migrate loads it.
            logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for handler in root.handlers:
        adopt(handler, json_lines)


# -- Celery worker and beat ---------------------------------------------------------


@after_setup_logger.connect
@after_setup_task_logger.connect
def _format_celery_logs(logger: logging.Logger, **_: object) -> None:
    for handler in logger.handlers:
        adopt(handler)
    if json_logs():
        logging.captureWarnings(True)  # a warning becomes a JSON line too, not raw stderr


@task_prerun.connect
def _bind_task_request_id(task: object = None, **_: object) -> None:
    # An ordinary task's message headers become attributes of its request. (Batched
    # tasks bind each message's id where they handle it, with `request_id.bound`.)
    rid = request_id.of_message({request_id.HEADER: getattr(task.request, request_id.HEADER, None)})
    task.request.request_id_token = request_id.bind(rid)


@task_postrun.connect
def _unbind_task_request_id(task: object = None, **_: object) -> None:
    token = getattr(task.request, "request_id_token", None)
    if token is not None:
        request_id.unbind(token)
