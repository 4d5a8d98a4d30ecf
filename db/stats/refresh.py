"""The fold: brings the kept statistics up to date with the change log, in one transaction.

Triggers on trade_history log every change's row images (migration 004), whatever wrote
them. A fold takes the oldest logged changes and, in the same transaction:

1. adds their sums (old image -1, new image +1) to every bucket they belong to;
2. keeps `trade_closes`, the booked trades by close time, equal to trade_history;
3. recomputes the drawdown state of the close days they touched (closes before the
   watermark; later ones are read as they are), then refolds the buckets those days
   feed;
4. moves the watermark to the last full hour, recomputing the close days it passes.

Folds are serialised by an advisory lock: beat's task skips when another holds it, a
read that finds the statistics too stale waits for it. Until the kept statistics are
built (after the migration, or `stats refresh --rebuild`), a fold builds them from the
trades, and reads compute from the trades meanwhile.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Numeric,
    and_,
    cast,
    column,
    delete,
    func,
    insert,
    select,
    table,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.orm import Session

from db.models import (
    TRADE_STATS_STATE,
    TradeClose,
    TradeHistory,
    TradeStatsBucket,
    TradeStatsChange,
    TradeStatsProfile,
)
from db.models import TradeStatsSegment as Segment
from db.stats.buckets import DAY, bucket_sql, floor, image_columns, upsert_sums
from db.stats.closedays import CellKey, recompute_days
from db.stats.drawdown import EMPTY, Run, chain
from db.stats.measures import KEY_COLUMNS
from db.timescale import LIFT_DECOMPRESSION_LIMIT

BATCH_CHANGES = 20_000  # changes one fold takes; a backlog takes several folds
BULK_CHANGES = 200_000  # a backlog this long is built from the trades (beat, the CLI), not folded
_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, 1)")
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:namespace, 1)")
_LOCK_NAMESPACE = 0x7374  # "st": apart from the journal's locks
_BATCH_TABLE = text(
    "CREATE TEMP TABLE IF NOT EXISTS trade_stats_batch (LIKE trade_stats_changes) ON COMMIT DELETE ROWS"
)
_TAKE = text(
    """
    WITH taken AS (
        DELETE FROM trade_stats_changes
        WHERE id IN (SELECT id FROM trade_stats_changes ORDER BY id LIMIT :limit)
        RETURNING *
    )
    INSERT INTO trade_stats_batch SELECT * FROM taken
    """
)
# The refolded drawdown of each bucket, written in one statement per chunk.
_WRITE_RUNS = text(
    """
    UPDATE trade_stats_buckets AS b
    SET booked_n = u.n, booked_net = u.net, booked_high = u.high, booked_low = u.low, booked_fall = u.fall
    FROM unnest(CAST(:width AS text[]), CAST(:bucket AS timestamptz[]), CAST(:keyset AS smallint[]),
                CAST(:symbol AS text[]), CAST(:model_name AS text[]), CAST(:model_version AS text[]),
                CAST(:n AS bigint[]), CAST(:net AS numeric[]), CAST(:high AS numeric[]),
                CAST(:low AS numeric[]), CAST(:fall AS numeric[]))
         AS u(width, bucket, keyset, symbol, model_name, model_version, n, net, high, low, fall)
    WHERE b.width = u.width AND b.bucket = u.bucket AND b.keyset = u.keyset
      AND b.symbol IS NOT DISTINCT FROM u.symbol AND b.model_name IS NOT DISTINCT FROM u.model_name
      AND b.model_version IS NOT DISTINCT FROM u.model_version
    """
)
_OLDEST_AGE = text(
    "SELECT clock_timestamp(), extract(epoch FROM clock_timestamp() - logged_at)"
    " FROM trade_stats_changes ORDER BY id LIMIT 1"
)
_WRITE_CHUNK = 5_000
_READ_CHUNK = 50


_NOT_BUILT = object()  # what _fold answers while nothing is built: build() runs instead


@dataclass
class Fold:
    changes: int  # logged changes folded
    days: int  # close days whose drawdown state was recomputed
    watermark: datetime
    built: bool = False  # this fold built everything from the trades


@dataclass
class StatsState:
    built: bool
    watermark: datetime | None
    refreshed_at: datetime | None
    built_at: datetime | None
    pending: int  # changes logged and not folded yet (counted up to a bound)
    oldest_pending: datetime | None


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def state(session: Session, count_up_to: int = 100_000) -> StatsState:
    """Where the kept statistics stand (reads only)."""
    row = session.execute(select(TRADE_STATS_STATE)).first()
    oldest = session.scalar(select(TradeStatsChange.logged_at).order_by(TradeStatsChange.id).limit(1))
    pending = session.scalar(
        select(func.count()).select_from(select(TradeStatsChange.id).limit(count_up_to).subquery())
    )
    if row is None:
        return StatsState(False, None, None, None, pending, oldest)
    return StatsState(row.built, row.watermark, row.refreshed_at, row.built_at, pending, oldest)


def fold(session: Session, now: datetime, *, wait: bool = True, limit: int = BATCH_CHANGES) -> Fold | None:
    """One fold, committed (or the build, while nothing is built). None when another
    process is folding and `wait` is False."""
    try:
        result = _fold(session, now, wait, limit)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if result is _NOT_BUILT:
        return build(session, now, wait=wait)
    return result


def fold_all(
    session: Session,
    now: datetime,
    *,
    deadline: float | None = None,
    wait: bool = True,
    build_beyond: int | None = None,
) -> Fold | None:
    """Folds until nothing logged before this call is left (or `deadline`, a
    time.monotonic() value, passes); the last fold's report with the totals.

    With `build_beyond`, a backlog of at least that many changes (a bulk load, a long
    outage of beat) is built from the trades instead, in one pass: folding it batch by
    batch would recompute nearly every close day once a batch."""
    if build_beyond is not None and _backlog_reaches(session, build_beyond):
        built = build(session, now, wait=wait)
        if built is None:
            return None
        more = fold_all(session, now, deadline=deadline, wait=wait)
        if more is not None:
            built.changes += more.changes
            built.days += more.days
            built.watermark = more.watermark
        return built
    total = None
    while True:
        done = fold(session, now, wait=wait)
        if done is None:
            return total
        if total is None:
            total = done
        else:
            total.changes += done.changes
            total.days += done.days
            total.watermark = done.watermark
            total.built = total.built or done.built
        if done.changes < BATCH_CHANGES and not done.built:
            return total
        if deadline is not None and time.monotonic() > deadline:
            return total


def _backlog_reaches(session: Session, changes: int) -> bool:
    at_least = select(func.count()).select_from(select(TradeStatsChange.id).limit(changes).subquery())
    reached = session.scalar(at_least) >= changes
    session.commit()
    return reached


def catch_up(session: Session, max_staleness_s: float, budget_s: float = 10.0) -> None:
    """Fold, when a change older than `max_staleness_s` waits, until every change logged
    that long before this call is folded (changes logged while it folds are newer than
    the read that asked). By the database's clock; for at most about `budget_s`, then
    StatsBehind. Nothing to do while the statistics are not built: reads compute them
    from the trades then."""
    started, age = session.execute(_OLDEST_AGE).first() or (None, None)
    if age is None or age <= max_staleness_s:
        return
    row = session.execute(select(TRADE_STATS_STATE.c.built)).first()
    if row is None or not row.built:
        return
    fold_all(session, started, deadline=time.monotonic() + budget_s)
    oldest = session.scalar(select(TradeStatsChange.logged_at).order_by(TradeStatsChange.id).limit(1))
    session.commit()
    if oldest is not None and (started - oldest).total_seconds() > max_staleness_s:
        raise StatsBehind((started - oldest).total_seconds())


class StatsBehind(Exception):
    """Changes older than the staleness allowed wait, and folding them takes longer than a read may."""

    def __init__(self, age_s: float):
        super().__init__(
            f"the kept statistics are {age_s:.0f}s behind the journal; they are being brought up to date"
        )
        self.age_s = age_s


def build(
    session: Session, now: datetime, *, wait: bool = True, progress: Callable[[str], None] | None = None
) -> Fold | None:
    """Every kept table from trade_history, whatever was kept, committed.

    One REPEATABLE READ transaction: the change log is emptied and the trades are read
    in the same snapshot, so a change is either in the trades read or left in the log
    to fold, never both. Its first statement takes the lock without waiting (a snapshot
    taken before a wait would miss what the fold it waited for wrote), so waiting is a
    retry. The trades are read a month of opening times at a time, each statement
    within the statement timeout however large the journal.
    """
    session.commit()  # the isolation level is chosen as a transaction begins
    while True:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if session.execute(_TRY_LOCK, {"namespace": _LOCK_NAMESPACE}).scalar():
            break
        session.rollback()
        if not wait:
            return None
        time.sleep(0.5)
    try:
        result = _build(session, now, progress or (lambda line: None))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return result


def _fold(session: Session, now: datetime, wait: bool, limit: int) -> Any:
    locked = session.execute(_LOCK if wait else _TRY_LOCK, {"namespace": _LOCK_NAMESPACE}).scalar()
    if not wait and not locked:
        return None
    row = _ensure_state_row(session)
    if not row.built or row.watermark is None:
        return _NOT_BUILT
    watermark = row.watermark
    session.execute(_BATCH_TABLE)
    session.execute(_TAKE, {"limit": limit})
    batch = _batch_table()
    taken = session.scalar(select(text("count(*)")).select_from(batch))
    dirty: set[datetime] = set()
    if taken:
        _add_sums(session, select(*image_columns(batch)).subquery("images"))
        _keep_closes(session, batch)
        booked = and_(
            batch.c.closed.is_(True), batch.c.realized_pnl.is_not(None), batch.c.closed_at < watermark
        )
        dirty.update(session.scalars(select(bucket_sql(DAY, batch.c.closed_at)).where(booked).distinct()))
    new_watermark = hour_floor(now)
    if new_watermark > watermark:
        day = floor(watermark, DAY)
        while day < new_watermark:
            dirty.add(day)
            day += DAY
        watermark = new_watermark
    if dirty:
        _refold(session, recompute_days(session, dirty, watermark))
    session.execute(update(TRADE_STATS_STATE).values(watermark=watermark, refreshed_at=now))
    return Fold(changes=taken or 0, days=len(dirty), watermark=watermark)


def _build(session: Session, now: datetime, progress: Callable[[str], None]) -> Fold:
    _ensure_state_row(session)
    for kept in (TradeStatsBucket, TradeClose, Segment, TradeStatsProfile):
        session.execute(delete(kept))
    changes = session.execute(delete(TradeStatsChange)).rowcount
    trades = TradeHistory.__table__
    opened = trades.c["timestamp"]
    first, last = session.execute(select(func.min(opened), func.max(opened))).one()
    month = floor(first, DAY).replace(day=1) if first is not None else None
    while month is not None and month <= last:
        after = (month + timedelta(days=32)).replace(day=1)
        in_month = and_(opened >= month, opened < after)
        images = select(*image_columns(trades, sign=1)).where(in_month).subquery("images")
        session.execute(upsert_sums(images))
        closed_at = func.coalesce(trades.c.close_timestamp, opened)
        booked = select(*_close_row(trades, trades.c.trade_id, closed_at, opened))
        session.execute(
            insert(TradeClose).from_select(list(_CLOSE_COLUMNS), booked.where(in_month, _booked(trades.c)))
        )
        progress(f"trades opened in {month:%Y-%m}: summed")
        month = after
    watermark = hour_floor(now)
    days = sorted(
        session.scalars(select(TradeClose.close_day).where(TradeClose.closed_at < watermark).distinct())
    )
    for number, day in enumerate(days, 1):
        recompute_days(session, [day], watermark)
        if number % 30 == 0 or number == len(days):
            progress(f"close days: {number} of {len(days)} (up to {day:%Y-%m-%d})")
    _write_runs(session, _fold_segments(session.execute(_segment_select()).all()))
    session.execute(
        update(TRADE_STATS_STATE).values(built=True, watermark=watermark, built_at=now, refreshed_at=now)
    )
    return Fold(changes=changes, days=len(days), watermark=watermark, built=True)


def _ensure_state_row(session: Session):
    row = session.execute(select(TRADE_STATS_STATE).with_for_update()).first()
    if row is None:  # an operator emptied it: start over
        session.execute(insert(TRADE_STATS_STATE).values(built=False))
        row = session.execute(select(TRADE_STATS_STATE)).first()
    return row


def _batch_table():
    """The batch a fold took, in a temporary table shaped like the change log."""
    return table("trade_stats_batch", *(column(c.name, c.type) for c in TradeStatsChange.__table__.columns))


def _add_sums(session: Session, images) -> None:
    touched = session.execute(upsert_sums(images)).all()
    emptied = [(row.id, row.bucket) for row in touched if row.trades == 0]
    if emptied:  # no trade left in a bucket (deleted or moved): no row
        bucket = TradeStatsBucket
        for chunk in _chunks(emptied, _WRITE_CHUNK):
            session.execute(
                delete(bucket).where(
                    bucket.id.in_([id_ for id_, _ in chunk]), bucket.bucket.in_([at for _, at in chunk])
                )
            )


_CLOSE_COLUMNS = ("trade_id", "closed_at", "close_day", "opened_at", "pnl", *KEY_COLUMNS)


def _close_row(source, trade_id, closed_at, opened_at) -> list:
    """A trade_closes row (_CLOSE_COLUMNS) from a trade's image."""
    return [
        trade_id,
        closed_at,
        bucket_sql(DAY, closed_at),
        opened_at,
        cast(source.c.realized_pnl, Numeric),
        *(source.c[name] for name in KEY_COLUMNS),
    ]


