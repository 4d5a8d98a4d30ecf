"""The statistics of `GET /api/v1/trades/stats`, from what is kept (the README's design).

For each level (the whole, each group, each bucket, each group's buckets):

* the sums come from the kept buckets: the one bucket of all time without `since` or
  `until`, else the whole days inside the range plus the trades of its ragged edges,
  read from trade_history by opening time, in one statement ordered by PostgreSQL;
* the drawdown is the kept run of the booked trades that closed before the watermark,
  then the ones after it (trade_closes, at most an hour or so). With `since` or `until`
  the kept part is walked close day by close day: a day whose trades all opened inside
  the range counts whole, one that only `since` cuts reads its profile, and the few
  others (the day `since` falls in, closes after `until` of trades opened before it)
  read their trades from trade_closes;
* a bucket level of a width that is kept (`1 day`, `1 week`) reads its buckets, those
  the range cuts come from `db.stats.raw`; other widths come from `db.stats.raw` whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, DateTime, Interval, cast, func, literal, select, true, union_all
from sqlalchemy.orm import Session

from db.models import TRADE_STATS_STATE, TradeClose, TradeHistory, TradeStatsBucket, TradeStatsProfile
from db.models import TradeStatsSegment as Segment
from db.stats.buckets import ALL_BUCKET, BUCKET_PATTERN, DAY, ORIGIN, WIDTHS, ceiling, floor
from db.stats.drawdown import EMPTY, Run, chain
from db.stats.measures import (
    GROUP_KEYS,
    KEY_COLUMNS,
    SUM_FIELDS,
    keyset_of,
    no_trades,
    statistics_of,
)
from db.stats.raw import sums_query, trade_statistics
from db.timescale import timescale_installed

_KEPT_WIDTHS = {("1", "day"): "day", ("1", "week"): "week"}
_FIRST_DAY = datetime(1, 1, 2, tzinfo=UTC)  # a day into year 1: in range in every time zone

Key = tuple


@dataclass(frozen=True)
class Filters:
    symbol: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model_name: str | None = None
    closed: bool | None = None

    @property
    def fixed(self) -> dict[str, str]:
        """The key columns the filters fix to one value."""
        return {
            name: value for name in ("symbol", "model_name") if (value := getattr(self, name)) is not None
        }

    @property
    def ranged(self) -> bool:
        return self.since is not None or self.until is not None

    def trade_conditions(self) -> list[Any]:
        conditions = [getattr(TradeHistory, name) == value for name, value in self.fixed.items()]
        if self.since is not None:
            conditions.append(TradeHistory.timestamp >= self.since)
        if self.until is not None:
            conditions.append(TradeHistory.timestamp < self.until)
        if self.closed is not None:
            conditions.append(TradeHistory.closed.is_(self.closed))
        return conditions


def kept_watermark(session: Session) -> datetime | None:
    """The watermark, or None while the kept statistics are not built."""
    row = session.execute(select(TRADE_STATS_STATE.c.built, TRADE_STATS_STATE.c.watermark)).first()
    return row.watermark if row is not None and row.built else None


def statistics(
    session: Session, filters: Filters, group_by: str | None = None, bucket: str | None = None
) -> dict[str, Any]:
    """The statistics of the whole; per bucket (`"buckets"`) with `bucket`; per group
    (`"groups"`, each with its `"buckets"` when `bucket` is given) with `group_by`."""
    keys = GROUP_KEYS[group_by] if group_by is not None else ()
    watermark = kept_watermark(session)
    reader = None if watermark is None else Reader(session, filters, watermark)
    width = _kept_width(bucket)
    whole = reader.level(()) if reader else _raw_level(session, filters, (), bucket)
    result = whole.get((), no_trades())
    if bucket is not None:
        per_bucket = (
            reader.bucket_level((), width)
            if reader and width
            else _raw_level(session, filters, ("bucket",), bucket)
        )
        result["buckets"] = [{"start": key[-1], **stats} for key, stats in per_bucket.items()]
    if group_by is not None:
        groups = reader.level(keys) if reader else _raw_level(session, filters, keys, bucket)
        result["groups"] = [{**dict(zip(keys, key, strict=True)), **stats} for key, stats in groups.items()]
        if bucket is not None:
            nested = (
                reader.bucket_level(keys, width)
                if reader and width
                else _raw_level(session, filters, (*keys, "bucket"), bucket)
            )
            by_group: dict[Key, list[dict[str, Any]]] = defaultdict(list)
            for key, stats in nested.items():
                by_group[key[:-1]].append({"start": key[-1], **stats})
            for group, key in zip(result["groups"], groups, strict=True):
                group["buckets"] = by_group.get(key, [])
    return result


def _kept_width(bucket: str | None) -> str | None:
    match = BUCKET_PATTERN.match(bucket or "")
    return _KEPT_WIDTHS.get(match.groups()) if match else None


def bucket_expression(bucket: str, timescale: bool):
    """The SQL bucket of a trade's opening time: TimescaleDB's time_bucket where it is used,
    else date_bin from the same origin (the same buckets)."""
    width = cast(literal(bucket), Interval)
    if timescale:
        start = func.time_bucket(width, TradeHistory.timestamp)
    else:
        start = func.date_bin(
            width, TradeHistory.timestamp, cast(literal(ORIGIN), TradeHistory.timestamp.type)
        )
    # A trade in year 1 would start its bucket before it, a date Python cannot hold.
    return func.greatest(start, cast(literal(_FIRST_DAY), TradeHistory.timestamp.type))


def _raw_level(
    session: Session, filters: Filters, level: tuple[str, ...], bucket: str | None, where: Sequence[Any] = ()
) -> dict[Key, dict[str, Any]]:
    expression = bucket_expression(bucket, timescale_installed(session)) if "bucket" in level else None
    [rows] = trade_statistics(session, [*filters.trade_conditions(), *where], [level], expression)
    return {tuple(row.pop(name) for name in level): row for row in rows}


_RUN_COLUMNS = ("booked_n", "booked_net", "booked_high", "booked_low", "booked_fall")
_CLOSE_COLUMNS = ("opened_at", "pnl", "close_day", *KEY_COLUMNS)


def _columns(table, names) -> list[Any]:
    """Plain columns: a read of hundreds of rows builds no ORM objects."""
    return [getattr(table, name) for name in names]


class Reader:
    """One read's view of the kept statistics."""

    def __init__(self, session: Session, filters: Filters, watermark: datetime):
        self.session = session
        self.filters = filters
        self.watermark = watermark
        self._hot: list[Any] | None = None

    # -- whole and groups ---------------------------------------------------------------

    def level(self, keys: tuple[str, ...]) -> dict[Key, dict[str, Any]]:
        keyset = keyset_of({*keys, *self.filters.fixed})
        sums = self.sums(keyset, keys)
        runs = self._cold_runs(keyset, keys) if self.filters.ranged else self._all_time_runs(keyset, keys)
        for close in self._hot_closes():
            key = tuple(getattr(close, name) for name in keys)
            runs[key] = runs.get(key, EMPTY).then(Run.of((close.pnl,)))
        return {
            key: statistics_of(total, runs.get(key, EMPTY), self.filters.closed)
            for key, total in sums.items()
            if self._has_trades(total)
        }

    def _has_trades(self, sums: dict[str, Any]) -> bool:
        if self.filters.closed is True:
            return sums["closed"] > 0
        if self.filters.closed is False:
            return sums["trades"] > sums["closed"]
        return sums["trades"] > 0

    def sums(self, keyset: int, keys: tuple[str, ...]) -> dict[Key, dict[str, Any]]:
        """Kept buckets, plus the trades of the ragged edges; summed and ordered in SQL."""
        bucket = TradeStatsBucket
        kept = select(
            *(getattr(bucket, name).label(name) for name in keys), *(getattr(bucket, n) for n in SUM_FIELDS)
        )
        kept = kept.where(bucket.keyset == keyset, *self.fixed(bucket))
        since, until = self.filters.since, self.filters.until
        parts = []
        if not self.filters.ranged:
            parts.append(kept.where(bucket.width == "all", bucket.bucket == ALL_BUCKET))
        else:
            first = ceiling(since, DAY) if since is not None else None
            last = floor(until, DAY) if until is not None else None
            if first is not None and last is not None and first >= last:
                parts.append(self._raw_sums(keys, since, until))  # no whole day inside
            else:
                days = kept.where(bucket.width == "day")
                if first is not None:
                    days = days.where(bucket.bucket >= first)
                    if since < first:
                        parts.append(self._raw_sums(keys, since, first))
                if last is not None:
                    days = days.where(bucket.bucket < last)
                    if last < until:
                        parts.append(self._raw_sums(keys, last, until))
                parts.append(days)
        every = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("parts")
        columns = [every.c[name] for name in keys]
        query = select(
            *columns, *(func.coalesce(func.sum(every.c[name]), 0).label(name) for name in SUM_FIELDS)
        )
        if columns:
            query = query.group_by(*columns).order_by(*(column.asc().nulls_last() for column in columns))
        return {
            tuple(row[name] for name in keys): dict(row) for row in self.session.execute(query).mappings()
        }

    def _raw_sums(self, keys: tuple[str, ...], since: datetime, until: datetime):
        trade = TradeHistory
        return sums_query([*self.fixed(trade), trade.timestamp >= since, trade.timestamp < until], keys)

    def fixed(self, table) -> list[Any]:
        return [getattr(table, name) == value for name, value in self.filters.fixed.items()]

    def _all_time_runs(self, keyset: int, keys: tuple[str, ...]) -> dict[Key, Run]:
        bucket = TradeStatsBucket
        rows = self.session.execute(
            select(*_columns(bucket, (*KEY_COLUMNS, *_RUN_COLUMNS))).where(
                bucket.keyset == keyset,
                bucket.width == "all",
                bucket.bucket == ALL_BUCKET,
                *self.fixed(bucket),
            )
        )
        return {tuple(getattr(row, name) for name in keys): Run.of_columns(row) for row in rows}

    def _cold_runs(self, keyset: int, keys: tuple[str, ...]) -> dict[Key, Run]:
        """The kept drawdown of the trades opened in [since, until), close day by close day."""
        since, until = self.filters.since, self.filters.until
        names = (*KEY_COLUMNS, "close_day", "first_opened", "last_opened", *_RUN_COLUMNS)
        query = select(*_columns(Segment, names)).where(
            Segment.keyset == keyset,
            Segment.width == "all",
            Segment.bucket == ALL_BUCKET,
            *self.fixed(Segment),
        )
        if since is not None:
            query = query.where(Segment.last_opened >= since)
        if until is not None:
            query = query.where(Segment.first_opened < until)
        pieces: dict[Key, dict[datetime, Run]] = defaultdict(dict)
        profiles: dict[Key, list[datetime]] = defaultdict(list)
        raw_days: set[datetime] = set()
        full_keys: dict[Key, tuple] = {}
        for segment in self.session.execute(query):
            key = tuple(getattr(segment, name) for name in keys)
            full_keys[key] = tuple(getattr(segment, name) for name in KEY_COLUMNS)
            day = segment.close_day
            inside_since = since is None or segment.first_opened >= since
            inside_until = until is None or segment.last_opened < until
            if inside_since and inside_until:
                pieces[key][day] = Run.of_columns(segment)
            elif inside_until and floor(since, DAY) != day:
                profiles[key].append(day)
            else:
                raw_days.add(day)
        for key, days in profiles.items():
            for day, run in self._profile_runs(keyset, full_keys[key], days).items():
                pieces[key][day] = run
        if raw_days:
            for (key, day), closes in self._closes_of_days(keys, sorted(raw_days)).items():
                pieces[key][day] = Run.of(close.pnl for close in closes)
        return {key: chain(run for _, run in sorted(days.items())) for key, days in pieces.items()}

    def _profile_runs(self, keyset: int, key: tuple, days: list[datetime]) -> dict[datetime, Run]:
        """Per close day, the run of the key's trades opened at or after `since`."""
        profile = TradeStatsProfile
        conditions = [profile.keyset == keyset]
        for name, value in zip(KEY_COLUMNS, key, strict=True):
            column = getattr(profile, name)
            conditions.append(column.is_(None) if value is None else column == value)
        wanted = (
            func.unnest(cast(days, ARRAY(DateTime(timezone=True)))).table_valued("close_day").render_derived()
        )
        first = (
            select(profile)
            .where(
                *conditions,
                profile.close_day == wanted.c.close_day,
                profile.opened_from >= self.filters.since,
            )
            .order_by(profile.opened_from)
            .limit(1)
            .lateral("first")
        )
        rows = self.session.execute(select(first).select_from(wanted).join(first, true()))
        return {row.close_day: Run.of_columns(row) for row in rows}

    def _closes_of_days(
        self, keys: tuple[str, ...], days: list[datetime]
    ) -> dict[tuple[Key, datetime], list[Any]]:
        """The booked trades of these close days (before the watermark) opened in the range."""
        close = TradeClose
        query = select(*_columns(close, _CLOSE_COLUMNS)).where(
            close.close_day.in_(days),
            close.closed_at < self.watermark,
            *self.fixed(close),
            *self.opened(close),
        )
        found: dict[tuple[Key, datetime], list[Any]] = defaultdict(list)
        for row in self.session.execute(query.order_by(close.close_day, close.closed_at, close.trade_id)):
            found[(tuple(getattr(row, name) for name in keys), row.close_day)].append(row)
        return found

    def opened(self, close) -> list[Any]:
        conditions = []
        if self.filters.since is not None:
            conditions.append(close.opened_at >= self.filters.since)
        if self.filters.until is not None:
            conditions.append(close.opened_at < self.filters.until)
        return conditions

    def _hot_closes(self) -> list[Any]:
        """The booked trades closed since the watermark, opened in the range, in close order."""
        if self._hot is None:
            close = TradeClose
            recent = close.closed_at >= self.watermark  # by trade_closes' key: its last hour or so
            query = select(*_columns(close, _CLOSE_COLUMNS)).where(
                recent, *self.fixed(close), *self.opened(close)
            )
            self._hot = list(self.session.execute(query.order_by(close.closed_at, close.trade_id)))
        return self._hot

    # -- buckets --------------------------------------------------------------------------

    def bucket_level(self, keys: tuple[str, ...], width: str) -> dict[Key, dict[str, Any]]:
        """Per key and bucket of `width` ('day' or 'week'): kept buckets inside the range,
        the ones the range cuts from the trades."""
        span = WIDTHS[width]
        since, until = self.filters.since, self.filters.until
        first = ceiling(since, span) if since is not None else None
        last = floor(until, span) if until is not None else None
        keyset = keyset_of({*keys, *self.filters.fixed})
        level = (*keys, "bucket")
        bucket_text = "1 day" if width == "day" else "1 week"
        found: dict[Key, dict[str, Any]] = {}
        if first is not None and last is not None and first >= last:
            return _raw_level(self.session, self.filters, level, bucket_text)
        if first is not None and since < first:
            found.update(
                _raw_level(self.session, self.filters, level, bucket_text, [TradeHistory.timestamp < first])
            )
        kept = self._kept_buckets(keyset, keys, width, first, last)
        for close in self._hot_closes():
            opened = close.opened_at
            if (first is None or opened >= first) and (last is None or opened < last):
                key = (*(getattr(close, name) for name in keys), floor(opened, span))
                if key in kept:
                    sums, run = kept[key]
                    kept[key] = (sums, run.then(Run.of((close.pnl,))))
        for key, (sums, run) in kept.items():
            if self._has_trades(sums):
                found[key] = statistics_of(sums, run, self.filters.closed)
        if last is not None and last < until:
            found.update(
                _raw_level(self.session, self.filters, level, bucket_text, [TradeHistory.timestamp >= last])
            )
        # By start; the groups' order is the group level's (statistics() files them there).
        return dict(sorted(found.items(), key=lambda item: item[0][-1]))

    def _kept_buckets(
        self, keyset: int, keys: tuple[str, ...], width: str, first: datetime | None, last: datetime | None
    ) -> dict[Key, tuple[dict[str, Any], Run]]:
        bucket = TradeStatsBucket
        names = (*KEY_COLUMNS, "bucket", *SUM_FIELDS, *_RUN_COLUMNS)
        query = select(*_columns(bucket, names)).where(
            bucket.keyset == keyset, bucket.width == width, *self.fixed(bucket)
        )
        if first is not None:
            query = query.where(bucket.bucket >= first)
        if last is not None:
            query = query.where(bucket.bucket < last)
        kept = {}
        for row in self.session.execute(query).mappings():
            key = (*(row[name] for name in keys), row["bucket"])
            kept[key] = ({name: row[name] for name in SUM_FIELDS}, Run(*(row[name] for name in _RUN_COLUMNS)))
        return kept
