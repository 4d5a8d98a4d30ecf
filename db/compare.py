"""A challenger against its champion, over the shadow pairs: the same inputs, both predictions.

A shadow prediction (`role` 'shadow', `model_version` the challenger's) names its champion's
`prediction_id` in `shadow_of`; its champion is the row of the same model logged under that
id (any version, or `champion`'s alone) at most MAX_SHADOW_LAG before it (a task id reused
by a bot within that time pairs with each of its rows). The two make a pair per input row:
element i of the champion's `predictions` with element i of the shadow's. An element that
is null (a non-finite output) or not a number, on either side, leaves its row pair out.
The window is on the shadow's `created_at`: `since` inclusive, `until` exclusive.

Over the row pairs: `pairs`, `agreement` (the share on the same side of `threshold`; a
value at or above it is positive), `mean_abs_diff`, `correlation` (Pearson; null when
either side is constant or there are fewer than two pairs).

Over the closed trades linked to the pairs' champion predictions (`trade_history.prediction_id`
is the champion's; a trade reads its prediction's first row; a prediction shadowed twice by
the challenger counts its trades once, with the first shadow): `trades`; per side
`accuracy` (the side's call, value >= threshold, against `won`, as db/stats counts wins),
`brier` and `log_loss` against `won` (probabilities clipped to [1e-15, 1 - 1e-15]; both null
for a side any of whose values in the window lies outside [0, 1]: a signed output). A
closed trade whose `won` is unknown (closed without a PnL or an outcome) counts in `trades`
and the PnL figures it has, not in the scores.

The champion took every one of those trades, so the PnL split is the challenger's and is
given at the top level: `pnl_taken` (and `taken`, their count) sums the realized PnL of the
trades whose challenger prediction lies on the same side of the threshold as the
champion's, `pnl_declined` (`declined`) the others; a trade without a realized PnL is in
neither.

`brier_diff` is the mean over the scored trades of the challenger's squared error minus the
champion's; `brier_diff_ci` its 95% percentile interval under a paired bootstrap over those
trades (`resamples` resamples with replacement, numpy's generator seeded with `seed`: the
same answer every time), null below MIN_TRADES scored trades or without probabilities on
both sides. `verdict`: 'challenger better' when the interval lies below 0, 'champion better'
when above, else (and below MIN_TRADES, `n`) 'not enough evidence'.

Everything but the bootstrap is one SQL statement of aggregates; the statement also hands
back the scored trades' squared errors (ordered by trade id) for the bootstrap.

Indexes read: the shadows by `ix_prediction_log_shadows` (model_name, model_version,
created_at) WHERE role = 'shadow' (a sequential scan of the log without it); the champions
by the log's key (prediction_id, created_at) for a few shadows, or by a hash join over the
window's rows (`ix_prediction_log_created_at`) for many; the trades by
`ix_trade_history_prediction_id`, or a hash of the closed ones. It is an exact scan: about
4 s at a million shadow pairs and 50k trades (bench/compare_scale.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

MIN_TRADES = 30
CONFIDENCE = 0.95
CLIP = 1e-15
# How long after its champion a shadow may be logged (the shadow queue is bounded and drops
# what it cannot run): bounds the champion's lookup to a chunk or two of a hypertable.
MAX_SHADOW_LAG = timedelta(days=1)
CHALLENGER_BETTER = "challenger better"
CHAMPION_BETTER = "champion better"
NOT_ENOUGH_EVIDENCE = "not enough evidence"
# The bootstrap draws at most this many indexes at a time (8 bytes each).
_BOOTSTRAP_CHUNK = 4_000_000

_NO_JIT = text("SET LOCAL jit = off")
COMPARE_SQL = text(
    """
