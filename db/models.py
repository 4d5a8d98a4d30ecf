"""SQLAlchemy models of the trade journal (typed `Mapped[...]` columns).

`trade_history` becomes a TimescaleDB hypertable on `timestamp` where TimescaleDB is
installed. A hypertable's unique indexes must contain its time column, so the key is
`(trade_id, timestamp)`; the uniqueness of `trade_id` alone is kept by the write path
(`db.repository`), which serialises writers per trade_id.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
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


class TradeIdLocation(Base):
    """Each trade's opening time, under a 64-bit hash of its trade_id (migration 006, kept
    by triggers): the journal finds a trade's row in its own chunk instead of searching
    every chunk by trade_id. A hash shared by two trade_ids only adds a candidate time:
    the row found is checked by its own trade_id."""

    __tablename__ = "trade_ids"

    trade_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # hashtextextended(trade_id, 0)
    timestamp: Mapped[datetime] = mapped_column(primary_key=True)


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
    __table_args__ = (
        Index("ix_prediction_log_created_at", text("created_at DESC")),
        # A release's comparison: a challenger's shadows in a window.
        Index(
            "ix_prediction_log_shadows",
            "model_name",
            "model_version",
            "created_at",
            postgresql_where=text("role = 'shadow'"),
        ),
    )

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
    # Which side of the model's release answered (champion, challenger, shadow, pinned;
    # none before releases existed: champion), and a shadow's champion `prediction_id`.
    role: Mapped[str | None] = mapped_column(String(16))
    shadow_of: Mapped[str | None] = mapped_column(String(64))


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


class ModelReleaseState(Base):
    """A model name's release: its champion (pinned; none serves the file's current
    version), the challenger and its mode, the guards that roll the challenger back."""

    __tablename__ = "model_release_state"

    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    champion: Mapped[str | None] = mapped_column(String(64))
    previous_champion: Mapped[str | None] = mapped_column(String(64))  # what a rollback restores
    challenger: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str | None] = mapped_column(String(8))  # shadow, canary
    percent: Mapped[int | None] = mapped_column(SmallInteger)
    guards: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    challenger_since: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class ModelReleaseChange(Base):
    """One change to a release, as `GET .../releases` shows it."""

    __tablename__ = "model_releases"
    __table_args__ = (Index("ix_model_releases_model_at", "model_name", text("at DESC")),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True, server_default=text("now()"))
    model_name: Mapped[str] = mapped_column(String(255))
    who: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))  # release, promote, rollback, guard
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str | None] = mapped_column(String(8))
    percent: Mapped[int | None] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(Text)


# -- the kept comparison (db.compare): a challenger against its champion, per experiment ------
# An experiment is a challenger set on a model name at `since` (a release's challenger_since).
# Its pair sums are kept as the shadows are logged; its trade sums as the linked trades
# change (a trigger logs the change, db.compare.fold folds it). Keyed by the champion's
# version too: a comparison may name the champion.


class ShadowExperiment(Base):
    """A challenger set at `since`, and the decision threshold its sums are kept at."""

    __tablename__ = "shadow_experiments"

    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    challenger: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime] = mapped_column(primary_key=True)
    threshold: Mapped[float]


class _ExperimentKey:
    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    challenger: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime] = mapped_column(primary_key=True)
    champion: Mapped[str] = mapped_column(String(64), primary_key=True)


def _zero() -> Any:
    return mapped_column(server_default=text("0"))


class ShadowPairSums(_ExperimentKey, Base):
    """The additive sums of an experiment's shadow pairs (element by element)."""

    __tablename__ = "shadow_pair_sums"

    pairs: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    agreeing: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    abs_diff: Mapped[float] = _zero()
    champion_sum: Mapped[float] = _zero()
    challenger_sum: Mapped[float] = _zero()
    champion_squares: Mapped[float] = _zero()
    challenger_squares: Mapped[float] = _zero()
    products: Mapped[float] = _zero()
    # Values outside [0, 1]: a side with any is not a probability (no Brier, no log-loss).
    champion_outside: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    challenger_outside: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ShadowLink(Base):
    """A champion prediction's shadow by a challenger: the first rows' pair, which the
    trades linked to the champion prediction are scored by."""

    __tablename__ = "shadow_links"
    __table_args__ = (Index("ix_shadow_links_shadowed_at", "shadowed_at"),)

    prediction_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the champion's
    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    challenger: Mapped[str] = mapped_column(String(64), primary_key=True)
    shadowed_at: Mapped[datetime] = mapped_column(primary_key=True)
    shadow_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime]
    champion: Mapped[str] = mapped_column(String(64))
    champion_value: Mapped[float]
    challenger_value: Mapped[float]


