"""The kept comparison: each experiment's shadow pair sums and linked-trade sums, so that
`GET .../compare` over an experiment reads a few rows however many pairs it holds.

Pair sums are written with the shadows that make them (db.prediction_log); the linked
trades' sums by db.compare.fold, from the trades the triggers below log. The triggers
order themselves against a shadow logged meanwhile by the prediction lock that lineage
already takes (db.prediction_log), so whichever of a trade and its champion's shadow
commits second sees the other. Nothing is built from what was logged before: an
experiment set before this revision is compared by a scan, as before.

Revision ID: 008
Revises: 007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "008"
down_revision = "007"
branch_labels = None
depends_on = None

_DOUBLE = sa.Float(precision=53)


def _experiment_key():
    return [
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("challenger", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("champion", sa.String(64), nullable=False),
    ]


def _zeros(*names, type_=_DOUBLE):
    return [sa.Column(name, type_, nullable=False, server_default=sa.text("0")) for name in names]


# Each trigger first takes db.prediction_log's locks on the prediction ids it brings
# (namespace 28786, 256 buckets of hashtext, in order), as lineage does.
_TRIGGERS = """
CREATE FUNCTION shadow_trades_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(28786, bucket) FROM (
        SELECT DISTINCT hashtext(prediction_id) & 255 AS bucket FROM new_rows
        WHERE prediction_id IS NOT NULL ORDER BY bucket) AS buckets;
    INSERT INTO shadow_trade_changes (trade_id, opened_at)
    SELECT n.trade_id, n."timestamp" FROM new_rows AS n
    WHERE EXISTS (SELECT 1 FROM shadow_links AS l WHERE l.prediction_id = n.prediction_id);
    RETURN NULL;
END $$;

CREATE FUNCTION shadow_trades_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only a prediction id that changed is new to lock.
    PERFORM pg_advisory_xact_lock(28786, bucket) FROM (
        SELECT DISTINCT hashtext(n.prediction_id) & 255 AS bucket FROM new_rows AS n
        WHERE n.prediction_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM old_rows AS o WHERE o.trade_id = n.trade_id
              AND o."timestamp" = n."timestamp" AND o.prediction_id = n.prediction_id)
        ORDER BY bucket) AS buckets;
    INSERT INTO shadow_trade_changes (trade_id, opened_at)
    SELECT n.trade_id, n."timestamp" FROM new_rows AS n
    WHERE EXISTS (SELECT 1 FROM shadow_links AS l WHERE l.prediction_id = n.prediction_id)
       OR EXISTS (SELECT 1 FROM shadow_trades AS s
                  WHERE s.trade_id = n.trade_id AND s.opened_at = n."timestamp")
    UNION
    SELECT o.trade_id, o."timestamp" FROM old_rows AS o
    WHERE EXISTS (SELECT 1 FROM shadow_trades AS s
                  WHERE s.trade_id = o.trade_id AND s.opened_at = o."timestamp");
    RETURN NULL;
END $$;

CREATE FUNCTION shadow_trades_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM shadow_trades
               WHERE trade_id = OLD.trade_id AND opened_at = OLD."timestamp") THEN
        INSERT INTO shadow_trade_changes (trade_id, opened_at) VALUES (OLD.trade_id, OLD."timestamp");
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION shadow_trades_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE shadow_trades, shadow_trade_changes, shadow_trade_sums;
    RETURN NULL;
END $$;

CREATE TRIGGER shadow_trades_inserted AFTER INSERT ON trade_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION shadow_trades_inserted();
CREATE TRIGGER shadow_trades_updated AFTER UPDATE ON trade_history
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION shadow_trades_updated();
CREATE TRIGGER shadow_trades_deleted AFTER DELETE ON trade_history
    FOR EACH ROW EXECUTE FUNCTION shadow_trades_deleted();
CREATE TRIGGER shadow_trades_truncated AFTER TRUNCATE ON trade_history
    FOR EACH STATEMENT EXECUTE FUNCTION shadow_trades_truncated();