def _booked(c):
    return and_(c.closed.is_(True), c.realized_pnl.is_not(None))


def _keep_closes(session: Session, batch) -> None:
    """trade_closes follows each trade's first image in the batch (what it held: removed
    if booked) and its last one (what the trade is now: added if booked)."""
    c = batch.c
    first = select(batch).ext(distinct_on(c.trade_id)).order_by(c.trade_id, c.id).subquery("first")
    held = select(first.c.trade_id, first.c.closed_at).where(first.c.sign == -1, _booked(first.c))
    _remove_closes(session, session.execute(held).all())
    last = select(batch).ext(distinct_on(c.trade_id)).order_by(c.trade_id, c.id.desc()).subquery("last")
    now_booked = select(*_close_row(last, last.c.trade_id, last.c.closed_at, last.c.opened_at))
    statement = upsert(TradeClose).from_select(
        list(_CLOSE_COLUMNS), now_booked.where(last.c.sign == 1, _booked(last.c))
    )
    statement = statement.on_conflict_do_update(  # it was there already: a batch folded twice
        index_elements=["closed_at", "trade_id"],
        set_={name: statement.excluded[name] for name in _CLOSE_COLUMNS[2:]},
    )
    session.execute(statement)


def _remove_closes(session: Session, held: list) -> None:
    """Deletes these (trade_id, closed_at) from trade_closes, one statement per close day
    with that day's range of close times written out: TimescaleDB decompresses, for a
    DELETE on a compressed chunk, every batch its constant conditions do not rule out, so
    a join (no constants) decompressed all of trade_closes, and failed past its limit of
    100,000 tuples a transaction (1M trades). The limit is lifted for the fold's
    transaction: late changes to old trades decompress what they touch, and a batch's
    changes may touch many days."""
    if not held:
        return
    session.execute(LIFT_DECOMPRESSION_LIMIT)
    by_day: dict[datetime, list] = defaultdict(list)
    for trade_id, closed_at in held:
        by_day[floor(closed_at, DAY)].append((trade_id, closed_at))
    for closes in by_day.values():
        times = [closed_at for _, closed_at in closes]
        session.execute(
            delete(TradeClose).where(
                TradeClose.closed_at.between(min(times), max(times)),
                tuple_(TradeClose.trade_id, TradeClose.closed_at).in_(closes),
            )
        )


