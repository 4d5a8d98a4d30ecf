"""The prediction log's SQL: write logged predictions, link trades to them, read, prune.

A logged prediction is written once: `ON CONFLICT DO NOTHING` on its key
`(prediction_id, created_at)`, which a retry or a replay repeats exactly. What it inserts
is counted in `prediction_counts` (per model version and day) in the same transaction,
so the performance views never read the whole log.

Lineage is resolved whichever side lands second. A trade recorded with a `prediction_id`
but no model looks the prediction up when it is inserted; a prediction, when it is
logged, fills in the trades that wait for it. Both sides take advisory locks on the
prediction ids' buckets (the log's shared, the trades' exclusive) before they read, so
the two can never miss each other in concurrent transactions.

The log's write is a function in the database (migrations/versions/009), whose plan the
server keeps per connection: sent as text, the statement was parsed and planned again
for every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from db.entries import PredictionEntry
from db.models import PredictionCount, PredictionLog, TradeHistory
from db.timescale import timescale_installed

PRUNE_BATCH_ROWS = 10_000
PRUNE_MAX_BATCHES = 100  # a run deletes at most this many batches; the next run goes on
# Revisions 008 (the trades' triggers) and 009 (the log's write) use these two as numbers.
_LOCK_NAMESPACE = 0x7072  # "pr" (28786): apart from the trade locks ("tr") and other users'
_LOCK_BUCKETS = 256  # bounds the locks a transaction holds, however large its batch
LOGGED_FIELDS = (
    "prediction_id",
    "created_at",
    "model_name",
    "model_version",
    "model_type",
    "rows",
    "predictions",
    "latency_ms",
    "request_id",
    "features",
    "contributions",
    "role",
    "shadow_of",
)

# The trades' side; the log's shared lock on the same buckets is in its function (below).
_LOCK_EXCLUSIVE = text(
    "SELECT pg_advisory_xact_lock(:namespace, bucket) FROM ("
    " SELECT DISTINCT hashtext(prediction_id) & :mask AS bucket"
    " FROM unnest(CAST(:prediction_ids AS text[])) AS prediction_id ORDER BY bucket"
    ") AS buckets"
)
# The write (revision 009's function): lock the ids' buckets (shared), then insert what
# is new, count it per model version and UTC day, fill in the trades that wait for it and
# add a new shadow's pairs to its experiment's kept sums (db.compare). A repeated entry (a
# retry, a replay) inserts nothing, so it is neither counted nor linked again. The server
# keeps its plan per connection; a change to it is a new revision (CREATE OR REPLACE).
_LOG_BATCH = text(
    "SELECT logged, trades_linked"
    " FROM log_prediction_batch(CAST(:batch AS json), CAST(:prediction_ids AS text[]))"
)
_IS_HYPERTABLE = text(
    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
    " WHERE hypertable_schema = current_schema() AND hypertable_name = 'prediction_log')"
)
_DROP_CHUNKS = text(
    "SELECT count(*) FROM drop_chunks('prediction_log', older_than => CAST(:cutoff AS timestamptz))"
)


def _lock(session: Session, prediction_ids: Sequence[str]) -> None:
    session.execute(
        _LOCK_EXCLUSIVE,
        {
            "namespace": _LOCK_NAMESPACE,
            "mask": _LOCK_BUCKETS - 1,
            "prediction_ids": sorted(set(prediction_ids)),
        },
    )


def log_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Insert logged predictions (dicts of LOGGED_FIELDS, JSON-ready but `created_at`, and
    for a shadow its champion's `champion_version` and `champion_predictions`), count the
    new ones and link the trades waiting for them; returns (inserted, trades linked).
    Does not commit."""
    return log_entries(session, [PredictionEntry.of(row) for row in rows])


def log_entries(session: Session, entries: Sequence[PredictionEntry]) -> tuple[int, int]:
    """`log_predictions` for entries whose JSON is made already (a predict process makes
    it as it answers): the batch is their documents joined, sent as they are."""
    if not entries:
        return 0, 0
    # One JSON document, which the server unpacks into rows. A parameter per column
    # (arrays, quoted value by value by psycopg2 in C) held the GIL for 2 ms a batch of
    # 170, and the predict process's lane threads waited it out (docs/benchmarks.md).
    batch = b"[" + b",".join(entry.document for entry in entries) + b"]"
    prediction_ids = [entry.prediction_id for entry in entries]  # the function orders the locks
    inserted, linked = session.execute(
        _LOG_BATCH, {"batch": batch.decode(), "prediction_ids": prediction_ids}
    ).one()
    return inserted, linked


def lock_predictions(session: Session, prediction_ids: Sequence[str]) -> None:
    """Lock these prediction ids against a concurrent `log_predictions` (call before
    inserting trades that name them)."""
    _lock(session, prediction_ids)


