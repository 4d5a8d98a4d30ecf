"""Model releases: each name's champion and challenger, every change to them, and the
prediction log's `role` and `shadow_of`.

`model_release_state` holds one row per model name that has a release (a name without
one serves its file's current version, as before); `model_releases` records every change
(who, from what, to what, why), newest read first. The log's new columns are nullable
without defaults, so no chunk of a hypertable (compressed or not) is rewritten: an entry
logged before has no role, which reads as `champion`.

Revision ID: 007
Revises: 006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "007"
down_revision = "006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "model_release_state",
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("champion", sa.String(64), nullable=True),
        sa.Column("previous_champion", sa.String(64), nullable=True),
        sa.Column("challenger", sa.String(64), nullable=True),
        sa.Column("mode", sa.String(8), nullable=True),
        sa.Column("percent", sa.SmallInteger(), nullable=True),
        sa.Column("guards", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("challenger_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("model_name", name="model_release_state_pkey"),
        sa.CheckConstraint("mode IN ('shadow', 'canary')", name="model_release_state_mode"),
        sa.CheckConstraint("percent BETWEEN 1 AND 100", name="model_release_state_percent"),
        sa.CheckConstraint("(challenger IS NULL) = (mode IS NULL)", name="model_release_state_challenger"),
    )
    op.create_table(
        "model_releases",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("who", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("to_version", sa.String(64), nullable=True),
        sa.Column("mode", sa.String(8), nullable=True),
        sa.Column("percent", sa.SmallInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", "at", name="model_releases_pkey"),
    )
    op.create_index("ix_model_releases_model_at", "model_releases", ["model_name", sa.text("at DESC")])
    op.add_column("prediction_log", sa.Column("role", sa.String(16), nullable=True))
    op.add_column("prediction_log", sa.Column("shadow_of", sa.String(64), nullable=True))
    # A comparison reads a challenger's shadows in its window (every existing row has no
    # role: the index starts empty, though building it reads the log once).
    op.create_index(
        "ix_prediction_log_shadows",
        "prediction_log",
        ["model_name", "model_version", "created_at"],
        postgresql_where=sa.text("role = 'shadow'"),
    )


def downgrade():
    op.drop_index("ix_prediction_log_shadows", table_name="prediction_log")
    op.drop_column("prediction_log", "shadow_of")
    op.drop_column("prediction_log", "role")
    op.drop_index("ix_model_releases_model_at", table_name="model_releases")
    op.drop_table("model_releases")
    op.drop_table("model_release_state")
