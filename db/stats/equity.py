"""Equity curves: the cumulative realized PnL after each of the last closes, oldest first.

The points are the last `limit` booked trades in close order (trade_closes, by index);
the equity before the first of them is the booked PnL of all the matching trades (their
kept sums: gross profit less gross loss) less that of the points. So a curve costs its
points, however long the journal. Until the kept statistics are built, the curves come
from trade_history (`db.stats.raw.equity_curves`).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Text, func, literal, select, true
from sqlalchemy.orm import Session

from db.models import TradeClose
from db.stats.measures import as_double, keyset_of
from db.stats.raw import equity_curves as raw_curves
from db.stats.read import Filters, Reader, kept_watermark


def equity_curve(session: Session, filters: Filters, limit: int) -> list[dict[str, Any]]:
    """One curve of the trades matching `filters` (`closed` is ignored: a point is a close)."""
    watermark = kept_watermark(session)
    if watermark is None:
        return raw_curves(session, filters.trade_conditions(), None, limit).get(None, [])
    reader = Reader(session, filters, watermark)
    sums = reader.sums(keyset_of(filters.fixed), ()).get(())
    if sums is None:
        return []
    close = TradeClose
    query = select(close.closed_at, close.pnl).where(*reader.fixed(close), *reader.opened(close))
    return _curve(session, query, sums["gross_profit"] - sums["gross_loss"], limit)


def equity_curves(session: Session, model_name: str, limit: int) -> dict[str | None, list[dict[str, Any]]]:
    """Per model_version of `model_name`, its curve; a version without a booked trade is absent."""
    filters = Filters(model_name=model_name)
    watermark = kept_watermark(session)
    if watermark is None:
        return raw_curves(session, filters.trade_conditions(), "model_version", limit)
    reader = Reader(session, filters, watermark)
    per_version = reader.sums(keyset_of({"model_name", "model_version"}), ("model_version",))
    close = TradeClose
    # Every version's last closes in one statement (planned once: on TimescaleDB each plan
    # of trade_closes covers its chunks); a version still null is a query of its own, as
    # `IS NOT DISTINCT FROM` would take no index.
    named = [version for (version,) in per_version if version is not None]
    last = defaultdict(list)
    if named:
        versions = func.unnest(literal(named, ARRAY(Text))).table_valued("version")
        wanted = versions.render_derived(name="wanted")
        newest = (
            select(close.closed_at, close.trade_id, close.pnl)
            .where(close.model_name == model_name, close.model_version == wanted.c.version)
            .order_by(close.closed_at.desc(), close.trade_id.desc())
            .limit(limit)
            .lateral("newest")
        )
        query = select(wanted.c.version, newest.c.closed_at, newest.c.trade_id, newest.c.pnl).join(
            newest, true()
        )
        for row in session.execute(query):
            last[row.version].append(row)
        for rows in last.values():  # a join keeps no order: newest first, as _last_closes reads
            rows.sort(key=lambda row: (row.closed_at, row.trade_id), reverse=True)
    if (None,) in per_version:
        unnamed = select(close.closed_at, close.pnl).where(
            close.model_name == model_name, close.model_version.is_(None)
        )
        last[None] = _last_closes(session, unnamed, limit)
    curves = {}
    for (version,), sums in per_version.items():
        points = _points(last[version], sums["gross_profit"] - sums["gross_loss"])
        if points:
            curves[version] = points
    return curves


def _last_closes(session: Session, query, limit: int) -> list:
    close = TradeClose
    # By close time, trade_closes' key (and its time dimension on TimescaleDB: newest chunk first).
    return session.execute(query.order_by(close.closed_at.desc(), close.trade_id.desc()).limit(limit)).all()


def _curve(session: Session, query, booked_total: Decimal, limit: int) -> list[dict[str, Any]]:
    return _points(_last_closes(session, query, limit), booked_total)


def _points(last: list, booked_total: Decimal) -> list[dict[str, Any]]:
    """The curve through `last` (newest first), ending at `booked_total`."""
    equity = booked_total - sum((row.pnl for row in last), Decimal(0))
    points = []
    for row in reversed(last):
        equity += row.pnl
        points.append({"at": row.closed_at, "equity": as_double(equity)})
    return points
