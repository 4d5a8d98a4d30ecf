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
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from db.extension import json_text
from db.models import PredictionCount, PredictionLog, TradeHistory
from db.timescale import timescale_installed

PRUNE_BATCH_ROWS = 10_000
PRUNE_MAX_BATCHES = 100  # a run deletes at most this many batches; the next run goes on
_LOCK_NAMESPACE = 0x7072  # "pr": apart from the trade locks ("tr") and other users'
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

_LOCK_BUCKETS_SQL = (
    "SELECT {function}(:namespace, bucket) FROM ("
    " SELECT DISTINCT hashtext(prediction_id) & :mask AS bucket"
    " FROM unnest(CAST(:prediction_ids AS text[])) AS prediction_id ORDER BY bucket"
    ") AS buckets"
)
_LOCK_SHARED = text(_LOCK_BUCKETS_SQL.format(function="pg_advisory_xact_lock_shared"))
_LOCK_EXCLUSIVE = text(_LOCK_BUCKETS_SQL.format(function="pg_advisory_xact_lock"))
# Insert what is new, count it per model version and UTC day (rows sorted: one lock
# order for every writer), fill in the trades that wait for it, and add a new shadow's
# pairs to its experiment's kept sums (db.compare), in one round trip.
# A repeated entry (a retry, a replay) inserts nothing, so it is neither counted nor
# linked again. The lock on the ids is taken before, in a statement of its own, so the
# snapshot this statement reads trade_history in comes after it.
_LOG_COUNT_AND_LINK = text(
    """
WITH given AS (
    SELECT * FROM json_to_recordset(CAST(:batch AS json)) AS given(
        prediction_id varchar, created_at timestamptz, model_name varchar, model_version varchar,
        model_type varchar, rows integer, predictions jsonb, latency_ms float8, request_id varchar,
        features jsonb, contributions jsonb, role varchar, shadow_of varchar,
        champion_version varchar, champion_predictions jsonb)
), new AS (
    INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version, model_type,
                                rows, predictions, latency_ms, request_id, features, contributions,
                                role, shadow_of)
    SELECT prediction_id, created_at, model_name, model_version, model_type, rows, predictions,
           latency_ms, request_id, features, contributions, role, shadow_of
    FROM given
    ON CONFLICT DO NOTHING
    RETURNING prediction_id, model_name, model_version, created_at, role
), counted AS (
    INSERT INTO prediction_counts AS counts
        (model_name, model_version, day, predictions, first_served, last_served)
    SELECT model_name, model_version, date_trunc('day', created_at, 'UTC'), count(*),
           min(created_at), max(created_at)
    FROM new GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (model_name, model_version, day) DO UPDATE SET
        predictions = counts.predictions + excluded.predictions,
        first_served = least(counts.first_served, excluded.first_served),
        last_served = greatest(counts.last_served, excluded.last_served)
), linked AS (
    UPDATE trade_history AS trade
    SET model_name = new.model_name, model_version = new.model_version
    FROM new
    WHERE trade.prediction_id = new.prediction_id AND trade.model_name IS NULL
    RETURNING 1
), pairs AS (
    -- A new shadow's pairs with its champion's answer (as the worker that ran both gave
    -- it), in the experiment it belongs to: its challenger's latest set at or before it.
    SELECT new.prediction_id AS shadow_id, new.created_at, new.model_name, new.model_version AS challenger,
           given.shadow_of, given.champion_version AS champion, experiment.since, experiment.threshold,
           pair.row_number, pair.champion_value, pair.challenger_value
    FROM new
    JOIN given ON given.prediction_id = new.prediction_id AND given.created_at = new.created_at
    CROSS JOIN LATERAL (
        SELECT e.since, e.threshold FROM shadow_experiments AS e
        WHERE e.model_name = new.model_name AND e.challenger = new.model_version AND e.since <= new.created_at
        ORDER BY e.since DESC LIMIT 1
    ) AS experiment
    CROSS JOIN LATERAL shadow_pairs(given.champion_predictions, given.predictions) AS pair
    WHERE new.role = 'shadow' AND given.shadow_of IS NOT NULL AND given.champion_version IS NOT NULL
      AND pair.champion_value IS NOT NULL AND pair.challenger_value IS NOT NULL
), summed AS (
    INSERT INTO shadow_pair_sums AS sums
        (model_name, challenger, since, champion, pairs, agreeing, abs_diff, champion_sum, challenger_sum,
         champion_squares, challenger_squares, products, champion_outside, challenger_outside)
    SELECT model_name, challenger, since, champion, count(*),
           count(*) FILTER (WHERE (champion_value >= threshold) = (challenger_value >= threshold)),
           sum(abs(champion_value - challenger_value)), sum(champion_value), sum(challenger_value),
           sum(champion_value * champion_value), sum(challenger_value * challenger_value),
           sum(champion_value * challenger_value),
           count(*) FILTER (WHERE champion_value NOT BETWEEN 0 AND 1),
           count(*) FILTER (WHERE challenger_value NOT BETWEEN 0 AND 1)
    FROM pairs GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (model_name, challenger, since, champion) DO UPDATE SET
        pairs = sums.pairs + excluded.pairs, agreeing = sums.agreeing + excluded.agreeing,
        abs_diff = sums.abs_diff + excluded.abs_diff,
        champion_sum = sums.champion_sum + excluded.champion_sum,
        challenger_sum = sums.challenger_sum + excluded.challenger_sum,
        champion_squares = sums.champion_squares + excluded.champion_squares,
        challenger_squares = sums.challenger_squares + excluded.challenger_squares,
        products = sums.products + excluded.products,
        champion_outside = sums.champion_outside + excluded.champion_outside,
        challenger_outside = sums.challenger_outside + excluded.challenger_outside
    RETURNING 1
), shadow_linked AS (
    INSERT INTO shadow_links (prediction_id, model_name, challenger, shadowed_at, shadow_id, since,
                              champion, champion_value, challenger_value)
    SELECT shadow_of, model_name, challenger, created_at, shadow_id, since, champion,
           champion_value, challenger_value
    FROM pairs WHERE row_number = 1
    ON CONFLICT DO NOTHING
    RETURNING prediction_id
), rechecked AS (
    -- The trades already linked to the champion's prediction: db.compare.fold scores them.
    INSERT INTO shadow_trade_changes (trade_id, opened_at)
    SELECT trade.trade_id, trade."timestamp" FROM trade_history AS trade
    WHERE trade.prediction_id IN (SELECT prediction_id FROM shadow_linked)
    RETURNING 1
)
SELECT (SELECT count(*) FROM new) AS inserted, (SELECT count(*) FROM linked) AS linked
"""
)
_IS_HYPERTABLE = text(
    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
    " WHERE hypertable_schema = current_schema() AND hypertable_name = 'prediction_log')"
)
_DROP_CHUNKS = text(
    "SELECT count(*) FROM drop_chunks('prediction_log', older_than => CAST(:cutoff AS timestamptz))"
)


