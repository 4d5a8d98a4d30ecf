"""The time buckets of the kept statistics, and the SQL that folds trade images into them.

Days and weeks start where TimescaleDB's `time_bucket` starts them (midnight UTC; weeks
on Monday 2000-01-03), and the same origin gives `date_bin` on plain PostgreSQL, so a
bucket means the same everywhere. The additive statistics of an image (a row of
trade_history, or a logged change counted +1 or -1) go to every bucket it belongs to in
one statement: `GROUPING SETS` over the six keysets times three widths.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Interval, Numeric, case, cast, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from db.models import TradeStatsBucket
from db.stats.measures import KEY_COLUMNS, KEYSETS, SUM_FIELDS, keyset_columns, sum_columns

# The bucket widths a statistics query may ask for: `N minutes`, `hours`, `days`, `weeks`.
BUCKET_PATTERN = re.compile(r"^([1-9][0-9]{0,3}) (minute|hour|day|week)s?$")
ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday: TimescaleDB's origin for time_bucket
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
WIDTHS = {"day": DAY, "week": WEEK}  # the bucket widths kept by time
# Width "all" has one bucket, all of time; it is filed under the origin.
ALL_BUCKET = ORIGIN


def floor(moment: datetime, width: timedelta) -> datetime:
    """The start of the bucket of `width` that holds `moment`."""
    return ORIGIN + ((moment - ORIGIN) // width) * width


def ceiling(moment: datetime, width: timedelta) -> datetime:
    start = floor(moment, width)
    return start if start == moment else start + width


def bucket_sql(width: timedelta, column):
    """`floor` in SQL (date_bin, same origin)."""
    return func.date_bin(cast(literal(width), Interval), column, literal(ORIGIN))


def _grouping_sets(columns, day, week) -> Any:
    sets = []
    for time_part in ((), (day,), (week,)):
        for keyset in KEYSETS:
            sets.append(tuple_(*(columns[name] for name in keyset_columns(keyset)), *time_part))
    return func.grouping_sets(*sets)


def upsert_sums(images, sign=1):
    """INSERT ... ON CONFLICT that adds the images' sums (times `sign`) to their buckets.

    `images`: a selectable with the key columns, `opened_at`, `closed`, `won`, and `pnl`,
    `pct`, `fees` as numeric. Returns the statement; its RETURNING gives each touched
    bucket's id, bucket and trades (a bucket left without trades is to be deleted).
    """
    c = images.c
    day = bucket_sql(DAY, c.opened_at).label("day")
    week = bucket_sql(WEEK, c.opened_at).label("week")
    keys = [c[name] for name in KEY_COLUMNS]
    grouped = select(*keys, day, week, c.closed, c.won, c.pnl, c.pct, c.fees, c.sign).subquery("dated")
    g = grouped.c
    grouping = {name: func.grouping(g[name]) for name in (*KEY_COLUMNS, "day", "week")}
    keyset = sum((1 - grouping[name]) * bit for name, bit in zip(KEY_COLUMNS, (1, 2, 4), strict=True))
    width = case((grouping["day"] == 0, "day"), (grouping["week"] == 0, "week"), else_="all")
    bucket = func.coalesce(g.day, g.week, literal(ALL_BUCKET))
    sums = sum_columns(g, g.sign)
    deltas = select(
        bucket.label("bucket"),
        width.label("width"),
        keyset.label("keyset"),
        *(g[name] for name in KEY_COLUMNS),
        *(value.label(name) for name, value in sums.items()),
    ).group_by(_grouping_sets(g, g.day, g.week))
    columns = ["bucket", "width", "keyset", *KEY_COLUMNS, *SUM_FIELDS]
    statement = insert(TradeStatsBucket).from_select(columns, deltas)
    table = TradeStatsBucket.__table__
    statement = statement.on_conflict_do_update(
        index_elements=["width", "bucket", "keyset", *KEY_COLUMNS],
        set_={name: table.c[name] + statement.excluded[name] for name in SUM_FIELDS},
    )
    return statement.returning(TradeStatsBucket.id, TradeStatsBucket.bucket, TradeStatsBucket.trades)


def image_columns(source, sign=None) -> list:
    """The columns `upsert_sums` reads, from a table with trade_history's column names
    (`timestamp`, `realized_pnl`, ...) or the change log's (`opened_at`, ...)."""
    c = source.c
    opened = c["opened_at"] if "opened_at" in c else c["timestamp"]
    return [
        *(c[name] for name in KEY_COLUMNS),
        opened.label("opened_at"),
        c.closed,
        c.won,
        cast(c.realized_pnl, Numeric).label("pnl"),
        cast(c.pnl_pct, Numeric).label("pct"),
        cast(c.fees, Numeric).label("fees"),
        (c.sign if sign is None else literal(sign)).label("sign"),
    ]
