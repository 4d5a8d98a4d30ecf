"""SQLAlchemy models of the trade journal (typed `Mapped[...]` columns).

`trade_history` becomes a TimescaleDB hypertable on `timestamp` where TimescaleDB is
installed. A hypertable's unique indexes must contain its time column, so the key is
`(trade_id, timestamp)`; the uniqueness of `trade_id` alone is kept by the write path
(`db.repository`), which serialises writers per trade_id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Float, Identity, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        float: Float(precision=53),
        dict[str, Any]: JSONB,
    }


class TradeHistory(Base):
    __tablename__ = "trade_history"
    __table_args__ = (
        Index("ix_trade_history_symbol_timestamp", "symbol", text("timestamp DESC")),
        Index("ix_trade_history_timestamp", text("timestamp DESC")),
        # Lineage: a prediction's log entry finds the trades waiting for its model version.
        Index(
            "ix_trade_history_prediction_id",
            "prediction_id",
            postgresql_where=text("prediction_id IS NOT NULL"),
        ),
        Index("ix_trade_history_model", "model_name", "model_version", text("timestamp DESC")),
    )

    trade_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    order_type: Mapped[str] = mapped_column(String(8))
    amount: Mapped[float]
    entry_price: Mapped[float]
    exit_price: Mapped[float | None]
    realized_pnl: Mapped[float | None]
    pnl_pct: Mapped[float | None]
    fees: Mapped[float | None]
    market_regime: Mapped[str | None] = mapped_column(String(32))
    bull_confidence: Mapped[float | None]
    bear_confidence: Mapped[float | None]
    decision_confidence: Mapped[float | None]
    won: Mapped[bool | None]
    closed: Mapped[bool] = mapped_column(server_default=text("false"))
    close_timestamp: Mapped[datetime | None]
    agent_votes: Mapped[dict[str, Any] | None]
    signals: Mapped[dict[str, Any] | None]
    # Per update field, the order of the change it holds (`TradeUpdate.updated_at` in µs):
    # an older change arriving late (replayed, redelivered) leaves the field alone.
    update_stamps: Mapped[dict[str, Any] | None]
    # Lineage: the prediction that caused the trade, and the model version that made it
    # (given by the bot, or filled in from prediction_log once its entry lands).
    prediction_id: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(64))


class PendingTradeUpdate(Base):
    """An update that arrived before its trade; applied when the trade is recorded."""

    __tablename__ = "trade_pending_updates"
    __table_args__ = (Index("ix_trade_pending_updates_trade_id", "trade_id"),)

    # received_at is part of the key only so that every unique index in the schema
    # carries a time column, as TimescaleDB asks of hypertables.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=text("now()"))
    trade_id: Mapped[str] = mapped_column(String(64))
    updates: Mapped[dict[str, Any]]


class PredictionLog(Base):
    """One prediction as a worker served it (`prediction_id` is the job's id).

    A hypertable on `created_at` where TimescaleDB is used, so its key holds that column;
    a log entry is written once (its retries and replays carry the same `created_at`).
    """

    __tablename__ = "prediction_log"
    __table_args__ = (Index("ix_prediction_log_created_at", text("created_at DESC")),)

    prediction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(64))
    model_type: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    predictions: Mapped[Any] = mapped_column(JSONB)
    latency_ms: Mapped[float]
    request_id: Mapped[str | None] = mapped_column(String(128))
    # The input rows (at most PREDICTION_LOG_MAX_ROWS of them; none with PREDICTION_LOG_FEATURES=off).
    features: Mapped[Any | None] = mapped_column(JSONB)
    contributions: Mapped[Any | None] = mapped_column(JSONB)


class PredictionCount(Base):
    """Predictions logged per model version and day, kept as they are logged: the
    performance views read these few rows, never the whole log. Kept beyond the log's
    retention (a version's predictions served stay counted)."""

    __tablename__ = "prediction_counts"

    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[datetime] = mapped_column(primary_key=True)  # the UTC day's start
    predictions: Mapped[int] = mapped_column(BigInteger)
    first_served: Mapped[datetime]
    last_served: Mapped[datetime]
