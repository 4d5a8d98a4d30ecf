"""The prediction log's write as a function, `log_prediction_batch(batch, prediction_ids)`.

The statement is the one db.prediction_log sent as text at every flush (revision 008's):
insert what is new, count it, link the trades waiting for it, add a new shadow's pairs.
As a PL/pgSQL function its plan is made once per connection and kept, where the text
was parsed and planned for every batch (0.6 ms of the server's CPU, a fifth of a batch
of 170 entries), and the lock on the ids' buckets is taken in the same round trip. The
lock is its own statement still, so the insert's snapshot comes after it (in READ
COMMITTED each statement of a volatile function takes a new one): a trade that
committed while the batch waited for the lock is seen and linked.

Its constants are db.prediction_log's: lock namespace 28786 ("pr") and 256 buckets.

Revision ID: 009
Revises: 008
Create Date: 2026-12-08
"""

from alembic import op

revision = "009"
down_revision = "008"
branch_labels = None
depends_on = None

_LOG_PREDICTION_BATCH = """
CREATE FUNCTION log_prediction_batch(batch json, prediction_ids text[])
RETURNS TABLE (logged bigint, trades_linked bigint) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(28786, bucket) FROM (
        SELECT DISTINCT hashtext(prediction_id) & 255 AS bucket
        FROM unnest(prediction_ids) AS prediction_id ORDER BY bucket
    ) AS buckets;
    RETURN QUERY
    WITH given AS (
        SELECT * FROM json_to_recordset(batch) AS given(
            prediction_id varchar, created_at timestamptz, model_name varchar, model_version varchar,
            model_type varchar, rows integer, predictions jsonb, latency_ms float8, request_id varchar,
            features jsonb, contributions jsonb, role varchar, shadow_of varchar,
            champion_version varchar, champion_predictions jsonb)
    ), new AS (
        INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version, model_type,
                                    rows, predictions, latency_ms, request_id, features, contributions,
                                    role, shadow_of)
        SELECT prediction_id, created_at, model_name, model_version, model_type, rows, predictions,
               latency_ms, request_id, features, contributions, role, shadow_of
        FROM given
        ON CONFLICT DO NOTHING
        RETURNING prediction_id, model_name, model_version, created_at, role
    ), counted AS (
        INSERT INTO prediction_counts AS counts
            (model_name, model_version, day, predictions, first_served, last_served)
        SELECT model_name, model_version, date_trunc('day', created_at, 'UTC'), count(*),
               min(created_at), max(created_at)
        FROM new GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (model_name, model_version, day) DO UPDATE SET
            predictions = counts.predictions + excluded.predictions,
            first_served = least(counts.first_served, excluded.first_served),
            last_served = greatest(counts.last_served, excluded.last_served)
    ), linked AS (
        UPDATE trade_history AS trade
        SET model_name = new.model_name, model_version = new.model_version
        FROM new
        WHERE trade.prediction_id = new.prediction_id AND trade.model_name IS NULL
        RETURNING 1
    ), pairs AS (
        -- A new shadow's pairs with its champion's answer (as the worker that ran both gave
        -- it), in the experiment it belongs to: its challenger's latest set at or before it.
        SELECT new.prediction_id AS shadow_id, new.created_at, new.model_name,
               new.model_version AS challenger, given.shadow_of, given.champion_version AS champion,
               experiment.since, experiment.threshold,
               pair.row_number, pair.champion_value, pair.challenger_value
        FROM new
        JOIN given ON given.prediction_id = new.prediction_id AND given.created_at = new.created_at
        CROSS JOIN LATERAL (
            SELECT e.since, e.threshold FROM shadow_experiments AS e
            WHERE e.model_name = new.model_name AND e.challenger = new.model_version
              AND e.since <= new.created_at
            ORDER BY e.since DESC LIMIT 1
        ) AS experiment
        CROSS JOIN LATERAL shadow_pairs(given.champion_predictions, given.predictions) AS pair
        WHERE new.role = 'shadow' AND given.shadow_of IS NOT NULL AND given.champion_version IS NOT NULL
          AND pair.champion_value IS NOT NULL AND pair.challenger_value IS NOT NULL
    ), summed AS (
        INSERT INTO shadow_pair_sums AS sums
            (model_name, challenger, since, champion, pairs, agreeing, abs_diff, champion_sum, challenger_sum,
             champion_squares, challenger_squares, products, champion_outside, challenger_outside)
        SELECT model_name, challenger, since, champion, count(*),
               count(*) FILTER (WHERE (champion_value >= threshold) = (challenger_value >= threshold)),
               sum(abs(champion_value - challenger_value)), sum(champion_value), sum(challenger_value),
               sum(champion_value * champion_value), sum(challenger_value * challenger_value),
               sum(champion_value * challenger_value),
               count(*) FILTER (WHERE champion_value NOT BETWEEN 0 AND 1),
               count(*) FILTER (WHERE challenger_value NOT BETWEEN 0 AND 1)
        FROM pairs GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (model_name, challenger, since, champion) DO UPDATE SET
            pairs = sums.pairs + excluded.pairs, agreeing = sums.agreeing + excluded.agreeing,
            abs_diff = sums.abs_diff + excluded.abs_diff,
            champion_sum = sums.champion_sum + excluded.champion_sum,
            challenger_sum = sums.challenger_sum + excluded.challenger_sum,
            champion_squares = sums.champion_squares + excluded.champion_squares,
            challenger_squares = sums.challenger_squares + excluded.challenger_squares,
            products = sums.products + excluded.products,
            champion_outside = sums.champion_outside + excluded.champion_outside,
            challenger_outside = sums.challenger_outside + excluded.challenger_outside
        RETURNING 1
    ), shadow_linked AS (
        INSERT INTO shadow_links (prediction_id, model_name, challenger, shadowed_at, shadow_id, since,
                                  champion, champion_value, challenger_value)
        SELECT shadow_of, model_name, challenger, created_at, shadow_id, since, champion,
               champion_value, challenger_value
        FROM pairs WHERE row_number = 1
        ON CONFLICT DO NOTHING
        RETURNING prediction_id
    ), rechecked AS (
        -- The trades already linked to the champion's prediction: db.compare.fold scores them.
        INSERT INTO shadow_trade_changes (trade_id, opened_at)
        SELECT trade.trade_id, trade."timestamp" FROM trade_history AS trade
        WHERE trade.prediction_id IN (SELECT prediction_id FROM shadow_linked)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM linked);
END $$;
"""


def upgrade():
    op.execute(_LOG_PREDICTION_BATCH)


def downgrade():
    op.execute("DROP FUNCTION IF EXISTS log_prediction_batch(json, text[])")