def _lock(session: Session, statement, prediction_ids: Sequence[str]) -> None:
    session.execute(
        statement,
        {
            "namespace": _LOCK_NAMESPACE,
            "mask": _LOCK_BUCKETS - 1,
            "prediction_ids": sorted(set(prediction_ids)),
        },
    )


def log_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Insert logged predictions (JSON-ready dicts of LOGGED_FIELDS, and for a shadow its
    champion's `champion_version` and `champion_predictions`), count the new ones
    and link the trades waiting for them; returns (inserted, trades linked). Does not commit."""
    if not rows:
        return 0, 0
    _lock(session, _LOCK_SHARED, [row["prediction_id"] for row in rows])
    # The batch goes as one JSON document, which orjson writes in one pass; the server
    # unpacks it into rows. A parameter per column (arrays, quoted value by value by
    # psycopg2 in C) held the GIL for 2 ms a batch of 170, and the predict process's lane
    # threads waited it out: most of a caller's p99 (docs/benchmarks.md).
    inserted, linked = session.execute(_LOG_COUNT_AND_LINK, {"batch": json_text(rows)}).one()
    return inserted, linked


def lock_predictions(session: Session, prediction_ids: Sequence[str]) -> None:
    """Lock these prediction ids against a concurrent `log_predictions` (call before
    inserting trades that name them)."""
    _lock(session, _LOCK_EXCLUSIVE, prediction_ids)


def models_of(session: Session, prediction_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """prediction_id -> (model_name, model_version) of those logged; locks them against a
    concurrent `log_predictions` first (call before inserting the trades)."""
    if not prediction_ids:
        return {}
    _lock(session, _LOCK_EXCLUSIVE, prediction_ids)
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
