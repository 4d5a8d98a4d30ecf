"""gunicorn's settings for `gunicorn -c gunicorn.conf.py "web:create_app()"` (make run, compose).

Read from the environment through `config` (WEB_BIND, WEB_WORKERS, WEB_THREADS,
WEB_GRACEFUL_TIMEOUT_S), so the compose stack and the tests pick the address. The hooks
below keep prometheus_client's multiprocess files right and, with LOG_FORMAT=json, make
gunicorn's own lines JSON too (README, "Metrics" and "Logs").
"""

import os

from config import get_settings
from tasks.observability.logs import JSON_FIELDS, JSON_RENAMED, JSON_TIMESTAMP
from tasks.observability.metrics import ensure_multiprocess_directory

_settings = get_settings()

bind = [_settings.web_bind]
workers = _settings.web_workers
# gthread: a synchronous prediction holds its thread while it waits for a worker.
worker_class = "gthread"
threads = _settings.web_threads
# SIGTERM (docker stop, honcho, systemd) stops accepting connections at once and lets
# the requests in flight finish for up to graceful_timeout; a synchronous prediction
# waits PREDICT_TIMEOUT_S at most, so the default leaves it room.
graceful_timeout = _settings.web_graceful_timeout_s
# A worker silent for longer is restarted; a request may wait PREDICT_TIMEOUT_S.
timeout = max(30, int(_settings.predict_timeout_s) + 10)
# No gunicorn access log: the app logs each request itself (`web.access`, with its
# request id, route and duration).
errorlog = "-"
# gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl):
# a second server on the machine would take it over. Nothing here uses it.
control_socket_disable = True


def on_starting(server):
    # Before the workers fork: they inherit the directory, `{hostname}` resolved.
    ensure_multiprocess_directory()


def child_exit(server, worker):
    # A dead worker's live gauges must not be summed any more; its counters stay counted.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# gunicorn's own lines (start, stop, worker exits) as JSON lines too.
if _settings.log_format == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": JSON_FIELDS,
                "rename_fields": JSON_RENAMED,
                "timestamp": JSON_TIMESTAMP,
            }
        },
        "filters": {"request_id": {"()": "tasks.observability.logs.RequestIdFilter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        },
    }
