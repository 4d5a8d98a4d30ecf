"""The comparison by a scan of the log: any window, exact, its cost that of the window.

A shadow prediction (`role` 'shadow', `model_version` the challenger's) names its champion's
`prediction_id` in `shadow_of`; its champion is the row of the same model logged under that
id (any version, or `champion`'s alone) at most MAX_SHADOW_LAG before it (a task id reused
by a bot within that time pairs with each of its rows). The two make a pair per input row,
as the database's `shadow_pairs` defines it (migration 008; the log's writer pairs by it
too): element i of the champion's `predictions` with element i of the shadow's; an element
that is null (a non-finite output) or not a number, on either side, leaves its row out.
The window is on the shadow's `created_at`: `since` inclusive, `until` exclusive.

The trades are the closed ones linked to the pairs' champion predictions
(`trade_history.prediction_id` is the champion's; a trade reads its prediction's first
row; a prediction shadowed twice by the challenger counts its trades once, with the first
shadow).

Indexes read: the shadows by `ix_prediction_log_shadows` (model_name, model_version,
created_at) WHERE role = 'shadow'; the champions by the log's key (prediction_id,
created_at) for a few shadows, or by a hash join over the window's rows
(`ix_prediction_log_created_at`) for many; the trades by `ix_trade_history_prediction_id`,
or a hash of the closed ones. About 7 to 9 s at a million shadow pairs and 50k trades
(bench/compare_scale.py): what the kept sums (`db.compare.kept`) spare an experiment.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.compare.bootstrap import MIN_TRADES, replicate_sums
from db.compare.sums import PAIR_SUMS, TRADE_SUMS, Sums, Window

CLIP = 1e-15
# How long after its champion a shadow may be logged (the shadow queue is bounded and drops
# what it cannot run): bounds the champion's lookup to a chunk or two of a hypertable.
MAX_SHADOW_LAG = timedelta(days=1)

_NO_JIT = text("SET LOCAL jit = off")
COMPARE_SQL = text(
    """
