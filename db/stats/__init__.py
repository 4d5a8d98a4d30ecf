"""The trade statistics: kept as the journal writes, read in what the answer holds.

`read.statistics` answers `GET /api/v1/trades/stats` (and the performance views) from the
tables the fold keeps (`refresh`); `raw` is the same definition computed from the trades,
which the kept statistics must always agree with. The README's "Statistics at scale"
section describes the design.
"""

from db.stats.equity import equity_curve, equity_curves
from db.stats.measures import GROUP_KEYS, STAT_FIELDS, no_trades
from db.stats.read import Filters, statistics
from db.stats.refresh import (
    BULK_CHANGES,
    Fold,
    StatsBehind,
    StatsState,
    build,
    catch_up,
    fold,
    fold_all,
    state,
)

__all__ = [
    "BULK_CHANGES",
    "GROUP_KEYS",
    "STAT_FIELDS",
    "Filters",
    "Fold",
    "StatsBehind",
    "StatsState",
    "build",
    "catch_up",
    "equity_curve",
    "equity_curves",
    "fold",
    "fold_all",
    "no_trades",
    "state",
    "statistics",
]
