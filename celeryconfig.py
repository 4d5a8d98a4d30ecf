"""Celery settings, built from the project's settings (`config.Settings`).

The worker's Celery app loads them with `config_from_object(celery_config(settings))`,
so an app built from explicit settings (`create_celery_app(settings=...)`) uses those.
"""

from datetime import timedelta
from typing import Any

from config import Settings
from tasks.contract import (
    COMPRESS_CHUNKS_TASK,
    DRAIN_DEAD_LETTER_QUEUE_TASK,
    PREDICT_QUEUE,
    PRUNE_PREDICTIONS_TASK,
    REFRESH_STATS_TASK,
    REPLAY_TASK,
    TRADES_QUEUE,
    amqp_queues,
    is_redis_url,
    transport_for,
)


def celery_config(settings: Settings) -> dict[str, Any]:
    config = _common_config(settings)
    if is_redis_url(settings.celery_broker_url):
        config["broker_transport_options"] = _redis_transport_options(settings)
    else:
        config.update(_amqp_config(settings))
    return config


def _redis_transport_options(settings: Settings) -> dict[str, Any]:
    visibility_timeout_s = settings.broker_visibility_timeout_s
    return {
        # A message held by a worker that vanished outright comes back after this long (not
        # kombu's default hour), found by a sweep every tenth of it (at most every 10 s).
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 10)),
        "unacked_restore_throttle": 1,
        # The sweep's lock outlives a worker killed while holding it by this much at most.
        "unacked_mutex_expire": min(300, visibility_timeout_s),
    }


def _amqp_config(settings: Settings) -> dict[str, Any]:
    # RabbitMQ gives a dead worker's unacknowledged messages back at once (no visibility
    # timeout); the queues are the contract's (a quorum `trades`), and Celery turns off
    # global QoS for quorum queues (worker_detect_quorum_queues, on by default).
    return {
        "task_queues": amqp_queues(),
        "worker_detect_quorum_queues": True,
        "beat_schedule": {
            **_beat_schedule(settings),
            # Messages RabbitMQ dead-lettered (past the delivery limit) into the spool's dead-letter/.
            "drain-trades-dead-letter-queue": {
                "task": DRAIN_DEAD_LETTER_QUEUE_TASK,
                "schedule": timedelta(seconds=settings.spool_replay_interval_s),
                "options": {"expires": settings.spool_replay_interval_s},
            },
        },
    }


def _common_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.celery_broker_url,
        "broker_transport": transport_for(settings.celery_broker_url),
        "result_backend": settings.celery_result_backend,
        # JSON only: a pickled message could run code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_routes": {
            "ml.*": {"queue": PREDICT_QUEUE},
            "trades.*": {"queue": TRADES_QUEUE},
        },
        "task_default_queue": TRADES_QUEUE,
        # A trade message Celery cannot decode is dead-lettered before it is acknowledged.
        "worker_consumer": "tasks.worker.consumer:JournalConsumer",
        # Trade writes are buffered into batches in the consumer; the broker must let a worker
        # hold a whole batch unacknowledged (prefetch = multiplier x concurrency).
        "worker_prefetch_multiplier": max(4, settings.journal_batch_size),
        "broker_connection_retry_on_startup": True,
        # A predict worker's pool process loads every model before it reports for work.
        "worker_proc_alive_timeout": 120,
        "result_expires": 3600,
        # Task events (sent, received, started, succeeded, failed) for Flower's task list.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "beat_schedule": _beat_schedule(settings),
    }


def _beat_schedule(settings: Settings) -> dict[str, Any]:
    return {
        "replay-trade-spool": {
            "task": REPLAY_TASK,
            "schedule": timedelta(seconds=settings.spool_replay_interval_s),
            "options": {"expires": settings.spool_replay_interval_s},
        },
        # The kept statistics stay within STATS_MAX_STALENESS_S of the journal: folded twice as often.
        "refresh-trade-stats": {
            "task": REFRESH_STATS_TASK,
            "schedule": timedelta(seconds=stats_refresh_interval_s(settings)),
            "options": {"expires": stats_refresh_interval_s(settings)},
        },
        # TRADES_COMPRESS_AFTER_DAYS, PREDICTION_LOG_COMPRESS_AFTER_DAYS: hourly is fine-grained
        # enough for a count of days (a no-op on plain PostgreSQL).
        "compress-chunks": {
            "task": COMPRESS_CHUNKS_TASK,
            "schedule": timedelta(hours=1),
            "options": {"expires": 3600},
        },
        # PREDICTION_LOG_RETENTION_DAYS: hourly is fine-grained enough for a count of days.
        "prune-prediction-log": {
            "task": PRUNE_PREDICTIONS_TASK,
            "schedule": timedelta(hours=1),
            "options": {"expires": 3600},
        },
    }


def stats_refresh_interval_s(settings: Settings) -> float:
    """How often beat folds: half the staleness allowed, at least a second (reads fold
    themselves what is older than the staleness allowed, 0 included)."""
    return max(1.0, settings.stats_max_staleness_s / 2)