def _refold(session: Session, touched: set[CellKey]) -> None:
    """Each touched bucket's drawdown: its segments, one close day after the other."""
    runs: dict[CellKey, Run] = {}
    by_width: dict[str, set] = defaultdict(set)
    for cell in touched:
        by_width[cell[0]].add(cell)
    for width, cells in by_width.items():
        if width == "all":
            segments = _segments_of_keys(session, cells)
        else:
            buckets = sorted({cell[1] for cell in cells})
            segments = []
            for chunk in _chunks(buckets, _WRITE_CHUNK):
                segments += session.execute(
                    _segment_select().where(Segment.width == width, Segment.bucket.in_(chunk))
                ).all()
        folded = _fold_segments(segments)
        for cell in cells:
            runs[cell] = folded.get(cell, EMPTY)
    _write_runs(session, runs)


def _segment_select():
    return select(
        Segment.width,
        Segment.bucket,
        Segment.keyset,
        *(getattr(Segment, name) for name in KEY_COLUMNS),
        Segment.close_day,
        Segment.booked_n,
        Segment.booked_net,
        Segment.booked_high,
        Segment.booked_low,
        Segment.booked_fall,
    )


def _segments_of_keys(session: Session, cells: set[CellKey]) -> list[Any]:
    rows: list[Any] = []
    for chunk in _chunks(sorted(cells, key=repr), _READ_CHUNK):
        parts = []
        for _, _, keyset, *key in chunk:
            conditions = [Segment.width == "all", Segment.keyset == keyset]
            for name, value in zip(KEY_COLUMNS, key, strict=True):
                column = getattr(Segment, name)
                conditions.append(column.is_(None) if value is None else column == value)
            parts.append(_segment_select().where(*conditions))
        rows += session.execute(parts[0] if len(parts) == 1 else union_all(*parts)).all()
    return rows


def _fold_segments(rows: list[Any]) -> dict[CellKey, Run]:
    per_cell: dict[CellKey, list[Any]] = defaultdict(list)
    for row in rows:
        per_cell[(row.width, row.bucket, row.keyset, *(getattr(row, n) for n in KEY_COLUMNS))].append(row)
    return {
        cell: chain(Run.of_columns(row) for row in sorted(segments, key=lambda row: row.close_day))
        for cell, segments in per_cell.items()
    }


def _write_runs(session: Session, runs: dict[CellKey, Run]) -> None:
    items = list(runs.items())
    for chunk in _chunks(items, _WRITE_CHUNK):
        columns: dict[str, list[Any]] = defaultdict(list)
        for (width, bucket, keyset, *key), run in chunk:
            columns["width"].append(width)
            columns["bucket"].append(bucket)
            columns["keyset"].append(keyset)
            for name, value in zip(KEY_COLUMNS, key, strict=True):
                columns[name].append(value)
            for name, value in zip(("n", "net", "high", "low", "fall"), _run_values(run), strict=True):
                columns[name].append(value)
        session.execute(_WRITE_RUNS, dict(columns))


def _run_values(run: Run) -> tuple:
    return (run.n, run.net, run.high, run.low, run.fall)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
