"""Trade journal: trade_history (a hypertable where TimescaleDB is available) and pending updates.

Revision ID: 001
Revises:
Create Date: 2026-11-25
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from config import get_settings
from db import TimescaleState, timescale_status

revision = "001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade():
    hypertable = _timescale_wanted()  # before any DDL: it may have to stop the migration
    op.create_table(
        "trade_history",
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("order_type", sa.String(8), nullable=False),
        sa.Column("amount", sa.Float(precision=53), nullable=False),
        sa.Column("entry_price", sa.Float(precision=53), nullable=False),
        sa.Column("exit_price", sa.Float(precision=53), nullable=True),
        sa.Column("realized_pnl", sa.Float(precision=53), nullable=True),
        sa.Column("pnl_pct", sa.Float(precision=53), nullable=True),
        sa.Column("fees", sa.Float(precision=53), nullable=True),
        sa.Column("market_regime", sa.String(32), nullable=True),
        sa.Column("bull_confidence", sa.Float(precision=53), nullable=True),
        sa.Column("bear_confidence", sa.Float(precision=53), nullable=True),
        sa.Column("decision_confidence", sa.Float(precision=53), nullable=True),
        sa.Column("won", sa.Boolean(), nullable=True),
        sa.Column("closed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("close_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_votes", postgresql.JSONB(), nullable=True),
        sa.Column("signals", postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("trade_id", "timestamp", name="trade_history_pkey"),
    )
    op.create_index(
        "ix_trade_history_symbol_timestamp", "trade_history", ["symbol", sa.text("timestamp DESC")]
    )
    op.create_index("ix_trade_history_timestamp", "trade_history", [sa.text("timestamp DESC")])
    op.create_table(
        "trade_pending_updates",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("updates", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", "received_at", name="trade_pending_updates_pkey"),
    )
    op.create_index("ix_trade_pending_updates_trade_id", "trade_pending_updates", ["trade_id"])
    if hypertable:
        _make_hypertable()


def downgrade():
    op.drop_index("ix_trade_pending_updates_trade_id", table_name="trade_pending_updates")
    op.drop_table("trade_pending_updates")
    op.drop_index("ix_trade_history_timestamp", table_name="trade_history")
    op.drop_index("ix_trade_history_symbol_timestamp", table_name="trade_history")
    op.drop_table("trade_history")  # a hypertable's chunks go with it
    # The timescaledb extension stays: other tables of this database may use it.


def _timescale_wanted() -> bool:
    """Whether trade_history is to be a hypertable; says why not, or fails clearly, first.

    Looks before trying: CREATE EXTENSION on a server that has TimescaleDB but did not
    preload it is a FATAL error, which closes the connection and the migration with it.
    """
    mode = get_settings().timescaledb
    if mode == "off":
        log.info("TIMESCALEDB=off: trade_history is a plain PostgreSQL table")
        return False
    status = timescale_status(op.get_bind())
    if status.usable:
        return True
    if status.state is TimescaleState.NOT_PRELOADED and status.created_version is not None:
        # The extension's event triggers load its library on every DDL statement: FATAL.
        raise RuntimeError(
            f"cannot migrate: {status.reason}, so any DDL statement here would end the connection;"
            f" to fix: {status.fix}"
        )
    if mode == "require":
        raise RuntimeError(
            f"TIMESCALEDB=require cannot be met: {status.reason}; to fix: {status.fix}"
            " (or set TIMESCALEDB=auto)"
        )
    if status.state is TimescaleState.NOT_INSTALLED and status.created_version is None:
        log.warning("TimescaleDB is not installed on this server: trade_history is a plain PostgreSQL table")
    else:
        log.warning(
            "%s: trade_history is a plain PostgreSQL table; to use TimescaleDB, %s", status.reason, status.fix
        )
    return False


def _make_hypertable():
    mode = get_settings().timescaledb
    bind = op.get_bind()
    nested = bind.begin_nested()
    try:
        op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        op.execute(
            "SELECT create_hypertable('trade_history', by_range('timestamp'),"
            " create_default_indexes => FALSE, if_not_exists => TRUE)"
        )
    except sa.exc.DBAPIError as exc:
        problem = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if exc.connection_invalidated:  # a FATAL error: the transaction is gone, nothing to go on with
            raise RuntimeError(
                f"TimescaleDB could not be enabled, the server closed the connection: {problem}"
            ) from None
        nested.rollback()
        if mode == "require":
            raise RuntimeError(
                f"TIMESCALEDB=require cannot be met: TimescaleDB could not be enabled: {problem}"
            ) from None
        log.warning(
            "TimescaleDB could not be enabled (%s): trade_history is a plain PostgreSQL table", problem
        )
        return
    nested.commit()
    log.info("TimescaleDB enabled: trade_history is a hypertable on timestamp")