class ShadowTrade(Base):
    """A closed trade as its experiment's trade sums hold it (what a change takes back)."""

    __tablename__ = "shadow_trades"

    trade_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    challenger: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime]
    champion: Mapped[str] = mapped_column(String(64))
    champion_value: Mapped[float]
    challenger_value: Mapped[float]
    threshold: Mapped[float]
    won: Mapped[bool | None]
    pnl: Mapped[Decimal | None] = mapped_column(Numeric)


class ShadowTradeSums(_ExperimentKey, Base):
    """The sums of an experiment's closed linked trades, and their bootstrap replicates
    (`db.compare.bootstrap`: element r sums weight x Brier difference, and weight)."""

    __tablename__ = "shadow_trade_sums"

    trades: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    scored: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    champion_right: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    challenger_right: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    champion_error: Mapped[float] = _zero()
    challenger_error: Mapped[float] = _zero()
    champion_log: Mapped[float] = _zero()
    challenger_log: Mapped[float] = _zero()
    taken: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    declined: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pnl_taken: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    pnl_declined: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    replicate_diffs: Mapped[list[float] | None] = mapped_column(ARRAY(Float(precision=53)))
    replicate_weights: Mapped[list[float] | None] = mapped_column(ARRAY(Float(precision=53)))


class ShadowTradeChange(Base):
    """A trade the kept comparison must look at again (logged by triggers, migration 008,
    and by a shadow logged after its champion's trades)."""

    __tablename__ = "shadow_trade_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    logged_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=text("clock_timestamp()"))
    trade_id: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime]


# -- kept statistics (db.stats): what the statistics, performance and dashboard read ------------
# Keyed by a keyset (which of symbol, model_name, model_version name a row's key; the others
# are null) so that every level and filter of the statistics reads rows of its own: drawdown
# does not compose across keys. NULLS NOT DISTINCT: trades without a model are a group.
_CELL_KEY = ("keyset", "symbol", "model_name", "model_version")


class _KeptKey:
    keyset: Mapped[int] = mapped_column(SmallInteger)
    symbol: Mapped[str | None] = mapped_column(String(32))
    model_name: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(64))


class _Run:
    """A drawdown run of booked trades in close order (`db.stats.drawdown.Run`)."""

    booked_n: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    booked_net: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    booked_high: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    booked_low: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    booked_fall: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))


class TradeStatsChange(Base):
    """A change to trade_history as triggers logged it (migration 004): the row's image
    before (sign -1) or after (sign +1). The fold (`db.stats.refresh`) takes them in id order."""

    __tablename__ = "trade_stats_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    logged_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=text("clock_timestamp()"))
    sign: Mapped[int] = mapped_column(SmallInteger)
    trade_id: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime]  # close_timestamp, or the opening time where it is null
    symbol: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(64))
    closed: Mapped[bool]
    won: Mapped[bool | None]
    realized_pnl: Mapped[float | None]
    pnl_pct: Mapped[float | None]
    fees: Mapped[float | None]


