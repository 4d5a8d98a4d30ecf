"""The names every process agrees on: queues, tasks, Redis keys and spool folders.

The bot, the web and the workers each import these; a name changed here changes on
every side at once. The task names and queues are the design's (`../shared/DESIGN.md`):
bots call them with `send_task`.
"""

from __future__ import annotations

# Queues (celeryconfig routes `trades.*` and `ml.*` to them).
TRADES_QUEUE = "trades"
PREDICT_QUEUE = "predict"
QUEUES = (PREDICT_QUEUE, TRADES_QUEUE)
# RabbitMQ only: where the trades quorum queue dead-letters a message past its delivery limit.
TRADES_DEAD_LETTER_QUEUE = "trades.dead-letter"

# Tasks.
RECORD_TASK = "trades.record"
UPDATE_TASK = "trades.update"
REPLAY_TASK = "trades.replay_spool"
PRUNE_PREDICTIONS_TASK = "trades.prune_prediction_log"
REFRESH_STATS_TASK = "trades.refresh_stats"  # beat: folds logged changes into the kept statistics
COMPRESS_CHUNKS_TASK = "trades.compress_chunks"  # beat: TimescaleDB chunks into the columnstore
PREDICT_TASK = "ml.predict"
# RabbitMQ only: beat moves what the broker dead-lettered into the spool's dead-letter/.
DRAIN_DEAD_LETTER_QUEUE_TASK = "trades.drain_dead_letter_queue"

# Redis keys. The lane is a list in the broker's database; the rest live in the results'.
LANE_KEY = "predict:direct"  # synchronous predictions waiting for a worker thread
# hash: host:pid -> where that predict process takes synchronous predictions directly
# (`tasks.contract.direct`)
DIRECT_LANE_KEY = "ml:direct-lane"
REPLY_PREFIX = "ml:reply:"  # + job id: the list a waiting caller pops its outcome from
ISSUED_PREFIX = "ml:job:"  # + job id: marks a job the web issued (unknown ids are 404)
LOADED_MODELS_KEY = "ml:loaded-models"  # hash: name@version -> what a worker loaded
MODEL_FAILURES_KEY = "ml:model-load-failures"  # hash: name@version -> why it did not load
# hash: name@version -> description, of versions loaded beside a file's current one (a
# release's pinned champion or challenger, a version asked for by `model_version`)
LOADED_VERSIONS_KEY = "ml:loaded-versions"
# + host:pid: the name@version list one live predict process holds (expires unless renewed)
WORKER_MODELS_PREFIX = "ml:worker-models:"
# + name@challenger@since: what a release's challenger did (answered, failed, non-finite,
# model calls by latency), summed over every predict process, for its guards
GUARD_PREFIX = "ml:guard:"
HELD_PREFIX = "journal:held:"  # + worker:task: trades a worker holds unacknowledged
REDELIVERIES_PREFIX = "journal:redeliveries:"  # + task id: deliveries without an outcome

# Folders under SPOOL_DIR.
OUTBOX_SPOOL = "outbox"  # the bot's: messages the broker did not take yet
REPLAY_SPOOL = "replay"  # the workers': entries the database did not take yet
DEAD_LETTER_SPOOL = "dead-letter"  # entries that can never be stored as they are
SPOOLS = (REPLAY_SPOOL, OUTBOX_SPOOL, DEAD_LETTER_SPOOL)


def reply_key(job_id: str) -> str:
    """The list a waiting caller pops its job's outcome from."""
    return REPLY_PREFIX + job_id
