"""Kept statistics: the change log that triggers on trade_history fill, the additive
statistics per bucket, the booked trades by close time, the drawdown segments and
profiles, and the state of the fold that keeps them (`db.stats`).

Revision ID: 004
Revises: 003
Create Date: 2026-12-06
"""

import logging

import sqlalchemy as sa
from alembic import op

from config import get_settings
from db.timescale import hypertables_in_use

revision = "004"
down_revision = "003"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

_KEY = (
    sa.Column("keyset", sa.SmallInteger(), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=True),
    sa.Column("model_name", sa.String(255), nullable=True),
    sa.Column("model_version", sa.String(64), nullable=True),
)
_KEY_NAMES = ("keyset", "symbol", "model_name", "model_version")


def _key():
    return [column.copy() for column in _KEY]


_DRAWDOWN = (
    ("booked_n", sa.BigInteger()),
    ("booked_net", sa.Numeric()),
    ("booked_high", sa.Numeric()),
    ("booked_low", sa.Numeric()),
    ("booked_fall", sa.Numeric()),
)


def _drawdown():
    return [sa.Column(name, type_, server_default=sa.text("0"), nullable=False) for name, type_ in _DRAWDOWN]


_SUMS = (
    ("trades", sa.BigInteger()),
    ("closed", sa.BigInteger()),
    ("wins", sa.BigInteger()),
    ("decided", sa.BigInteger()),
    ("pnl_n", sa.BigInteger()),
    ("pnl_sum", sa.Numeric()),
    ("fees_sum", sa.Numeric()),
    ("closed_wins", sa.BigInteger()),
    ("closed_decided", sa.BigInteger()),
    ("closed_pnl_n", sa.BigInteger()),
    ("closed_pnl_sum", sa.Numeric()),
    ("closed_fees_sum", sa.Numeric()),
    ("gross_profit", sa.Numeric()),
    ("gross_loss", sa.Numeric()),
    ("scored_n", sa.BigInteger()),
    ("pct_sum", sa.Numeric()),
    ("pct_squares", sa.Numeric()),
    ("downside_squares", sa.Numeric()),
    *_DRAWDOWN,
)

