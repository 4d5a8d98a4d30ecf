"""What crosses a process boundary, in one place: every side (bot, web, worker) imports it.

- `names`: queues, task names, Redis keys and spool folders;
- `messages`: journal entries as task messages and back;
- `lane`: the direct lane's message, a waiting prediction with its checked rows;
- `direct`: the direct connection's frames and a predict process's registration;
- `outcomes`: a prediction's stored outcome and the errors it stands for;
- `connections`: the broker's transport and the sending Celery clients;
- `publisher`: one message onto a queue, the way Celery would send it;
- `failures`: the one place that sorts an error into the failure model;
- `redis_commands`: several Redis commands in one round trip;
- `queues`: the queues' declarations on RabbitMQ;
- `queue_agreement`: whether RabbitMQ's queues are declared as the contract declares them.
"""

from tasks.contract.connections import (
    REDIS_HINT,
    REDIS_TRANSPORT,
    client_app,
    is_redis_url,
    lane_store_url,
    redis_problem,
    transport_for,
)
from tasks.contract.direct import FrameReader, FrameTooLong, Registration, frame
from tasks.contract.failures import (
    BROKER_ERRORS,
    BROKER_UNAVAILABLE,
    Failure,
    Verdict,
    brief,
    classify,
    sqlstate,
)
from tasks.contract.lane import LaneRequest, MalformedLaneMessage
from tasks.contract.lane import decode as decode_lane_request
from tasks.contract.lane import encode as encode_lane_request
from tasks.contract.messages import TaskMessage, entry_json_of_call, message_of, record_entry, update_entry
from tasks.contract.names import (
    COMPRESS_CHUNKS_TASK,
    DEAD_LETTER_SPOOL,
    DIRECT_LANE_KEY,
    DRAIN_DEAD_LETTER_QUEUE_TASK,
    GUARD_PREFIX,
    HELD_PREFIX,
    ISSUED_PREFIX,
    LANE_KEY,
    LOADED_MODELS_KEY,
    LOADED_VERSIONS_KEY,
    MODEL_FAILURES_KEY,
    OUTBOX_SPOOL,
    PREDICT_QUEUE,
    PREDICT_TASK,
    PRUNE_PREDICTIONS_TASK,
    QUEUES,
    RECORD_TASK,
    REDELIVERIES_PREFIX,
    REFRESH_STATS_TASK,
    REPLAY_SPOOL,
    REPLAY_TASK,
    REPLY_PREFIX,
    SPOOLS,
    TRADES_DEAD_LETTER_QUEUE,
    TRADES_QUEUE,
    UPDATE_TASK,
    WORKER_MODELS_PREFIX,
    reply_key,
)
from tasks.contract.outcomes import (
    REPLY_TTL_S,
    BrokerUnavailable,
    Call,
    Outcome,
    PredictionExpired,
    PredictionFailed,
    error_from_result,
    error_result,
    waits_on_reply,
)
from tasks.contract.publisher import BROKER_DOWN, LeanPublisher
from tasks.contract.queue_agreement import MIGRATE_COMMAND, Disagreement
from tasks.contract.queue_agreement import disagreement as queue_disagreement
from tasks.contract.queues import (
    TRADES_DELIVERY_LIMIT,
    TRADES_QUEUE_ARGUMENTS,
    amqp_queues,
    declaration_of,
    trades_dead_letter_queue,
)
from tasks.contract.redis_commands import kept_connection, send_all

__all__ = [
    "BROKER_DOWN",
    "BROKER_ERRORS",
    "BROKER_UNAVAILABLE",
    "COMPRESS_CHUNKS_TASK",
    "DEAD_LETTER_SPOOL",
    "DIRECT_LANE_KEY",
    "DRAIN_DEAD_LETTER_QUEUE_TASK",
    "GUARD_PREFIX",
    "HELD_PREFIX",
    "ISSUED_PREFIX",
    "LANE_KEY",
    "LOADED_MODELS_KEY",
    "LOADED_VERSIONS_KEY",
    "MIGRATE_COMMAND",
    "MODEL_FAILURES_KEY",
    "OUTBOX_SPOOL",
    "PREDICT_QUEUE",
    "PREDICT_TASK",
    "PRUNE_PREDICTIONS_TASK",
    "QUEUES",
    "RECORD_TASK",
    "REDELIVERIES_PREFIX",
    "REDIS_HINT",
    "REDIS_TRANSPORT",
    "REFRESH_STATS_TASK",
    "REPLAY_SPOOL",
    "REPLAY_TASK",
    "REPLY_PREFIX",
    "REPLY_TTL_S",
    "SPOOLS",
    "TRADES_DEAD_LETTER_QUEUE",
    "TRADES_DELIVERY_LIMIT",
    "TRADES_QUEUE",
    "TRADES_QUEUE_ARGUMENTS",
    "UPDATE_TASK",
    "WORKER_MODELS_PREFIX",
    "BrokerUnavailable",
    "Call",
    "Disagreement",
    "Failure",
    "FrameReader",
    "FrameTooLong",
    "LaneRequest",
    "LeanPublisher",
    "MalformedLaneMessage",
    "Outcome",
    "PredictionExpired",
    "PredictionFailed",
    "Registration",
    "TaskMessage",
    "Verdict",
    "amqp_queues",
    "brief",
    "classify",
    "client_app",
    "declaration_of",
    "decode_lane_request",
    "encode_lane_request",
    "entry_json_of_call",
    "error_from_result",
    "error_result",
    "frame",
    "is_redis_url",
    "kept_connection",
    "lane_store_url",
    "message_of",
    "queue_disagreement",
    "record_entry",
    "redis_problem",
    "reply_key",
    "send_all",
    "sqlstate",
    "trades_dead_letter_queue",
    "transport_for",
    "update_entry",
    "waits_on_reply",
]
