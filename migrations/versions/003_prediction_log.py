"""Prediction log (a hypertable where trade_history is one), its counts per version and day,
and the trades' lineage columns.

Revision ID: 003
Revises: 002
Create Date: 2026-12-02
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from config import get_settings
from db.timescale import hypertables_in_use

revision = "003"
down_revision = "002"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade():
    # Nullable without defaults: no rewrite of trade_history or of a hypertable's chunks.
    for column in (
        sa.Column("prediction_id", sa.String(64), nullable=True),
        sa.Column("model_name", sa.String(255), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
    ):
        op.add_column("trade_history", column)
    op.create_index(
        "ix_trade_history_prediction_id",
        "trade_history",
        ["prediction_id"],
        postgresql_where=sa.text("prediction_id IS NOT NULL"),
    )
    op.create_index(
        "ix_trade_history_model", "trade_history", ["model_name", "model_version", sa.text("timestamp DESC")]
    )
    op.create_table(
        "prediction_log",
        sa.Column("prediction_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_type", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("predictions", postgresql.JSONB(), nullable=False),
        sa.Column("latency_ms", sa.Float(precision=53), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("features", postgresql.JSONB(), nullable=True),
        sa.Column("contributions", postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("prediction_id", "created_at", name="prediction_log_pkey"),
    )
    op.create_index("ix_prediction_log_created_at", "prediction_log", [sa.text("created_at DESC")])
    op.create_table(
        "prediction_counts",
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("predictions", sa.BigInteger(), nullable=False),
        sa.Column("first_served", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_served", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "model_version", "day", name="prediction_counts_pkey"),
    )
    if hypertables_in_use(op.get_bind(), get_settings().timescaledb):
        # Predictions come by the thousand a minute: a chunk a day keeps retention fine-grained.
        op.execute(
            "SELECT create_hypertable('prediction_log', by_range('created_at', INTERVAL '1 day'),"
            " create_default_indexes => FALSE, if_not_exists => TRUE)"
        )
        log.info("TimescaleDB enabled: prediction_log is a hypertable on created_at")
    else:
        log.info("prediction_log is a plain PostgreSQL table, as trade_history is")


def downgrade():
    op.drop_table("prediction_counts")
    op.drop_index("ix_prediction_log_created_at", table_name="prediction_log")
    op.drop_table("prediction_log")  # a hypertable's chunks go with it
    op.drop_index("ix_trade_history_model", table_name="trade_history")
    op.drop_index("ix_trade_history_prediction_id", table_name="trade_history")
    for name in ("model_version", "model_name", "prediction_id"):
        op.drop_column("trade_history", name)