# Triggers log the image of a trade_history row that the statistics read. A statement
# trigger logs an INSERT's new rows and an UPDATE's old and new rows, leaving out the rows
# an UPDATE left equal in those columns; a row trigger logs a DELETE (TimescaleDB refuses
# DELETE triggers with transition tables on a hypertable with the columnstore). Whatever
# writes the rows (the journal, an import, an operator's SQL), the statistics see it.
_TRIGGERS = """
CREATE FUNCTION trade_stats_log_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO trade_stats_changes (sign, trade_id, opened_at, closed_at, symbol, model_name,
                                     model_version, closed, won, realized_pnl, pnl_pct, fees)
    SELECT 1, trade_id, "timestamp", coalesce(close_timestamp, "timestamp"), symbol, model_name,
           model_version, closed, won, realized_pnl, pnl_pct, fees
    FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION trade_stats_log_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The old images first: the fold pairs a trade's images in id order.
    INSERT INTO trade_stats_changes (sign, trade_id, opened_at, closed_at, symbol, model_name,
                                     model_version, closed, won, realized_pnl, pnl_pct, fees)
    SELECT -1, o.trade_id, o."timestamp", coalesce(o.close_timestamp, o."timestamp"), o.symbol,
           o.model_name, o.model_version, o.closed, o.won, o.realized_pnl, o.pnl_pct, o.fees
    FROM old_rows AS o
    WHERE NOT EXISTS (
        SELECT 1 FROM new_rows AS n
        WHERE n.trade_id = o.trade_id AND n."timestamp" = o."timestamp"
          AND (n.close_timestamp, n.symbol, n.model_name, n.model_version, n.closed, n.won,
               n.realized_pnl, n.pnl_pct, n.fees)
              IS NOT DISTINCT FROM
              (o.close_timestamp, o.symbol, o.model_name, o.model_version, o.closed, o.won,
               o.realized_pnl, o.pnl_pct, o.fees));
    INSERT INTO trade_stats_changes (sign, trade_id, opened_at, closed_at, symbol, model_name,
                                     model_version, closed, won, realized_pnl, pnl_pct, fees)
    SELECT 1, n.trade_id, n."timestamp", coalesce(n.close_timestamp, n."timestamp"), n.symbol,
           n.model_name, n.model_version, n.closed, n.won, n.realized_pnl, n.pnl_pct, n.fees
    FROM new_rows AS n
    WHERE NOT EXISTS (
        SELECT 1 FROM old_rows AS o
        WHERE n.trade_id = o.trade_id AND n."timestamp" = o."timestamp"
          AND (n.close_timestamp, n.symbol, n.model_name, n.model_version, n.closed, n.won,
               n.realized_pnl, n.pnl_pct, n.fees)
              IS NOT DISTINCT FROM
              (o.close_timestamp, o.symbol, o.model_name, o.model_version, o.closed, o.won,
               o.realized_pnl, o.pnl_pct, o.fees));
    RETURN NULL;
END $$;

CREATE FUNCTION trade_stats_log_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO trade_stats_changes (sign, trade_id, opened_at, closed_at, symbol, model_name,
                                     model_version, closed, won, realized_pnl, pnl_pct, fees)
    VALUES (-1, OLD.trade_id, OLD."timestamp", coalesce(OLD.close_timestamp, OLD."timestamp"),
            OLD.symbol, OLD.model_name, OLD.model_version, OLD.closed, OLD.won, OLD.realized_pnl,
            OLD.pnl_pct, OLD.fees);
    RETURN NULL;
END $$;

-- No trade left: nothing to keep, and nothing to build.
CREATE FUNCTION trade_stats_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE trade_stats_changes, trade_stats_buckets, trade_closes, trade_stats_segments,
             trade_stats_profiles;
    UPDATE trade_stats_state SET built = true, watermark = date_trunc('hour', now(), 'UTC'),
                                 built_at = now(), refreshed_at = now();
    RETURN NULL;
END $$;

CREATE TRIGGER trade_stats_inserted AFTER INSERT ON trade_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION trade_stats_log_inserted();
CREATE TRIGGER trade_stats_updated AFTER UPDATE ON trade_history
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trade_stats_log_updated();
CREATE TRIGGER trade_stats_deleted AFTER DELETE ON trade_history
    FOR EACH ROW EXECUTE FUNCTION trade_stats_log_deleted();
CREATE TRIGGER trade_stats_truncated AFTER TRUNCATE ON trade_history
    FOR EACH STATEMENT EXECUTE FUNCTION trade_stats_truncated();
"""
_DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS trade_stats_truncated ON trade_history;
DROP TRIGGER IF EXISTS trade_stats_deleted ON trade_history;
DROP TRIGGER IF EXISTS trade_stats_updated ON trade_history;
DROP TRIGGER IF EXISTS trade_stats_inserted ON trade_history;
DROP FUNCTION IF EXISTS trade_stats_truncated();
DROP FUNCTION IF EXISTS trade_stats_log_deleted();
DROP FUNCTION IF EXISTS trade_stats_log_updated();
DROP FUNCTION IF EXISTS trade_stats_log_inserted();
"""


def upgrade():
    op.create_table(
        "trade_stats_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "logged_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("sign", sa.SmallInteger(), nullable=False),
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("won", sa.Boolean(), nullable=True),
        sa.Column("realized_pnl", sa.Float(precision=53), nullable=True),
        sa.Column("pnl_pct", sa.Float(precision=53), nullable=True),
        sa.Column("fees", sa.Float(precision=53), nullable=True),
        sa.PrimaryKeyConstraint("id", "logged_at", name="trade_stats_changes_pkey"),
    )
    op.create_table(
        "trade_stats_buckets",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("width", sa.String(4), nullable=False),
        *_key(),
        *(sa.Column(name, type_, server_default=sa.text("0"), nullable=False) for name, type_ in _SUMS),
        sa.PrimaryKeyConstraint("id", "bucket", name="trade_stats_buckets_pkey"),
    )
    op.create_index(
        "ux_trade_stats_buckets",
        "trade_stats_buckets",
        ["width", "bucket", *_KEY_NAMES],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_table(
        "trade_closes",
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("close_day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pnl", sa.Numeric(), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("closed_at", "trade_id", name="trade_closes_pkey"),
    )
    op.create_index("ix_trade_closes_close_day", "trade_closes", ["close_day", "opened_at"])
    op.create_index(
        "ix_trade_closes_model", "trade_closes", ["model_name", "model_version", "closed_at", "trade_id"]
    )
    op.create_table(
        "trade_stats_segments",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("close_day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("width", sa.String(4), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        *_key(),
        *_drawdown(),
        sa.Column("first_opened", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_opened", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", "close_day", name="trade_stats_segments_pkey"),
    )
    op.create_index(
        "ux_trade_stats_segments",
        "trade_stats_segments",
        ["width", "bucket", *_KEY_NAMES, "close_day"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_index("ix_trade_stats_segments_close_day", "trade_stats_segments", ["close_day"])
    op.create_table(
        "trade_stats_profiles",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("close_day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_from", sa.DateTime(timezone=True), nullable=False),
        *_key(),
        *_drawdown(),
        sa.PrimaryKeyConstraint("id", "close_day", name="trade_stats_profiles_pkey"),
    )
    op.create_index(
        "ux_trade_stats_profiles",
        "trade_stats_profiles",
        [*_KEY_NAMES, "close_day", "opened_from"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_index("ix_trade_stats_profiles_close_day", "trade_stats_profiles", ["close_day"])
    op.create_table(
        "trade_stats_state",
        sa.Column("built", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Not built: the first fold builds everything from the trades already stored (beat,
    # `flask --app web stats refresh`); until then the statistics are computed from the trades.
    op.execute("INSERT INTO trade_stats_state (built) VALUES (false)")
    if hypertables_in_use(op.get_bind(), get_settings().timescaledb):
        # Closes arrive in close-time order: a hypertable on it drops into chunks the way
        # trade_history does on the opening time.
        op.execute(
            "SELECT create_hypertable('trade_closes', by_range('closed_at', INTERVAL '30 days'),"
            " create_default_indexes => FALSE, if_not_exists => TRUE)"
        )
        log.info("TimescaleDB enabled: trade_closes is a hypertable on closed_at")
    # The change log is a queue: vacuumed every 10,000 rows taken, not at a fifth of its size.
    op.execute(
        "ALTER TABLE trade_stats_changes SET (autovacuum_vacuum_scale_factor = 0,"
        " autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0,"
        " autovacuum_vacuum_insert_threshold = 10000)"
    )
    # Folds rewrite the current buckets' sums, no indexed column: room on the page keeps
    # those updates heap-only.
    op.execute("ALTER TABLE trade_stats_buckets SET (fillfactor = 80)")
    op.execute(_TRIGGERS)


def downgrade():
    op.execute(_DROP_TRIGGERS)
    op.drop_table("trade_stats_state")
    op.drop_index("ix_trade_stats_profiles_close_day", table_name="trade_stats_profiles")
    op.drop_index("ux_trade_stats_profiles", table_name="trade_stats_profiles")
    op.drop_table("trade_stats_profiles")
    op.drop_index("ix_trade_stats_segments_close_day", table_name="trade_stats_segments")
    op.drop_index("ux_trade_stats_segments", table_name="trade_stats_segments")
    op.drop_table("trade_stats_segments")
    for name in ("ix_trade_closes_model", "ix_trade_closes_close_day"):
        op.drop_index(name, table_name="trade_closes")
    op.drop_table("trade_closes")
    op.drop_index("ux_trade_stats_buckets", table_name="trade_stats_buckets")
    op.drop_table("trade_stats_buckets")
    op.drop_table("trade_stats_changes")