"""

# What makes a pair, the one definition the log's writer (the kept sums) and the scan
# share: element i of the champion's `predictions` with element i of the shadow's; an
# element that is null (a non-finite output) or not a number, on either side, is null
# here and its row pair is left out by the caller; a shorter array pairs with nulls.
_PAIRS = """
CREATE FUNCTION shadow_pairs(champion jsonb, challenger jsonb)
RETURNS TABLE (row_number bigint, champion_value float8, challenger_value float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT element.row_number,
           CASE WHEN jsonb_typeof(element.champion_json) = 'number'
                THEN CAST(element.champion_json AS float8) END,
           CASE WHEN jsonb_typeof(element.challenger_json) = 'number'
                THEN CAST(element.challenger_json AS float8) END
    FROM ROWS FROM (
        jsonb_array_elements(CASE WHEN jsonb_typeof(champion) = 'array'
                                  THEN champion ELSE CAST('[]' AS jsonb) END),
        jsonb_array_elements(CASE WHEN jsonb_typeof(challenger) = 'array'
                                  THEN challenger ELSE CAST('[]' AS jsonb) END)
    ) WITH ORDINALITY AS element(champion_json, challenger_json, row_number)
$$;
"""

_DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS shadow_trades_truncated ON trade_history;
DROP TRIGGER IF EXISTS shadow_trades_deleted ON trade_history;
DROP TRIGGER IF EXISTS shadow_trades_updated ON trade_history;
DROP TRIGGER IF EXISTS shadow_trades_inserted ON trade_history;
DROP FUNCTION IF EXISTS shadow_trades_truncated();
DROP FUNCTION IF EXISTS shadow_trades_deleted();
DROP FUNCTION IF EXISTS shadow_trades_updated();
DROP FUNCTION IF EXISTS shadow_trades_inserted();
DROP FUNCTION IF EXISTS shadow_pairs(jsonb, jsonb);
"""


def upgrade():
    op.create_table(
        "shadow_experiments",
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("challenger", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold", _DOUBLE, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "challenger", "since", name="shadow_experiments_pkey"),
    )
    op.create_table(
        "shadow_pair_sums",
        *_experiment_key(),
        *_zeros("pairs", "agreeing", type_=sa.BigInteger()),
        *_zeros(
            "abs_diff", "champion_sum", "challenger_sum", "champion_squares", "challenger_squares", "products"
        ),
        *_zeros("champion_outside", "challenger_outside", type_=sa.BigInteger()),
        sa.PrimaryKeyConstraint(
            "model_name", "challenger", "since", "champion", name="shadow_pair_sums_pkey"
        ),
    )
    op.create_table(
        "shadow_links",
        sa.Column("prediction_id", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("challenger", sa.String(64), nullable=False),
        sa.Column("shadowed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shadow_id", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("champion", sa.String(64), nullable=False),
        sa.Column("champion_value", _DOUBLE, nullable=False),
        sa.Column("challenger_value", _DOUBLE, nullable=False),
        sa.PrimaryKeyConstraint(
            "prediction_id", "model_name", "challenger", "shadowed_at", "shadow_id", name="shadow_links_pkey"
        ),
    )
    op.create_index("ix_shadow_links_shadowed_at", "shadow_links", ["shadowed_at"])
    op.create_table(
        "shadow_trades",
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("challenger", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("champion", sa.String(64), nullable=False),
        sa.Column("champion_value", _DOUBLE, nullable=False),
        sa.Column("challenger_value", _DOUBLE, nullable=False),
        sa.Column("threshold", _DOUBLE, nullable=False),
        sa.Column("won", sa.Boolean(), nullable=True),
        sa.Column("pnl", sa.Numeric(), nullable=True),
        sa.PrimaryKeyConstraint(
            "trade_id", "opened_at", "model_name", "challenger", name="shadow_trades_pkey"
        ),
    )
    op.create_table(
        "shadow_trade_sums",
        *_experiment_key(),
        *_zeros("trades", "scored", "champion_right", "challenger_right", type_=sa.BigInteger()),
        *_zeros("champion_error", "challenger_error", "champion_log", "challenger_log"),
        *_zeros("taken", "declined", type_=sa.BigInteger()),
        *_zeros("pnl_taken", "pnl_declined", type_=sa.Numeric()),
        sa.Column("replicate_diffs", postgresql.ARRAY(_DOUBLE), nullable=True),
        sa.Column("replicate_weights", postgresql.ARRAY(_DOUBLE), nullable=True),
        sa.PrimaryKeyConstraint(
            "model_name", "challenger", "since", "champion", name="shadow_trade_sums_pkey"
        ),
    )
    op.create_table(
        "shadow_trade_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "logged_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", "logged_at", name="shadow_trade_changes_pkey"),
    )
    op.execute(_PAIRS)
    op.execute(_TRIGGERS)


def downgrade():
    op.execute(_DROP_TRIGGERS)
    for table in (
        "shadow_trade_changes",
        "shadow_trade_sums",
        "shadow_trades",
        "shadow_links",
        "shadow_pair_sums",
        "shadow_experiments",
    ):
        op.drop_table(table)
