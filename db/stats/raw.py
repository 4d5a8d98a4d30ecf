"""The statistics computed from the trades themselves, in SQL (definitions in the README).

This is the definition the kept statistics (`db.stats.read`) must always agree with, and
what they fall back on where nothing is kept: the partial buckets at a range's edges, a
bucket width other than a day or a week, a journal whose kept statistics are still being
built. `raw_sums` gives the additive part alone, for a range's ragged edges.

Every statistic is computed by PostgreSQL, in one statement for all the levels asked for
(the whole, each group, each bucket, each group's buckets): a `UNION ALL` of one
aggregate per level over the same filtered rows (a CTE). Per level, the drawdown is a
running sum of realized PnL (a window partitioned by the level's keys), then the running
peak of that sum in an outer query, and the largest fall from the peak in the aggregate.

PnL, percentages and fees are computed as `numeric`: a sum (or a square) of doubles
overflows, an SQL error, once it passes ~1.8e308. A result beyond a double's range is
None (JSON has no infinity).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    Numeric,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.models import TradeHistory
from db.stats.measures import as_double, sum_columns

# Every column a level may group by, in the order groups are sorted (nulls last).
_KEY_TYPES = {
    "model_name": String(),
    "model_version": String(),
    "symbol": String(),
    "bucket": DateTime(timezone=True),
}
_ZERO = literal(0, Numeric)


def trade_statistics(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    levels: Sequence[Sequence[str]],
    bucket: ColumnElement[Any] | None = None,
) -> list[list[dict[str, Any]]]:
    """The statistics of the trades matching `where`, for each level of `levels`.

    A level names the columns it groups by (`model_name`, `model_version`, `symbol`, and
    `bucket`, the expression `bucket` of a trade's timestamp); `()` is the whole, which has
    one row even without trades. Each level's rows come sorted by key (nulls last), each a
    dict of its key columns and the statistics (STAT_FIELDS).
    """
    if not levels:
        return []
    used = [name for name in _KEY_TYPES if any(name in level for level in levels)]
    if "bucket" in used and bucket is None:
        raise ValueError("a level groups by bucket, but no bucket expression is given")
    base = _base(where, bucket if "bucket" in used else None)
    parts = [_level(base, tuple(level), number, used) for number, level in enumerate(levels)]
    every = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("levels")
    query = select(every).order_by(every.c.level, *(every.c[name].asc().nulls_last() for name in used))

    results: list[list[dict[str, Any]]] = [[] for _ in levels]
    for row in session.execute(query):
        keys = {name: getattr(row, name) for name in levels[row.level]}
        results[row.level].append({**keys, **_stats_of(row)})
    return results


def sums_query(where: Sequence[ColumnElement[bool]], keys: Sequence[str]):
    """The sums (`db.stats.measures.SUM_FIELDS`) of the trades matching `where`, per value
    of the key columns `keys`, as a query."""
    trade = TradeHistory
    values = SimpleNamespace(
        closed=trade.closed,
        won=trade.won,
        pnl=cast(trade.realized_pnl, Numeric),
        pct=cast(trade.pnl_pct, Numeric),
        fees=cast(trade.fees, Numeric),
    )
    columns = [getattr(trade, name) for name in keys]
    query = select(
        *(column.label(name) for column, name in zip(columns, keys, strict=True)),
        *(value.label(name) for name, value in sum_columns(values).items()),
    ).where(*where)
    return query.group_by(*columns) if columns else query


def _stats_of(row: Any) -> dict[str, Any]:
    """The statistics of one aggregate row, as JSON-ready numbers."""
    return {
        "trades": row.trades,
        "closed": row.closed,
        "wins": row.wins,
        "win_rate": row.wins / row.decided if row.decided else None,
        "total_pnl": as_double(row.total_pnl or 0),
        "avg_pnl": as_double(row.avg_pnl),
        "fees": as_double(row.fees or 0),
        "profit_factor": as_double(row.profit_factor),
        "max_drawdown": as_double(row.max_drawdown),
        "sharpe": as_double(row.sharpe),
        "sortino": as_double(row.sortino),
    }


def equity_curves(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    key: str | None,
    limit: int,
) -> dict[Any, list[dict[str, Any]]]:
    """Cumulative realized PnL after each closed trade, per value of the column `key`
    (one curve, under None, without a key): oldest first, the last `limit` points of each.

    A curve's order is the drawdown's: close time (the opening time when unknown), then
    trade_id. Values of `key` without a closed trade with PnL have no curve.
    """
    trade = TradeHistory
    closed_at = func.coalesce(trade.close_timestamp, trade.timestamp)
    group = getattr(trade, key) if key is not None else null()
    partition = [group] if key is not None else None
    points = (
        select(
            group.label("key"),
            closed_at.label("at"),
            trade.trade_id,
            func.sum(cast(trade.realized_pnl, Numeric))
            .over(partition_by=partition, order_by=(closed_at, trade.trade_id))
            .label("equity"),
            func.row_number()
            .over(partition_by=partition, order_by=(closed_at.desc(), trade.trade_id.desc()))
            .label("from_end"),
        )
        .where(*where, trade.closed.is_(True), trade.realized_pnl.is_not(None))
        .subquery("points")
    )
    query = (
        select(points.c.key, points.c.at, points.c.equity)
        .where(points.c.from_end <= limit)
        .order_by(points.c.key.asc().nulls_last(), points.c.at, points.c.trade_id)
    )
    curves: dict[Any, list[dict[str, Any]]] = {}
    for row in session.execute(query):
        curves.setdefault(row.key, []).append({"at": row.at, "equity": as_double(row.equity)})
    return curves


def _base(where: Sequence[ColumnElement[bool]], bucket: ColumnElement[Any] | None):
    """The filtered trades, with what the statistics read of them."""
    trade = TradeHistory
    columns = [
        trade.trade_id,
        trade.closed,
        trade.won,
        trade.symbol,
        trade.model_name,
        trade.model_version,
        cast(trade.realized_pnl, Numeric).label("pnl"),
        cast(trade.pnl_pct, Numeric).label("pct"),
        cast(trade.fees, Numeric).label("fees"),
        func.coalesce(trade.close_timestamp, trade.timestamp).label("closed_at"),
        # Booked: closed with a realized PnL, what profit factor and drawdown read.
        and_(trade.closed.is_(True), trade.realized_pnl.is_not(None)).label("booked"),
    ]
    if bucket is not None:
        columns.append(bucket.label("bucket"))
    return select(*columns).where(*where).cte("base")


def _level(base, keys: tuple[str, ...], number: int, used: list[str]):
    """One level's aggregate: a row per key (one row for the whole)."""
    # The equity after each booked trade (rows not booked carry the last one on), then its
    # running peak, which starts at 0: a level that only lost has fallen from 0.
    running = select(base, _running(func.sum(base.c.pnl).filter(base.c.booked), base, keys).label("equity"))
    running = running.subquery()
    peak = func.greatest(_ZERO, _running(func.max(running.c.equity), running, keys))
    rows = select(running, peak.label("peak")).subquery()

    c = rows.c
    scored = and_(c.closed.is_(True), c.pct.is_not(None))  # what Sharpe and Sortino read
    mean = func.avg(c.pct).filter(scored)
    downside = func.least(c.pct, _ZERO)
    downside_deviation = func.sqrt(func.avg(downside * downside).filter(scored))
    gross_profit = func.coalesce(func.sum(c.pnl).filter(and_(c.booked, c.pnl > 0)), _ZERO)
    gross_loss = func.abs(func.sum(c.pnl).filter(and_(c.booked, c.pnl < 0)))

    key_columns = [c[name] if name in keys else cast(null(), _KEY_TYPES[name]).label(name) for name in used]
    query = select(
        literal(number, Integer).label("level"),
        *key_columns,
        func.count().label("trades"),
        func.count().filter(c.closed.is_(True)).label("closed"),
        func.count().filter(c.won.is_(True)).label("wins"),
        func.count(c.won).label("decided"),
        func.sum(c.pnl).label("total_pnl"),
        func.avg(c.pnl).label("avg_pnl"),
        func.sum(c.fees).label("fees"),
        (gross_profit / func.nullif(gross_loss, _ZERO)).label("profit_factor"),
        func.max(c.peak - c.equity).filter(c.booked).label("max_drawdown"),
        # stddev_samp is null below two values; numeric makes equal values' deviation 0.
        (mean / func.nullif(func.stddev_samp(c.pct).filter(scored), _ZERO)).label("sharpe"),
        case(
            (func.count().filter(scored) >= 2, mean / func.nullif(downside_deviation, _ZERO)),
            else_=null(),
        ).label("sortino"),
    ).select_from(rows)
    if keys:
        query = query.group_by(*(c[name] for name in keys))
    return query


def _running(aggregate, source, keys: tuple[str, ...]):
    """`aggregate` as a running window over `source` in the drawdown's order, per key."""
    return aggregate.over(
        partition_by=[source.c[name] for name in keys] or None,
        order_by=(source.c.closed_at, source.c.trade_id),
    )
