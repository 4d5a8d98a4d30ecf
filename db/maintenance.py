"""The journal's upkeep, driven by beat, and where it stands.

TimescaleDB's own job scheduler cannot be relied on: on PostgreSQL 15.20 with TimescaleDB
2.27.2 every background job ends marked failed ("cannot drop portal while it is being
set up") although its work was done. So beat runs the upkeep itself, and whether it
keeps up is read from the data, not from a job's record: how old the oldest change
waiting for the statistics is, which chunks past their age are still rows, how old the
oldest logged prediction is.

- `compress_due`: converts to the columnstore every chunk of trade_history and
  trade_closes older than TRADES_COMPRESS_AFTER_DAYS, and of prediction_log older than
  PREDICTION_LOG_COMPRESS_AFTER_DAYS (a chunk a late update or insert left partly in
  rows is compressed again), each chunk in a transaction of its own;
- `status`: the upkeep's state for /readyz, /metrics and the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from config import Settings
from db.models import PredictionLog
from db.stats.refresh import state as stats_state
from db.timescale import timescale_installed

TRADE_TABLES = ("trade_history", "trade_closes")
PREDICTION_TABLES = ("prediction_log",)
_DUE_CHUNKS = text(
    """
    SELECT format('%I.%I', chunk_schema, chunk_name) AS chunk, is_compressed
    FROM timescaledb_information.chunks
    WHERE hypertable_schema = current_schema() AND hypertable_name = :table AND range_end < :before
    ORDER BY range_start
    """
)
# Converts a chunk of rows, compresses again one a late write left partly in rows, and
# leaves a converted one as it is (a notice).
_COMPRESS = text("SELECT compress_chunk(CAST(:chunk AS regclass), if_not_compressed => true)")
_COLUMNSTORE = text(
    """
    SELECT h.hypertable_name AS table,
           count(c.chunk_name) AS chunks,
           count(c.chunk_name) FILTER (WHERE c.is_compressed) AS compressed,
           count(c.chunk_name) FILTER (WHERE NOT c.is_compressed AND c.range_end < :trades_before
                                             AND h.hypertable_name IN ('trade_history', 'trade_closes'))
         + count(c.chunk_name) FILTER (WHERE NOT c.is_compressed AND c.range_end < :predictions_before
                                             AND h.hypertable_name = 'prediction_log') AS due
    FROM timescaledb_information.hypertables AS h
    LEFT JOIN timescaledb_information.chunks AS c USING (hypertable_schema, hypertable_name)
    WHERE h.hypertable_schema = current_schema() AND h.compression_enabled
    GROUP BY h.hypertable_name ORDER BY h.hypertable_name
    """
)


@dataclass(frozen=True)
class Ages:
    """How old a chunk must be to be converted (None: never); how long the log is kept."""

    trades: timedelta | None
    predictions: timedelta | None
    retention: timedelta | None

    @classmethod
    def of(cls, settings: Settings) -> Ages:
        """TRADES_COMPRESS_AFTER_DAYS, PREDICTION_LOG_COMPRESS_AFTER_DAYS and
        PREDICTION_LOG_RETENTION_DAYS (0: never)."""

        def days(value: int) -> timedelta | None:
            return timedelta(days=value) if value > 0 else None

        return cls(
            days(settings.trades_compress_after_days),
            days(settings.prediction_log_compress_after_days),
            days(settings.prediction_log_retention_days),
        )


def compress_due(session: Session, now: datetime, ages: Ages) -> dict[str, int]:
    """Convert every due chunk (TimescaleDB only); returns chunks converted per table.
    Commits after each chunk: a long run keeps what it did if it stops."""
    converted: dict[str, int] = {}
    if not timescale_installed(session) or not _columnstore_tables(session):
        return converted
    plan = [(table, ages.trades) for table in TRADE_TABLES] + [
        (table, ages.predictions) for table in PREDICTION_TABLES
    ]
    for table, age in plan:
        if age is None or table not in _columnstore_tables(session):
            continue
        chunks = session.execute(_DUE_CHUNKS, {"table": table, "before": now - age}).all()
        session.commit()
        for chunk, was_compressed in chunks:
            session.execute(_COMPRESS, {"chunk": chunk})
            session.commit()
            if not was_compressed:
                converted[table] = converted.get(table, 0) + 1
    return converted


def _columnstore_tables(session: Session) -> set[str]:
    return set(
        session.scalars(
            text(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
                " WHERE hypertable_schema = current_schema() AND compression_enabled"
            )
        )
    )


def status(session: Session, now: datetime, ages: Ages, staleness_s: float) -> dict[str, Any]:
    """Where the upkeep stands; each part says `ok` (keeping up) and why not."""
    return {
        "statistics": _statistics(session, now, staleness_s),
        "columnstore": _columnstore(session, now, ages),
        "retention": _retention(session, now, ages),
    }


def _statistics(session: Session, now: datetime, staleness_s: float) -> dict[str, Any]:
    kept = stats_state(session)
    lag_s = (now - kept.oldest_pending).total_seconds() if kept.oldest_pending is not None else 0.0
    part: dict[str, Any] = {
        "built": kept.built,
        "pending": kept.pending,
        "lag_s": round(max(lag_s, 0.0), 1),
        "watermark": kept.watermark.isoformat() if kept.watermark else None,
        "refreshed_at": kept.refreshed_at.isoformat() if kept.refreshed_at else None,
    }
    # Beat folds every half of the staleness allowed; a read folds what is older itself.
    allowed_s = max(staleness_s, 1.0) * 4 + 10
    if not kept.built:
        part.update(ok=False, error="the kept statistics are not built yet: `flask --app web stats refresh`")
    elif lag_s > allowed_s:
        part.update(
            ok=False, error=f"changes wait {lag_s:.0f}s to be folded: is beat running, and a trades worker?"
        )
    elif kept.watermark is not None and now - kept.watermark > timedelta(hours=3):
        part.update(
            ok=False, error="the watermark is over three hours old: is beat running, and a trades worker?"
        )
    else:
        part["ok"] = True
    return part


def _columnstore(session: Session, now: datetime, ages: Ages) -> dict[str, Any]:
    if not timescale_installed(session):
        return {"ok": True, "tables": {}, "note": "plain PostgreSQL: no columnstore"}
    far = now - timedelta(days=365_000)
    rows = session.execute(
        _COLUMNSTORE,
        {
            "trades_before": now - ages.trades if ages.trades else far,
            "predictions_before": now - ages.predictions if ages.predictions else far,
        },
    )
    tables = {row.table: {"chunks": row.chunks, "compressed": row.compressed, "due": row.due} for row in rows}
    due = {name: table["due"] for name, table in tables.items() if table["due"]}
    part: dict[str, Any] = {"ok": not due, "tables": tables}
    if due:
        listed = ", ".join(f"{name} {count}" for name, count in due.items())
        part["error"] = (
            f"chunks past their age still in rows ({listed}): is beat running, and a trades worker?"
        )
    return part


def _retention(session: Session, now: datetime, ages: Ages) -> dict[str, Any]:
    oldest = session.scalar(select(func.min(PredictionLog.created_at)))
    part: dict[str, Any] = {
        "retention_days": ages.retention.days if ages.retention else None,
        "oldest_prediction": oldest.isoformat() if oldest else None,
    }
    # Whole days of chunks go at once, hourly: a day and an hour of slack.
    if (
        ages.retention is not None
        and oldest is not None
        and oldest < now - ages.retention - timedelta(days=1, hours=1)
    ):
        part.update(ok=False, error="prediction log entries past their retention remain: is beat running?")
    else:
        part["ok"] = True
    return part