WITH pairs AS MATERIALIZED (
    SELECT shadow.created_at AS shadowed_at, shadow.prediction_id AS shadow_id,
           champion.prediction_id, element.row_number,
           pair.champion, pair.challenger
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
    CROSS JOIN LATERAL ROWS FROM (
        jsonb_array_elements(CASE WHEN jsonb_typeof(champion.predictions) = 'array'
                                  THEN champion.predictions ELSE CAST('[]' AS jsonb) END),
        jsonb_array_elements(CASE WHEN jsonb_typeof(shadow.predictions) = 'array'
                                  THEN shadow.predictions ELSE CAST('[]' AS jsonb) END)
    ) WITH ORDINALITY AS element(champion_value, challenger_value, row_number)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN jsonb_typeof(element.champion_value) = 'number'
                    THEN CAST(element.champion_value AS float8) END AS champion,
               CASE WHEN jsonb_typeof(element.challenger_value) = 'number'
                    THEN CAST(element.challenger_value AS float8) END AS challenger
    ) AS pair
    WHERE shadow.role = 'shadow'
      AND shadow.model_name = CAST(:model_name AS varchar)
      AND shadow.model_version = CAST(:challenger AS varchar)
      AND shadow.created_at >= CAST(:since AS timestamptz)
      AND (CAST(:until AS timestamptz) IS NULL OR shadow.created_at < CAST(:until AS timestamptz))
      AND pair.champion IS NOT NULL AND pair.challenger IS NOT NULL
), pair_sums AS (
    SELECT count(*) AS pairs,
           count(*) FILTER (WHERE (champion >= :threshold) = (challenger >= :threshold)) AS agreeing,
           avg(abs(champion - challenger)) AS mean_abs_diff,
           corr(challenger, champion) AS correlation,
           coalesce(bool_and(champion BETWEEN 0 AND 1), false) AS champion_probabilities,
           coalesce(bool_and(challenger BETWEEN 0 AND 1), false) AS challenger_probabilities
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
           avg(champion_error) FILTER (WHERE won IS NOT NULL) AS champion_brier,
           avg(challenger_error) FILTER (WHERE won IS NOT NULL) AS challenger_brier,
           -avg(champion_log) FILTER (WHERE won IS NOT NULL) AS champion_log_loss,
           -avg(challenger_log) FILTER (WHERE won IS NOT NULL) AS challenger_log_loss,
           avg(challenger_error - champion_error) FILTER (WHERE won IS NOT NULL) AS brier_diff,
           count(pnl) FILTER (WHERE taken) AS taken,
           count(pnl) FILTER (WHERE NOT taken) AS declined,
           coalesce(sum(pnl) FILTER (WHERE taken), 0) AS pnl_taken,
           coalesce(sum(pnl) FILTER (WHERE NOT taken), 0) AS pnl_declined,
           array_agg(champion_error ORDER BY trade_id) FILTER (WHERE won IS NOT NULL) AS champion_errors,
           array_agg(challenger_error ORDER BY trade_id) FILTER (WHERE won IS NOT NULL) AS challenger_errors
    FROM scored
)
SELECT * FROM pair_sums CROSS JOIN trade_sums
"""
)


def compare(
    session: Session,
    model_name: str,
    challenger: str,
    *,
    since: datetime,
    until: datetime | None = None,
    threshold: float = 0.5,
    champion: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The challenger `challenger` of `model_name` against its champion (any version, or
    `champion`'s alone) over the shadow pairs logged in [since, until). See the module."""
    # One scan of up to millions of log rows, planned in a millisecond: compiling it (JIT,
    # on by default) costs more than it saves. For this transaction only.
    session.execute(_NO_JIT)
    row = session.execute(
        COMPARE_SQL, parameters(model_name, challenger, since, until, threshold, champion)
    ).one()
    probabilities = {"champion": row.champion_probabilities, "challenger": row.challenger_probabilities}
    sides = {}
    for side in ("champion", "challenger"):
        probability = probabilities[side]
        sides[side] = {
            "model_version": champion if side == "champion" else challenger,
            "accuracy": _ratio(getattr(row, f"{side}_right"), row.scored),
            "brier": _number(getattr(row, f"{side}_brier")) if probability else None,
            "log_loss": _number(getattr(row, f"{side}_log_loss")) if probability else None,
        }
    both = probabilities["champion"] and probabilities["challenger"]
    n = int(row.scored) if both else 0
    ci = None
    if both and n >= MIN_TRADES:
        diffs = np.asarray(row.challenger_errors, dtype=np.float64) - np.asarray(
            row.champion_errors, dtype=np.float64
        )
        ci = bootstrap_ci(diffs, resamples, seed)
    return {
        "model_name": model_name,
        "since": since,
        "until": until,
        "threshold": float(threshold),
        "pairs": int(row.pairs),
        "agreement": _ratio(row.agreeing, row.pairs),
        "mean_abs_diff": _number(row.mean_abs_diff),
        "correlation": _number(row.correlation),
        "trades": int(row.trades),
        "champion": sides["champion"],
        "challenger": sides["challenger"],
        "taken": int(row.taken),
        "declined": int(row.declined),
        "pnl_taken": _number(row.pnl_taken),
        "pnl_declined": _number(row.pnl_declined),
        "brier_diff": _number(row.brier_diff) if both else None,
        "brier_diff_ci": ci,
        "verdict": verdict_of(ci),
        "n": n,
        "resamples": resamples,
    }


def parameters(
    model_name: str,
    challenger: str,
    since: datetime,
    until: datetime | None,
    threshold: float,
    champion: str | None,
) -> dict[str, Any]:
    """COMPARE_SQL's bound parameters."""
    return {
        "model_name": model_name,
        "challenger": challenger,
        "champion": champion,
        "since": since,
        "until": until,
        "threshold": float(threshold),
        "max_lag": MAX_SHADOW_LAG,
        "clip_low": CLIP,
        "clip_high": 1.0 - CLIP,
    }


def bootstrap_ci(diffs: np.ndarray, resamples: int, seed: int) -> list[float]:
    """The 95% percentile interval of the mean of `diffs` under `resamples` resamples with
    replacement, drawn by numpy's default generator seeded with `seed`: resample r is the
    r-th draw of len(diffs) indexes (whatever the chunks they are drawn in)."""
    count = len(diffs)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    per_chunk = max(1, _BOOTSTRAP_CHUNK // count)
    for start in range(0, resamples, per_chunk):
        chunk = min(per_chunk, resamples - start)
        picks = rng.integers(0, count, size=(chunk, count))
        means[start : start + chunk] = diffs[picks].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def verdict_of(ci: list[float] | None) -> str:
    if ci is None:
        return NOT_ENOUGH_EVIDENCE
    low, high = ci
    if high < 0:
        return CHALLENGER_BETTER
    if low > 0:
        return CHAMPION_BETTER
    return NOT_ENOUGH_EVIDENCE


def _ratio(part: int | None, whole: int | None) -> float | None:
    return int(part) / int(whole) if whole else None


def _number(value: float | Decimal | None) -> float | None:
    return None if value is None else float(value)
