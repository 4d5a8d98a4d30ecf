"""Celery settings, read from the environment through `config`.

Loaded with `config_from_object("celeryconfig")` by the worker's Celery app.
"""

from datetime import timedelta

from config import get_settings
from tasks.contract.connections import transport_for
from tasks.contract.names import PREDICT_QUEUE, REPLAY_TASK, TRADES_QUEUE

_settings = get_settings()

broker_url = _settings.celery_broker_url
broker_transport = transport_for(broker_url)
result_backend = _settings.celery_result_backend

# JSON only: a pickled message could run code in the worker.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

task_routes = {
    "ml.*": {"queue": PREDICT_QUEUE},
    "trades.*": {"queue": TRADES_QUEUE},
}
task_default_queue = TRADES_QUEUE
# A trade message Celery cannot decode is dead-lettered before it is acknowledged.
worker_consumer = "tasks.worker.consumer:JournalConsumer"

# Trade writes are buffered into batches in the consumer; the broker must let a worker
# hold a whole batch unacknowledged (prefetch = multiplier x concurrency).
worker_prefetch_multiplier = max(4, _settings.journal_batch_size)
broker_connection_retry_on_startup = True
# A predict worker's pool process loads every model before it reports for work.
worker_proc_alive_timeout = 120
broker_transport_options = {
    # A message held by a worker that vanished outright comes back after this long (not
    # kombu's default hour), found by a sweep every tenth of it (at most every 10 s).
    "visibility_timeout": _settings.broker_visibility_timeout_s,
    "unacked_restore_interval": max(1, min(10, _settings.broker_visibility_timeout_s // 10)),
    "unacked_restore_throttle": 1,
    # The sweep's lock outlives a worker killed while holding it by this much at most.
    "unacked_mutex_expire": min(300, _settings.broker_visibility_timeout_s),
}
result_expires = 3600

# Task events (sent, received, started, succeeded, failed) for Flower's task list.
worker_send_task_events = True
task_send_sent_event = True

beat_schedule = {
    "replay-trade-spool": {
        "task": REPLAY_TASK,
        "schedule": timedelta(seconds=_settings.spool_replay_interval_s),
        "options": {"expires": _settings.spool_replay_interval_s},
    },
}
