"""What the statistics are made of: sums that add across buckets and keys, the keysets
that name a level's rows, and the statistics themselves (definitions in the README).

Every statistic but the drawdown is a ratio of sums, and sums add: of two buckets, of
the kept buckets and the raw rows at a range's ragged edges, of a change's old image
(counted -1) and its new one. `sum_columns` is the one definition of those sums, used
by the fold over logged changes and by the raw reads over trade_history alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import and_, func, literal
from sqlalchemy.sql.elements import ColumnElement

from db.stats.drawdown import Run

STAT_FIELDS = (
    "trades",
    "closed",
    "wins",
    "win_rate",
    "total_pnl",
    "avg_pnl",
    "fees",
    "profit_factor",
    "max_drawdown",
    "sharpe",
    "sortino",
)
# group_by -> the columns that name a group.
GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "model_version": ("model_name", "model_version"),
    "model_name": ("model_name",),
    "symbol": ("symbol",),
}
KEY_COLUMNS = ("symbol", "model_name", "model_version")
_KEY_BITS = {"symbol": 1, "model_name": 2, "model_version": 4}
# Every set of columns a level and its filters can name: whole, per model, per symbol,
# and their combinations (a group by version always names the model too).
KEYSETS = (0, 1, 2, 3, 6, 7)

SUM_FIELDS = (
    "trades",
    "closed",
    "wins",
    "decided",
    "pnl_n",
    "pnl_sum",
    "fees_sum",
    "closed_wins",
    "closed_decided",
    "closed_pnl_n",
    "closed_pnl_sum",
    "closed_fees_sum",
    "gross_profit",
    "gross_loss",
    "scored_n",
    "pct_sum",
    "pct_squares",
    "downside_squares",
)
# Twice a double's 17 significant digits: the ratios below round to the same double as
# the exact ones would (and a square root at this precision costs a fifth of one at 60).
_PRECISE = Context(prec=34)


def keyset_of(columns: Iterable[str]) -> int:
    """The keyset of a level (its key columns and the columns its filters fix)."""
    bits = 0
    for name in columns:
        bits |= _KEY_BITS[name]
    if bits & 4:
        bits |= 2  # a model version is named with its model
    return bits


def keyset_columns(keyset: int) -> tuple[str, ...]:
    return tuple(name for name in KEY_COLUMNS if keyset & _KEY_BITS[name])


def sum_columns(c: Any, sign: ColumnElement[Any] | int = 1) -> dict[str, ColumnElement[Any]]:
    """SUM_FIELDS as aggregates over rows with `closed`, `won`, and `pnl`, `pct`, `fees` as
    numeric; each row counted `sign` times (+1, or -1 for a change's old image)."""
    sign = literal(sign) if isinstance(sign, int) else sign
    booked = and_(c.closed.is_(True), c.pnl.is_not(None))
    scored = and_(c.closed.is_(True), c.pct.is_not(None))
    downside = func.least(c.pct, 0)

    def count(condition=None):
        total = func.sum(sign) if condition is None else func.sum(sign).filter(condition)
        return func.coalesce(total, 0)

    def total(value, condition=None):
        summed = func.sum(sign * value) if condition is None else func.sum(sign * value).filter(condition)
        return func.coalesce(summed, 0)

    closed = c.closed.is_(True)
    return {
        "trades": count(),
        "closed": count(closed),
        "wins": count(c.won.is_(True)),
        "decided": count(c.won.is_not(None)),
        "pnl_n": count(c.pnl.is_not(None)),
        "pnl_sum": total(c.pnl),
        "fees_sum": total(c.fees),
        "closed_wins": count(and_(closed, c.won.is_(True))),
        "closed_decided": count(and_(closed, c.won.is_not(None))),
        "closed_pnl_n": count(and_(closed, c.pnl.is_not(None))),
        "closed_pnl_sum": total(c.pnl, closed),
        "closed_fees_sum": total(c.fees, closed),
        "gross_profit": total(c.pnl, and_(booked, c.pnl > 0)),
        "gross_loss": total(-c.pnl, and_(booked, c.pnl < 0)),
        "scored_n": count(scored),
        "pct_sum": total(c.pct, scored),
        "pct_squares": total(c.pct * c.pct, scored),
        "downside_squares": total(downside * downside, scored),
    }


def no_sums() -> dict[str, Any]:
    return dict.fromkeys(SUM_FIELDS, 0)


def no_trades() -> dict[str, Any]:
    """The statistics of no trades at all (what the whole reports without any)."""
    return statistics_of(no_sums(), Run())


def add_sums(total: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    for name in SUM_FIELDS:
        total[name] += more[name]
    return total


def statistics_of(sums: Mapping[str, Any], run: Run, closed: bool | None = None) -> dict[str, Any]:
    """STAT_FIELDS of trades with these sums and this drawdown run; `closed` is the filter
    (True: the closed trades alone, False: the open ones alone)."""
    trades, wins, decided = sums["trades"], sums["wins"], sums["decided"]
    pnl_n, pnl_sum, fees = sums["pnl_n"], sums["pnl_sum"], sums["fees_sum"]
    booked = closed is not False  # every booked or scored trade is closed
    if closed is True:
        trades, wins, decided = sums["closed"], sums["closed_wins"], sums["closed_decided"]
        pnl_n, pnl_sum, fees = sums["closed_pnl_n"], sums["closed_pnl_sum"], sums["closed_fees_sum"]
    elif closed is False:
        trades -= sums["closed"]
        wins -= sums["closed_wins"]
        decided -= sums["closed_decided"]
        pnl_n -= sums["closed_pnl_n"]
        pnl_sum -= sums["closed_pnl_sum"]
        fees -= sums["closed_fees_sum"]
    scored_n = sums["scored_n"] if booked else 0
    sharpe = sortino = None
    if scored_n >= 2:
        n, total = Decimal(scored_n), Decimal(sums["pct_sum"])
        mean = _PRECISE.divide(total, n)
        variance = _PRECISE.divide(Decimal(sums["pct_squares"]) - _PRECISE.divide(total * total, n), n - 1)
        if variance > 0:
            sharpe = as_double(_PRECISE.divide(mean, variance.sqrt(_PRECISE)))
        downside = _PRECISE.divide(Decimal(sums["downside_squares"]), n)
        if downside > 0:
            sortino = as_double(_PRECISE.divide(mean, downside.sqrt(_PRECISE)))
    gross_loss = sums["gross_loss"] if booked else 0
    return {
        "trades": int(trades),
        "closed": int(sums["closed"]) if closed is not False else 0,
        "wins": int(wins),
        "win_rate": int(wins) / int(decided) if decided else None,
        "total_pnl": as_double(pnl_sum),
        "avg_pnl": as_double(_PRECISE.divide(Decimal(pnl_sum), Decimal(pnl_n))) if pnl_n else None,
        "fees": as_double(fees),
        "profit_factor": as_double(_PRECISE.divide(Decimal(sums["gross_profit"]), Decimal(gross_loss)))
        if gross_loss
        else None,
        "max_drawdown": as_double(run.max_drawdown) if booked else None,
        "sharpe": sharpe,
        "sortino": sortino,
    }


def as_double(value: Any) -> float | None:
    """A JSON number, or None for one beyond a double's range (JSON has no infinity)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
