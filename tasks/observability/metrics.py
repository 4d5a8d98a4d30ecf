"""Prometheus metrics written by the workers (and by the web's publishing side).

With PROMETHEUS_MULTIPROC_DIR set (prometheus_client's multiprocess mode) every process
writes its values to files in that directory, and the web's /metrics adds up the files
of every process found under METRICS_DIR. The variable must be in the environment
before the process starts: prometheus_client reads it on import.
"""

from __future__ import annotations

import collections
import os
import socket
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from models import ModelError

HOSTNAME_PLACEHOLDER = "{hostname}"


def ensure_multiprocess_directory() -> None:
    """Create this process's metric directory, with `{hostname}` in its name made real.

    The files are named after PIDs, which repeat across containers, so replicas of one
    compose service need a directory each: `{hostname}` (the container's id) gives it.
    prometheus_client reads the variable again whenever it opens a file, which it does
    when a metric is created: this must run before the metrics below are defined.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    if HOSTNAME_PLACEHOLDER in directory:
        directory = directory.replace(HOSTNAME_PLACEHOLDER, socket.gethostname())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)


ensure_multiprocess_directory()

# -- trade journal (worker) -----------------------------------------------------------
WRITTEN = Counter("journal_entries_written", "Journal entries applied to the database", ["outcome"])
CONFLICTS = Counter("journal_conflicts", "Records refused because their trade_id exists with other content")
SPOOLED = Counter("journal_spooled_entries", "Entries spooled because the database was down")
REPLAYED = Counter("journal_replayed_entries", "Spooled entries replayed into the database")
DEAD_LETTERS = Counter("journal_dead_letters", "Entries dead-lettered, by reason", ["reason"])
OUTAGES = Counter(
    "journal_outages",
    "Operations of the journal that found a dependency unavailable (after their retries)",
    ["dependency"],
)
HELD = Gauge(
    "journal_held_entries",
    "Trade messages a worker holds unacknowledged: neither the database nor the spool takes them",
    multiprocess_mode="livesum",
)

STATS_FOLDED = Counter(
    "trade_stats_folded_changes", "Changes to trade_history folded into the kept statistics by beat's task"
)
CHUNKS_CONVERTED = Counter(
    "columnstore_chunks_converted", "TimescaleDB chunks beat's task converted to the columnstore", ["table"]
)

PREDICTIONS_LOGGED = Counter(
    "prediction_log_entries_written",
    "Prediction log entries written to the database (duplicate: logged before, by a retry or replay)",
    ["outcome"],
)
TRADES_LINKED = Counter(
    "journal_trades_linked", "Trades given the model version of their prediction (lineage)"
)

# -- trade journal (publishing side: the web's TradeJournal, or a bot's) ---------------
OUTBOX_SPOOLED = Counter(
    "journal_outbox_spooled_entries", "Trade messages kept in the local outbox because the broker was down"
)
OUTBOX_SENT = Counter("journal_outbox_sent_entries", "Trade messages sent on from the local outbox")

# -- model serving (worker) -----------------------------------------------------------
PREDICTIONS = Counter(
    "predictions",
    "Prediction requests answered, by model, version, outcome and role (champion, challenger, "
    "shadow: a challenger's run of the champion's input, pinned: a version asked for)",
    ["model", "version", "outcome", "role"],
)
SHADOW_SKIPPED = Counter(
    "shadow_predictions_skipped",
    "Champion predictions a shadow challenger did not run: its queue was full (it cannot keep up)",
    ["model"],
)
PREDICTION_LOG_DROPPED = Counter(
    "prediction_log_dropped_entries",
    "Prediction log entries given up: neither the database nor the spool took them for too long",
)
MODEL_LOAD_FAILURES = Counter(
    "model_load_failures",
    "Model file versions a worker process could not load (the previous version, if any, kept serving)",
    ["model", "code"],
)
DIRECT_FALLBACKS = Counter(
    "prediction_direct_fallbacks",
    "Synchronous predictions sent over the Redis lane because no predict process took them on a direct "
    "connection, by reason (unregistered: none registered; unreachable: refused; closed: closed "
    "before answering)",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "prediction_batch_size",
    "Prediction requests served by one micro-batch (one pool call of a worker)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)

# Failures where the requested model exists, so its name is a bounded label value; any
# other failure (unknown name, expired, worker lost) is counted under model "unknown".
_MODEL_EXISTS = {
    "input_mismatch",
    "model_type_mismatch",
    "model_unloadable",
    "model_refused",
    "model_loading",
    "explanation_unsupported",
}


def count_predictions(answered: Iterable[tuple[Any, dict[str, Any] | ModelError]]) -> None:
    """Count answered predictions, (requested model, payload or ModelError) each: one
    increment per label set, so a batch of a hundred costs a few."""
    counts: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
    for requested_model, outcome in answered:
        if isinstance(outcome, ModelError):
            known = outcome.code in _MODEL_EXISTS and isinstance(requested_model, str)
            counts[(requested_model if known else "unknown", "", outcome.code, "")] += 1
        else:
            model, version = str(outcome.get("model_name")), str(outcome.get("model_version"))
            counts[(model, version, "ok", str(outcome.get("role", "champion")))] += 1
    for labels, count in counts.items():
        PREDICTIONS.labels(*labels).inc(count)


def observe_batch_size(requests: int) -> None:
    """Record the size of one micro-batch of predictions."""
    BATCH_SIZE.observe(requests)