def models_of(session: Session, prediction_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """prediction_id -> (model_name, model_version) of those logged; locks them against a
    concurrent `log_predictions` first (call before inserting the trades)."""
    if not prediction_ids:
        return {}
    _lock(session, prediction_ids)
    found = session.execute(
        select(PredictionLog.prediction_id, PredictionLog.model_name, PredictionLog.model_version).where(
            PredictionLog.prediction_id.in_(sorted(set(prediction_ids)))
        )
    )
    return {row.prediction_id: (row.model_name, row.model_version) for row in found}


def logged_prediction(session: Session, prediction_id: str) -> dict[str, Any] | None:
    """One logged prediction, with the ids of the trades linked to it; None if never logged."""
    entry = session.scalars(
        # One row per id, but for a bot that reused a task id: then the first served.
        select(PredictionLog)
        .where(PredictionLog.prediction_id == prediction_id)
        .order_by(PredictionLog.created_at)
        .limit(1)
    ).first()
    if entry is None:
        return None
    fields = {name: getattr(entry, name) for name in LOGGED_FIELDS}
    fields["trade_ids"] = list(
        session.scalars(
            select(TradeHistory.trade_id)
            .where(TradeHistory.prediction_id == prediction_id)
            .order_by(TradeHistory.timestamp, TradeHistory.trade_id)
            .limit(1000)
        )
    )
    return fields


def served_versions(session: Session, model_name: str) -> dict[str, dict[str, Any]]:
    """model_version -> predictions logged, first and last served, for one model (from the
    counts per day, so it reads a few rows however long the log)."""
    rows = session.execute(
        select(
            PredictionCount.model_version,
            func.sum(PredictionCount.predictions).label("predictions"),
            func.min(PredictionCount.first_served).label("first_served"),
            func.max(PredictionCount.last_served).label("last_served"),
        )
        .where(PredictionCount.model_name == model_name)
        .group_by(PredictionCount.model_version)
    )
    return {
        row.model_version: {
            "predictions": int(row.predictions),
            "first_served": row.first_served,
            "last_served": row.last_served,
        }
        for row in rows
    }


# DISTINCT model_name as a walk down each table's (model_name, ...) index, one probe per
# name: a plain DISTINCT would read every row of the log on every dashboard refresh.
_DISTINCT_NAMES = """
WITH RECURSIVE names AS (
    (SELECT model_name FROM {table} WHERE model_name IS NOT NULL ORDER BY model_name LIMIT 1)
    UNION ALL
    SELECT (SELECT model_name FROM {table} WHERE model_name > names.model_name
            ORDER BY model_name LIMIT 1)
    FROM names WHERE names.model_name IS NOT NULL
)
SELECT model_name FROM names WHERE model_name IS NOT NULL
"""
_LOGGED_NAMES = text(_DISTINCT_NAMES.format(table="prediction_counts"))
_TRADED_NAMES = text(_DISTINCT_NAMES.format(table="trade_history"))


_KEPT_TRADED_NAMES = text(
    "SELECT model_name FROM trade_stats_buckets"
    " WHERE keyset = 2 AND width = 'all' AND model_name IS NOT NULL AND trades > 0"
)


def logged_model_names(session: Session) -> list[str]:
    """Every model name the prediction log or the trades (their lineage) carry, sorted.

    The traded names come from the kept statistics once they are built (a row per model):
    trade_history's own index is not in its compressed chunks."""
    built = session.scalar(text("SELECT built FROM trade_stats_state LIMIT 1"))
    traded = session.scalars(_KEPT_TRADED_NAMES if built else _TRADED_NAMES)
    return sorted(set(session.scalars(_LOGGED_NAMES)) | set(traded))


_PRUNE_LINKS = text(
    "DELETE FROM shadow_links WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM shadow_links WHERE shadowed_at < :cutoff LIMIT :limit))"
)


def _prune_shadow_links(session: Session, cutoff: datetime) -> None:
    """The shadow links go with their shadows (a trade that changes later is scored by
    nothing, as a scan of the pruned log would score it); each batch commits."""
    for _ in range(PRUNE_MAX_BATCHES):
        count = session.execute(_PRUNE_LINKS, {"cutoff": cutoff, "limit": PRUNE_BATCH_ROWS}).rowcount
        session.commit()
        if count < PRUNE_BATCH_ROWS:
            break


def prune_prediction_log(session: Session, now: datetime, retention_days: int) -> tuple[int, str]:
    """Remove what is older than the retention: whole chunks on TimescaleDB (a chunk goes
    once all of it is older), else bounded DELETEs, each its own transaction. Returns
    how many chunks or rows went, and which of the two. Commits."""
    cutoff = now - timedelta(days=retention_days)
    _prune_shadow_links(session, cutoff)
    if timescale_installed(session) and session.scalar(_IS_HYPERTABLE):
        dropped = session.scalar(_DROP_CHUNKS, {"cutoff": cutoff})
        session.commit()
        return int(dropped or 0), "chunks"
    deleted = 0
    oldest = select(PredictionLog.prediction_id, PredictionLog.created_at).where(
        PredictionLog.created_at < cutoff
    )
    for _ in range(PRUNE_MAX_BATCHES):
        batch = oldest.limit(PRUNE_BATCH_ROWS).subquery()
        count = session.execute(
            delete(PredictionLog).where(
                PredictionLog.prediction_id == batch.c.prediction_id,
                PredictionLog.created_at == batch.c.created_at,
            )
        ).rowcount
        session.commit()
        deleted += count
        if count < PRUNE_BATCH_ROWS:
            break
    return deleted, "rows"
