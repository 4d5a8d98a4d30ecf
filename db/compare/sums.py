"""A comparison's sums, and the answer they make: what a scan and the kept rows both give.

Every figure is a ratio of sums (the correlation too, from the sums of the values, their
squares and products), so the scan of the log and the kept sums of an experiment answer
alike; the bootstrap interval is a ratio of replicate sums (`db.compare.bootstrap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from db.compare.bootstrap import MIN_TRADES, RESAMPLES, interval, verdict_of

PAIR_SUMS = (
    "pairs",
    "agreeing",
    "abs_diff",
    "champion_sum",
    "challenger_sum",
    "champion_squares",
    "challenger_squares",
    "products",
    "champion_outside",  # values outside [0, 1]: not a probability
    "challenger_outside",
)
TRADE_SUMS = (
    "trades",
    "scored",  # closed with a known outcome (`won`)
    "champion_right",
    "challenger_right",
    "champion_error",  # squared error against the outcome, over the scored trades
    "challenger_error",
    "champion_log",  # log-likelihood of the outcome (clipped), over the scored trades
    "challenger_log",
    "taken",  # with a realized PnL, on the same side of the threshold as the champion
    "declined",
    "pnl_taken",
    "pnl_declined",
)
# Below this share of the sum of squares, a side's spread is rounding: it is constant.
_CONSTANT = 1e-12


@dataclass
class Sums:
    values: dict[str, Any]  # PAIR_SUMS and TRADE_SUMS
    weighted: np.ndarray | None = None  # per resample: sum of weight x Brier difference
    total: np.ndarray | None = None  # per resample: sum of weight

    @classmethod
    def zero(cls) -> Sums:
        return cls(dict.fromkeys((*PAIR_SUMS, *TRADE_SUMS), 0))


@dataclass(frozen=True)
class Window:
    model_name: str
    challenger: str
    since: datetime
    until: datetime | None
    threshold: float
    champion: str | None


def answer_of(window: Window, sums: Sums, source: str) -> dict[str, Any]:
    """The answer of `GET .../compare` (db.compare's module says what each figure is)."""
    v = sums.values
    pairs, scored = int(v["pairs"]), int(v["scored"])
    probability = {side: pairs > 0 and int(v[f"{side}_outside"]) == 0 for side in ("champion", "challenger")}
    sides = {}
    for side in ("champion", "challenger"):
        scores = probability[side] and scored > 0
        sides[side] = {
            "model_version": window.champion if side == "champion" else window.challenger,
            "accuracy": int(v[f"{side}_right"]) / scored if scored else None,
            "brier": float(v[f"{side}_error"]) / scored if scores else None,
            "log_loss": -float(v[f"{side}_log"]) / scored if scores else None,
        }
    both = probability["champion"] and probability["challenger"]
    n = scored if both else 0
    ci = None
    if n >= MIN_TRADES and sums.weighted is not None and sums.total is not None:
        ci = interval(sums.weighted, sums.total)
    return {
        "model_name": window.model_name,
        "since": window.since,
        "until": window.until,
        "threshold": float(window.threshold),
        "source": source,
        "pairs": pairs,
        "agreement": int(v["agreeing"]) / pairs if pairs else None,
        "mean_abs_diff": float(v["abs_diff"]) / pairs if pairs else None,
        "correlation": _correlation(v),
        "trades": int(v["trades"]),
        "champion": sides["champion"],
        "challenger": sides["challenger"],
        "taken": int(v["taken"]),
        "declined": int(v["declined"]),
        "pnl_taken": _number(v["pnl_taken"]),
        "pnl_declined": _number(v["pnl_declined"]),
        "brier_diff": (float(v["challenger_error"]) - float(v["champion_error"])) / n if n else None,
        "brier_diff_ci": ci,
        "verdict": verdict_of(ci),
        "n": n,
        "resamples": RESAMPLES,
    }


def _correlation(v: dict[str, Any]) -> float | None:
    """Pearson's r from the sums; None with fewer than two pairs or a constant side."""
    n = int(v["pairs"])
    if n < 2:
        return None
    x, y = float(v["champion_sum"]), float(v["challenger_sum"])
    xx, yy = float(v["champion_squares"]), float(v["challenger_squares"])
    sxx, syy = xx - x * x / n, yy - y * y / n
    if sxx <= _CONSTANT * xx or syy <= _CONSTANT * yy:
        return None
    sxy = float(v["products"]) - x * y / n
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def _number(value: float | Decimal | None) -> float | None:
    return None if value is None else float(value)
