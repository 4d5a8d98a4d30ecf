"""A challenger against its champion, over the shadow pairs: the same inputs, both predictions.

Over the pairs in the window (a shadow and its champion's answer, row by row; `scan` says
which rows pair): `pairs`, `agreement` (the share on the same side of `threshold`; a value
at or above it is positive), `mean_abs_diff`, `correlation` (Pearson; null when either
side is constant or there are fewer than two pairs).

Over the closed trades linked to the pairs' champion predictions (each scored by its
prediction's first row, as first shadowed): `trades`; per side `accuracy` (the side's call,
value >= threshold, against `won`, as db/stats counts wins), `brier` and `log_loss` against
`won` (probabilities clipped to [1e-15, 1 - 1e-15]; both null for a side any of whose
values in the window lies outside [0, 1]: a signed output). A closed trade whose `won` is
unknown counts in `trades` and the PnL figures it has, not in the scores.

The champion took every one of those trades, so the PnL split is the challenger's:
`pnl_taken` (and `taken`, their count) sums the realized PnL of the trades whose challenger
prediction lies on the same side of the threshold as the champion's, `pnl_declined`
(`declined`) the others; a trade without a realized PnL is in neither.

`brier_diff` is the mean over the scored trades of the challenger's squared error minus the
champion's; `brier_diff_ci` its 95% interval under a paired (Poisson) bootstrap over those
trades (`bootstrap`), null below MIN_TRADES scored trades or without probabilities on both
sides. `verdict`: 'challenger better' when the interval lies below 0, 'champion better'
when above, else (and below MIN_TRADES, `n`) 'not enough evidence'.

Where the sums come from (`source`): an experiment's window (since its challenger was set,
at its threshold) is read from its kept sums (`kept`, kept by `fold` and the log's writer),
in a few milliseconds whatever its size; any other window is scanned (`scan`), in time that
grows with the window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from db.compare.bootstrap import (
    CHALLENGER_BETTER,
    CHAMPION_BETTER,
    CONFIDENCE,
    MIN_TRADES,
    NOT_ENOUGH_EVIDENCE,
    RESAMPLES,
)
from db.compare.fold import fold_all
from db.compare.kept import kept, record_experiment
from db.compare.scan import scan
from db.compare.sums import Window, answer_of

__all__ = [
    "CHALLENGER_BETTER",
    "CHAMPION_BETTER",
    "CONFIDENCE",
    "MIN_TRADES",
    "NOT_ENOUGH_EVIDENCE",
    "RESAMPLES",
    "Window",
    "compare",
    "fold_all",
    "record_experiment",
]


def compare(
    session: Session,
    model_name: str,
    challenger: str,
    *,
    since: datetime,
    until: datetime | None = None,
    threshold: float = 0.5,
    champion: str | None = None,
) -> dict[str, Any]:
    """The challenger `challenger` of `model_name` against its champion (any version, or
    `champion`'s alone) over the shadow pairs logged in [since, until). See the module."""
    window = Window(model_name, challenger, since, until, float(threshold), champion)
    sums = kept(session, window)
    if sums is not None:
        return answer_of(window, sums, "kept")
    return answer_of(window, scan(session, window), "scan")
