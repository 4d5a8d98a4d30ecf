"""trade_ids: each trade's opening time under a 64-bit hash of its trade_id, so the journal
finds a trade's row without searching every chunk.

trade_history's key is (trade_id, timestamp), a hypertable's unique index must hold its
time column, and an update names its trade by trade_id alone. Looking a batch of
trade_ids up in trade_history itself searches every chunk (each chunk's index, or each
compressed batch's bloom filter), a cost that grows with the journal's age. Here the
look-up is one index probe per trade_id; the row is then read in its own chunk and
checked by its trade_id, so a hash two trade_ids share only adds a candidate time. The
hash (hashtextextended, what hash partitioning uses: stable) keeps the table at about
70 bytes a trade, where the trade_ids themselves would double it.

Triggers keep it equal to trade_history whatever writes the rows: an INSERT's new rows
(a statement trigger), a DELETE (a row trigger), an UPDATE that moves a row to another
trade_id or timestamp (a row trigger on those columns only), a TRUNCATE. The uniqueness
of trade_id alone stays the journal's write path's (its key, like every unique index in
the schema, holds the time column).

Revision ID: 006
Revises: 005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "006"
down_revision = "005"
branch_labels = None
depends_on = None

_TRIGGERS = """
CREATE FUNCTION trade_ids_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO trade_ids (trade_key, "timestamp")
    SELECT DISTINCT hashtextextended(trade_id, 0), "timestamp" FROM new_rows
    ON CONFLICT (trade_key, "timestamp") DO NOTHING;
    RETURN NULL;
END $$;

-- A row gone (deleted, or moved to another trade_id or timestamp): its entry goes, unless
-- another trade with the same hash opened at the same time still needs it.
CREATE FUNCTION trade_ids_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM trade_ids
    WHERE trade_key = hashtextextended(OLD.trade_id, 0) AND "timestamp" = OLD."timestamp"
      AND NOT EXISTS (
          SELECT 1 FROM trade_history
          WHERE "timestamp" = OLD."timestamp" AND trade_id <> OLD.trade_id
            AND hashtextextended(trade_id, 0) = hashtextextended(OLD.trade_id, 0));
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO trade_ids (trade_key, "timestamp")
        VALUES (hashtextextended(NEW.trade_id, 0), NEW."timestamp")
        ON CONFLICT (trade_key, "timestamp") DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION trade_ids_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE trade_ids;
    RETURN NULL;
END $$;

CREATE TRIGGER trade_ids_inserted AFTER INSERT ON trade_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION trade_ids_inserted();
CREATE TRIGGER trade_ids_deleted AFTER DELETE ON trade_history
    FOR EACH ROW EXECUTE FUNCTION trade_ids_moved();
CREATE TRIGGER trade_ids_rekeyed AFTER UPDATE OF trade_id, "timestamp" ON trade_history
    FOR EACH ROW
    WHEN (OLD.trade_id IS DISTINCT FROM NEW.trade_id OR OLD."timestamp" IS DISTINCT FROM NEW."timestamp")
    EXECUTE FUNCTION trade_ids_moved();
CREATE TRIGGER trade_ids_truncated AFTER TRUNCATE ON trade_history
    FOR EACH STATEMENT EXECUTE FUNCTION trade_ids_truncated();
"""
_DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS trade_ids_truncated ON trade_history;
DROP TRIGGER IF EXISTS trade_ids_rekeyed ON trade_history;
DROP TRIGGER IF EXISTS trade_ids_deleted ON trade_history;
DROP TRIGGER IF EXISTS trade_ids_inserted ON trade_history;
DROP FUNCTION IF EXISTS trade_ids_truncated();
DROP FUNCTION IF EXISTS trade_ids_moved();
DROP FUNCTION IF EXISTS trade_ids_inserted();
"""


def upgrade():
    op.create_table(
        "trade_ids",
        sa.Column("trade_key", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("trade_key", "timestamp", name="trade_ids_pkey"),
    )
    # Lock out writers while the trades already stored are copied: none is missed.
    op.execute("LOCK TABLE trade_history IN SHARE MODE")
    op.execute(
        'INSERT INTO trade_ids (trade_key, "timestamp")'
        ' SELECT DISTINCT hashtextextended(trade_id, 0), "timestamp" FROM trade_history'
    )
    op.execute(_TRIGGERS)


def downgrade():
    op.execute(_DROP_TRIGGERS)
    op.drop_table("trade_ids")