WITH pairs AS MATERIALIZED (
    SELECT shadow.created_at AS shadowed_at, shadow.prediction_id AS shadow_id,
           champion.prediction_id, pair.row_number,
           pair.champion_value AS champion, pair.challenger_value AS challenger
    FROM prediction_log AS shadow
    JOIN prediction_log AS champion
      ON champion.prediction_id = shadow.shadow_of
     AND champion.created_at <= shadow.created_at
     AND champion.created_at >= shadow.created_at - CAST(:max_lag AS interval)
     AND champion.created_at >= CAST(:since AS timestamptz) - CAST(:max_lag AS interval)
     AND (CAST(:until AS timestamptz) IS NULL OR champion.created_at < CAST(:until AS timestamptz))
     AND champion.model_name = shadow.model_name
     AND champion.role IS DISTINCT FROM 'shadow'
     AND (CAST(:champion AS varchar) IS NULL OR champion.model_version = CAST(:champion AS varchar))
    CROSS JOIN LATERAL shadow_pairs(champion.predictions, shadow.predictions) AS pair
    WHERE shadow.role = 'shadow'
      AND shadow.model_name = CAST(:model_name AS varchar)
      AND shadow.model_version = CAST(:challenger AS varchar)
      AND shadow.created_at >= CAST(:since AS timestamptz)
      AND (CAST(:until AS timestamptz) IS NULL OR shadow.created_at < CAST(:until AS timestamptz))
      AND pair.champion_value IS NOT NULL AND pair.challenger_value IS NOT NULL
), pair_sums AS (
    SELECT count(*) AS pairs,
           count(*) FILTER (WHERE (champion >= :threshold) = (challenger >= :threshold)) AS agreeing,
           coalesce(sum(abs(champion - challenger)), 0) AS abs_diff,
           coalesce(sum(champion), 0) AS champion_sum, coalesce(sum(challenger), 0) AS challenger_sum,
           coalesce(sum(champion * champion), 0) AS champion_squares,
           coalesce(sum(challenger * challenger), 0) AS challenger_squares,
           coalesce(sum(champion * challenger), 0) AS products,
           count(*) FILTER (WHERE champion NOT BETWEEN 0 AND 1) AS champion_outside,
           count(*) FILTER (WHERE challenger NOT BETWEEN 0 AND 1) AS challenger_outside
    FROM pairs
), traded AS (
    SELECT DISTINCT ON (trade.trade_id)
           trade.trade_id, trade.won, CAST(trade.realized_pnl AS numeric) AS pnl,
           pairs.champion, pairs.challenger,
           (pairs.champion >= :threshold) = (pairs.challenger >= :threshold) AS taken,
           CASE WHEN trade.won THEN 1.0 ELSE 0.0 END AS outcome,
           greatest(least(pairs.champion, :clip_high), :clip_low) AS champion_p,
           greatest(least(pairs.challenger, :clip_high), :clip_low) AS challenger_p
    FROM pairs
    JOIN trade_history AS trade ON trade.prediction_id = pairs.prediction_id
    WHERE pairs.row_number = 1 AND trade.closed
    ORDER BY trade.trade_id, pairs.shadowed_at, pairs.shadow_id  -- the first shadow; ties by id
), scored AS (
    SELECT *,
           (champion - outcome) * (champion - outcome) AS champion_error,
           (challenger - outcome) * (challenger - outcome) AS challenger_error,
           CASE WHEN won THEN ln(champion_p) ELSE ln(1 - champion_p) END AS champion_log,
           CASE WHEN won THEN ln(challenger_p) ELSE ln(1 - challenger_p) END AS challenger_log
    FROM traded
), trade_sums AS (
    SELECT count(*) AS trades,
           count(won) AS scored,
           count(*) FILTER (WHERE (champion >= :threshold) = won) AS champion_right,
           count(*) FILTER (WHERE (challenger >= :threshold) = won) AS challenger_right,
           coalesce(sum(champion_error) FILTER (WHERE won IS NOT NULL), 0) AS champion_error,
           coalesce(sum(challenger_error) FILTER (WHERE won IS NOT NULL), 0) AS challenger_error,
           coalesce(sum(champion_log) FILTER (WHERE won IS NOT NULL), 0) AS champion_log,
           coalesce(sum(challenger_log) FILTER (WHERE won IS NOT NULL), 0) AS challenger_log,
           count(pnl) FILTER (WHERE taken) AS taken,
           count(pnl) FILTER (WHERE NOT taken) AS declined,
           coalesce(sum(pnl) FILTER (WHERE taken), 0) AS pnl_taken,
           coalesce(sum(pnl) FILTER (WHERE NOT taken), 0) AS pnl_declined,
           array_agg(trade_id ORDER BY trade_id) FILTER (WHERE won IS NOT NULL) AS scored_ids,
           array_agg(challenger_error - champion_error ORDER BY trade_id)
               FILTER (WHERE won IS NOT NULL) AS scored_diffs
    FROM scored
)
SELECT * FROM pair_sums CROSS JOIN trade_sums
"""
)


def scan(session: Session, window: Window) -> Sums:
    """The window's sums, from the log and the trades."""
    # One scan of up to millions of log rows, planned in a millisecond: compiling it (JIT,
    # on by default) costs more than it saves. For this transaction only.
    session.execute(_NO_JIT)
    row = session.execute(COMPARE_SQL, parameters(window)).one()._mapping
    sums = Sums({name: row[name] for name in (*PAIR_SUMS, *TRADE_SUMS)})
    probabilities = row["pairs"] > 0 and row["champion_outside"] == 0 and row["challenger_outside"] == 0
    if probabilities and row["scored"] >= MIN_TRADES:
        sums.weighted, sums.total = replicate_sums(row["scored_ids"], row["scored_diffs"])
    return sums


def parameters(window: Window) -> dict[str, Any]:
    """COMPARE_SQL's bound parameters."""
    return {
        "model_name": window.model_name,
        "challenger": window.challenger,
        "champion": window.champion,
        "since": window.since,
        "until": window.until,
        "threshold": float(window.threshold),
        "max_lag": MAX_SHADOW_LAG,
        "clip_low": CLIP,
        "clip_high": 1.0 - CLIP,
    }
