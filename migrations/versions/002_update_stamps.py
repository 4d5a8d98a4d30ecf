"""Per-field order of the last change applied to a trade (`trade_history.update_stamps`).

Revision ID: 002
Revises: 001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "002"
down_revision = "001"
branch_labels = None
depends_on = None


def upgrade():
    # Nullable without a default: no rewrite of the table or of a hypertable's chunks.
    op.add_column("trade_history", sa.Column("update_stamps", postgresql.JSONB(), nullable=True))


def downgrade():
    op.drop_column("trade_history", "update_stamps")
