"""The drawdown state of one close day, computed from its booked trades in close order.

For every keyset and key, a day's closes give:

* a segment per opening bucket (`width` 'day' and 'week') and one for any opening time
  ('all', with the range of opening times it holds): a bucket's drawdown is its
  segments one close day after the other;
* the profile of the 'all' segment: the run of the trades opened at or after each
  threshold (`drawdown.suffix_runs`), which is what a `since` filter reads.

Only closes before the watermark are counted; later ones are read as they are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from db.models import TradeClose, TradeStatsProfile, TradeStatsSegment
from db.stats.buckets import ALL_BUCKET, DAY, WIDTHS, floor
from db.stats.drawdown import Run, suffix_runs
from db.stats.measures import KEY_COLUMNS, KEYSETS, keyset_columns

CellKey = tuple[str, datetime, int, str | None, str | None, str | None]  # width, bucket, keyset, keys


@dataclass
class DayState:
    segments: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)


def compute_day(day: datetime, closes: Iterable[Any]) -> DayState:
    """The segments and profiles of close day `day` from its booked trades (rows with
    `opened_at`, `pnl` and the key columns), given in close order."""
    closes = list(closes)
    state = DayState()
    for keyset in KEYSETS:
        names = keyset_columns(keyset)
        by_key: dict[tuple, list[Any]] = defaultdict(list)
        for close in closes:
            by_key[tuple(getattr(close, name) if name in names else None for name in KEY_COLUMNS)].append(
                close
            )
        for key, members in by_key.items():
            keys = {"keyset": keyset, **dict(zip(KEY_COLUMNS, key, strict=True))}
            opened = [close.opened_at for close in members]
            pnls = [close.pnl for close in members]
            state.segments.append(
                {
                    **keys,
                    "width": "all",
                    "bucket": ALL_BUCKET,
                    "close_day": day,
                    "first_opened": min(opened),
                    "last_opened": max(opened),
                    **Run.of(pnls).columns(),
                }
            )
            for width, span in WIDTHS.items():
                per_bucket: dict[datetime, list[Any]] = defaultdict(list)
                for when, pnl in zip(opened, pnls, strict=True):
                    per_bucket[floor(when, span)].append((when, pnl))
                for bucket, trades in per_bucket.items():
                    state.segments.append(
                        {
                            **keys,
                            "width": width,
                            "bucket": bucket,
                            "close_day": day,
                            "first_opened": min(when for when, _ in trades),
                            "last_opened": max(when for when, _ in trades),
                            **Run.of(pnl for _, pnl in trades).columns(),
                        }
                    )
            for threshold, run in suffix_runs(opened, pnls, day, day + DAY):
                state.profiles.append({**keys, "close_day": day, "opened_from": threshold, **run.columns()})
    return state


def recompute_days(session: Session, days: Iterable[datetime], watermark: datetime) -> set[CellKey]:
    """Replace the segments and profiles of these close days with what trade_closes holds
    before the watermark; returns every bucket whose drawdown changed (to be refolded)."""
    touched: set[CellKey] = set()
    segment = TradeStatsSegment
    for day in sorted(set(days)):
        closes = session.execute(
            select(TradeClose.opened_at, TradeClose.pnl, *(getattr(TradeClose, n) for n in KEY_COLUMNS))
            .where(TradeClose.close_day == day, TradeClose.closed_at < watermark)
            .order_by(TradeClose.closed_at, TradeClose.trade_id)
        ).all()
        gone = session.execute(
            delete(segment)
            .where(segment.close_day == day)
            .returning(
                segment.width, segment.bucket, segment.keyset, *(getattr(segment, n) for n in KEY_COLUMNS)
            )
        ).all()
        session.execute(delete(TradeStatsProfile).where(TradeStatsProfile.close_day == day))
        touched.update(tuple(row) for row in gone)
        if not closes:
            continue
        state = compute_day(day, closes)
        session.execute(insert(segment), state.segments)
        session.execute(insert(TradeStatsProfile), state.profiles)
        touched.update(
            (row["width"], row["bucket"], row["keyset"], *(row[n] for n in KEY_COLUMNS))
            for row in state.segments
        )
    return touched