class TradeStatsBucket(_KeptKey, _Run, Base):
    """The additive statistics of the trades opened in one bucket (`width` 'day', 'week',
    or 'all' with bucket -infinity) of one key, and the drawdown of its booked trades
    closed before the watermark (folded from its segments)."""

    __tablename__ = "trade_stats_buckets"
    __table_args__ = (
        Index(
            "ux_trade_stats_buckets",
            "width",
            "bucket",
            *_CELL_KEY,
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    width: Mapped[str] = mapped_column(String(4))
    # Every trade: counts, PnL and fees; then the closed ones alone (the `closed` filter).
    trades: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    closed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    wins: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    decided: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pnl_n: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pnl_sum: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    fees_sum: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    closed_wins: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    closed_decided: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    closed_pnl_n: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    closed_pnl_sum: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    closed_fees_sum: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    # Booked (closed with a realized PnL): profit factor; scored (closed with pnl_pct): Sharpe, Sortino.
    gross_profit: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    gross_loss: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    scored_n: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pct_sum: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    pct_squares: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    downside_squares: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    # (_Run: the drawdown of the booked trades closed before the watermark, in close order.)


class TradeClose(Base):
    """A booked trade (closed, with realized PnL) where closes are read: by close time.

    Kept by the fold from the change log, so the drawdown, the equity curves and the
    reads of the last hour never search trade_history (partitioned by opening time) for
    its closes. A hypertable on `closed_at` where TimescaleDB is used.
    """

    __tablename__ = "trade_closes"
    __table_args__ = (
        # A close day's trades by opening time (`until` reads the holdovers); a version's last
        # closes. The key, by close time first, gives the last closes of all: newest chunk
        # first on TimescaleDB, whose time dimension it leads with.
        Index("ix_trade_closes_close_day", "close_day", "opened_at"),
        Index("ix_trade_closes_model", "model_name", "model_version", "closed_at", "trade_id"),
    )

    closed_at: Mapped[datetime] = mapped_column(primary_key=True)
    trade_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    close_day: Mapped[datetime]
    opened_at: Mapped[datetime]
    pnl: Mapped[Decimal] = mapped_column(Numeric)
    symbol: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(64))


class TradeStatsSegment(_KeptKey, _Run, Base):
    """The drawdown state of one key's booked trades that closed on `close_day` (before the
    watermark) and opened in `bucket` of `width` ('all': any time), in close order; with
    the range of their opening times."""

    __tablename__ = "trade_stats_segments"
    __table_args__ = (
        Index(
            "ux_trade_stats_segments",
            "width",
            "bucket",
            *_CELL_KEY,
            "close_day",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_trade_stats_segments_close_day", "close_day"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    close_day: Mapped[datetime] = mapped_column(primary_key=True)
    width: Mapped[str] = mapped_column(String(4))
    bucket: Mapped[datetime]
    first_opened: Mapped[datetime]
    last_opened: Mapped[datetime]


class TradeStatsProfile(_KeptKey, _Run, Base):
    """The drawdown state of one key's booked trades that closed on `close_day` (before the
    watermark) and opened at or after `opened_from`, in close order: what `since` reads.

    `opened_from` takes the day's start, and the opening time of each trade of the day that
    opened on another day, so any `since` outside the day finds its exact row."""

    __tablename__ = "trade_stats_profiles"
    __table_args__ = (
        Index(
            "ux_trade_stats_profiles",
            *_CELL_KEY,
            "close_day",
            "opened_from",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_trade_stats_profiles_close_day", "close_day"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    close_day: Mapped[datetime] = mapped_column(primary_key=True)
    opened_from: Mapped[datetime]


# One row: how far the kept statistics are built. `watermark`: booked trades that closed
# before it are in the segments and profiles; later ones are read from trade_closes.
TRADE_STATS_STATE = Table(
    "trade_stats_state",
    Base.metadata,
    Column("built", Boolean, nullable=False, server_default=text("false")),
    Column("watermark", DateTime(timezone=True)),
    Column("refreshed_at", DateTime(timezone=True)),
    Column("built_at", DateTime(timezone=True)),
)
