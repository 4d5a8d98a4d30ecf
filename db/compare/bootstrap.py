"""The paired bootstrap of the Brier difference, in a form that can be kept: a Poisson bootstrap.

Resample r gives trade i the weight w[i, r], a Poisson(1) draw (the limit of how often
one of n draws with replacement picks it, and independent across trades), and its mean
is sum(w * diff) / sum(w). A trade's weights are a function of its trade id alone, so a
trade's part can be added to an experiment's kept replicate sums when it closes, and
taken back exactly when it changes, in any order (`db.compare.fold`); a scan computes
the same sums from the same weights.

The weights come from PCG64 seeded by the trade id's BLAKE2b hash (numpy keeps a bit
generator's stream fixed across releases, unlike its distributions), turned into
Poisson(1) draws by the inverse of its distribution function.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_TRADES = 30
CHALLENGER_BETTER = "challenger better"
CHAMPION_BETTER = "champion better"
NOT_ENOUGH_EVIDENCE = "not enough evidence"
_SEED = 0x5AD0  # the weights' stream; a new value would be a new definition
# P(W <= k) for W ~ Poisson(1), k = 0..19 (a draw past the last is 1e-19 likely: it takes 20).
_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(20)])


def weights_of(trade_id: str) -> np.ndarray:
    """The trade's weight in each of the RESAMPLES resamples."""
    key = int.from_bytes(hashlib.blake2b(trade_id.encode(), digest_size=8).digest(), "big")
    raw = np.random.PCG64([_SEED, key]).random_raw(RESAMPLES)
    uniform = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(_CDF, uniform, side="right").astype(np.float64)


def replicate_sums(trade_ids: Sequence[str], diffs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of weight x diff, sum of weight) per resample, over these trades."""
    weighted, total = np.zeros(RESAMPLES), np.zeros(RESAMPLES)
    for trade_id, diff in zip(trade_ids, diffs, strict=True):
        weights = weights_of(trade_id)
        weighted += weights * diff
        total += weights
    return weighted, total


def interval(weighted: np.ndarray, total: np.ndarray) -> list[float]:
    """The 95% percentile interval of the resamples' means (a resample that drew no trade,
    e^-n likely, has no mean and is left out)."""
    drawn = total > 0
    means = weighted[drawn] / total[drawn]
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
