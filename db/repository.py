"""All SQL of the trade journal (the statistics' and equity curves' queries are built in `db.stats`).

Writes go through `TradeRepository.write`, one transaction per batch of entries:

* every trade_id in the batch is locked (transaction-scoped advisory locks, taken in a
  fixed order so concurrent batches cannot deadlock), which keeps `trade_id` unique even
  though the table's key is `(trade_id, timestamp)`;
* a record already stored with the same opening fields is a duplicate and a no-op; one
  with different opening fields is a conflict, reported and not written;
* an update for a trade not yet recorded is parked in `trade_pending_updates` and applied
  in the same transaction that later inserts the trade;
* prediction log entries are inserted first (`db.prediction_log`), so that a trade of the
  same batch finds the model version of its prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db import prediction_log, stats
from db.entries import Entry, PredictionEntry, RecordEntry, UpdateEntry
from db.jsonb import json_text
from db.models import PendingTradeUpdate, TradeHistory
from db.record import LINEAGE_FIELDS, OPENING_FIELDS, UPDATE_FIELDS, TradeRecord, TradeUpdate
from db.stats import GROUP_KEYS
from db.stats.buckets import BUCKET_PATTERN
from db.timescale import LIFT_DECOMPRESSION_LIMIT

MAX_LIST_LIMIT = 1000
# The list looks back this far first, then further: on TimescaleDB a query without a time
# bound plans every chunk of the hypertable (years of them; 13 ms of planning for two years
# with the columnstore), one with a bound plans only the chunks it can touch. The newest
# trades of an active journal are in the first window.
_LIST_WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=90))
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LOCK_NAMESPACE = 0x7472  # "tr": keeps our advisory locks apart from other users'

# A batch's updates of trades opened on one day in one statement, planned once (on a
# hypertable, planning a statement costs more the more chunks it has), each trade's row
# found by its key; a field its update does not set keeps its value (`sets`, a bit per
# UPDATE_FIELDS). The day's range of opening times, as constants, lets TimescaleDB leave
# every other chunk out while planning: a statement that named them all would make it
# check each compressed one's batches for rows to change.
_APPLY_UPDATES = text(
    """
    UPDATE trade_history AS t SET
        exit_price = CASE WHEN u.sets & 1 <> 0 THEN u.exit_price ELSE t.exit_price END,
        realized_pnl = CASE WHEN u.sets & 2 <> 0 THEN u.realized_pnl ELSE t.realized_pnl END,
        pnl_pct = CASE WHEN u.sets & 4 <> 0 THEN u.pnl_pct ELSE t.pnl_pct END,
        fees = CASE WHEN u.sets & 8 <> 0 THEN u.fees ELSE t.fees END,
        won = CASE WHEN u.sets & 16 <> 0 THEN u.won ELSE t.won END,
        closed = CASE WHEN u.sets & 32 <> 0 THEN u.closed ELSE t.closed END,
        close_timestamp = CASE WHEN u.sets & 64 <> 0 THEN u.close_timestamp ELSE t.close_timestamp END,
        update_stamps = u.update_stamps
    FROM unnest(
        CAST(:trade_id AS varchar[]), CAST(:opened AS timestamptz[]), CAST(:sets AS integer[]),
        CAST(:exit_price AS float8[]), CAST(:realized_pnl AS float8[]), CAST(:pnl_pct AS float8[]),
        CAST(:fees AS float8[]), CAST(:won AS boolean[]), CAST(:closed AS boolean[]),
        CAST(:close_timestamp AS timestamptz[]), CAST(:update_stamps AS jsonb[])
    ) AS u(trade_id, opened, sets, exit_price, realized_pnl, pnl_pct, fees, won, closed, close_timestamp,
           update_stamps)
    WHERE t.trade_id = u.trade_id AND t."timestamp" = u.opened
      AND t."timestamp" BETWEEN :first_opened AND :last_opened
      AND t.trade_id = ANY(CAST(:trade_id AS varchar[]))
    """
)
# The bits above, in this order.
assert UPDATE_FIELDS == ("exit_price", "realized_pnl", "pnl_pct", "fees", "won", "closed", "close_timestamp")
# The opening times trade_ids holds under these trade_ids' hashes (migration 006).
_OPENING_TIMES = text(
    'SELECT DISTINCT "timestamp" FROM trade_ids'
    " WHERE trade_key = ANY(ARRAY(SELECT hashtextextended(trade_id, 0)"
    " FROM unnest(CAST(:trade_ids AS text[])) AS trade_id))"
)
_LOCK_TRADE_IDS = text(
    "SELECT pg_advisory_xact_lock(:namespace, key) FROM ("
    " SELECT DISTINCT hashtext(trade_id) AS key"
    " FROM unnest(CAST(:trade_ids AS text[])) AS trade_id ORDER BY key"
    ") AS keys"
)


@dataclass
class Conflict:
    entry: RecordEntry
    stored: dict[str, Any]

    @property
    def record(self) -> TradeRecord:
        return self.entry.record

    def differing_fields(self) -> list[str]:
        mine = self.record.opening_fields()
        return [name for name in OPENING_FIELDS if mine[name] != self.stored[name]]


@dataclass
class WriteOutcome:
    inserted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    updated: int = 0
    stale: int = 0  # updates older than what each of their fields already holds
    pending: int = 0
    predictions_logged: int = 0
    predictions_repeated: int = 0  # logged before (a retry, a replay)
    trades_linked: int = 0  # trades given their prediction's model version


class TradeRepository:
    """The journal's reads and writes on one session. Reads of statistics first fold what
    waits when it is older than `stats_staleness_s` (None: they read what is kept)."""

    def __init__(self, session: Session, stats_staleness_s: float | None = None):
        self.session = session
        self.stats_staleness_s = stats_staleness_s

    # -- writes -------------------------------------------------------------------

    def write(self, entries: Sequence[Entry]) -> WriteOutcome:
        """Apply the entries (records before updates, updates in order) and commit."""
        try:
            outcome = self._write(entries)
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise
        return outcome

    def _write(self, entries: Sequence[Entry]) -> WriteOutcome:
        outcome = WriteOutcome()
        predictions = [entry for entry in entries if isinstance(entry, PredictionEntry)]
        if predictions:
            inserted, linked = prediction_log.log_entries(self.session, predictions)
            outcome.predictions_logged = inserted
            outcome.predictions_repeated = len(predictions) - inserted
            outcome.trades_linked = linked
        entries = [entry for entry in entries if not isinstance(entry, PredictionEntry)]
        if not entries:
            return outcome
        trade_ids = sorted({entry.trade_id for entry in entries})
        self.session.execute(_LOCK_TRADE_IDS, {"namespace": _LOCK_NAMESPACE, "trade_ids": trade_ids})
        stored, stamps = self._stored_of(trade_ids)

        new_rows: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if isinstance(entry, RecordEntry):
                self._admit_record(entry, stored, new_rows, outcome)
        for trade_id in new_rows:
            stamps[trade_id] = {}

        updates = [entry for entry in entries if isinstance(entry, UpdateEntry)]
        changed: dict[str, dict[str, Any]] = {}
        parked = []
        for entry in [*self._take_pending(list(new_rows)), *updates]:
            if entry.trade_id in new_rows:
                target = new_rows[entry.trade_id]
            elif entry.trade_id in stored:
                target = changed.setdefault(entry.trade_id, {})
            else:
                parked.append({"trade_id": entry.trade_id, "updates": entry.update.to_dict()})
                continue
            if not _merge_newest(target, stamps[entry.trade_id], entry.update):
                outcome.stale += 1

        if new_rows:
            self._link_to_predictions(new_rows, outcome)
            for trade_id, row in new_rows.items():
                row["update_stamps"] = stamps[trade_id] or None
            # The locks above keep out a second row for a trade; the conflict target is
            # named all the same, so that on a compressed chunk TimescaleDB checks it
            # with its bloom filters instead of decompressing batches.
            statement = pg_insert(TradeHistory.__table__).on_conflict_do_nothing(
                index_elements=["trade_id", "timestamp"]
            )
            self.session.execute(statement, list(new_rows.values()))
        changed = {trade_id: values for trade_id, values in changed.items() if values}
        by_day: dict[Any, dict[str, dict[str, Any]]] = {}
        for trade_id, values in changed.items():
            by_day.setdefault(stored[trade_id]["timestamp"].date(), {})[trade_id] = values
        if by_day:
            self.session.execute(LIFT_DECOMPRESSION_LIMIT)  # late closes of old, compressed trades
        for same_day in by_day.values():
            self.session.execute(_APPLY_UPDATES, _update_arrays(same_day, stored, stamps))
        if parked:
            self.session.execute(insert(PendingTradeUpdate), parked)

        outcome.inserted = list(new_rows)
        outcome.updated = len(changed)
        outcome.pending = len(parked)
        return outcome

    def _admit_record(
        self,
        entry: RecordEntry,
        stored: dict[str, dict[str, Any]],
        new_rows: dict[str, dict[str, Any]],
        outcome: WriteOutcome,
    ) -> None:
        record = entry.record
        known = stored.get(record.trade_id)
        if known is None and record.trade_id in new_rows:
            known = {name: new_rows[record.trade_id][name] for name in OPENING_FIELDS}
        if known is None:
            new_rows[record.trade_id] = _row_of(record)
        elif record.opening_fields() == known:
            outcome.duplicates.append(record.trade_id)
        else:
            outcome.conflicts.append(Conflict(entry, known))

    def _link_to_predictions(self, new_rows: dict[str, dict[str, Any]], outcome: WriteOutcome) -> None:
        """Give new trades that name a prediction, but no model, that prediction's model
        version; a prediction not logged yet fills it in when it is (`db.prediction_log`)."""
        named = [row["prediction_id"] for row in new_rows.values() if row["prediction_id"]]
        if not named:
            return
        # Every named prediction, not only those waiting: the kept comparison's trigger on
        # the insert takes the same locks (migration 008), and one sorted statement taking
        # them all first keeps one lock order against the log's writers.
        prediction_log.lock_predictions(self.session, named)
        waiting = [row for row in new_rows.values() if row["prediction_id"] and row["model_name"] is None]
        if not waiting:
            return
        models = prediction_log.models_of(self.session, [row["prediction_id"] for row in waiting])
        for row in waiting:
            if (model := models.get(row["prediction_id"])) is not None:
                row["model_name"], row["model_version"] = model
                outcome.trades_linked += 1

    def _stored_of(self, trade_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
        """The stored trades' opening fields, and the order of each field's last change."""
        columns = [getattr(TradeHistory, name) for name in OPENING_FIELDS]
        opening, stamps = {}, {}
        for row in self._rows_of(trade_ids, TradeHistory.trade_id, TradeHistory.update_stamps, *columns):
            opening[row.trade_id] = {name: getattr(row, name) for name in OPENING_FIELDS}
            stamps[row.trade_id] = dict(row.update_stamps or {})
        return opening, stamps

    def _rows_of(self, trade_ids: Sequence[str], *columns) -> list[Any]:
        """trade_history's rows of these trades: their opening times from trade_ids, then
        each row in its own chunk (the times as constants, which TimescaleDB excludes
        chunks by), never a search of every chunk by trade_id. Every row found is one of
        these trades' own: a time another trade_id's hash brought matches no row of theirs."""
        opened = self.session.scalars(_OPENING_TIMES, {"trade_ids": list(trade_ids)}).all()
        if not opened:
            return []
        return self.session.execute(
            select(*columns).where(
                TradeHistory.trade_id.in_(trade_ids), TradeHistory.timestamp.in_(set(opened))
            )
        ).all()

    def _take_pending(self, trade_ids: list[str]) -> list[UpdateEntry]:
        if not trade_ids:
            return []
        rows = self.session.execute(
            delete(PendingTradeUpdate)
            .where(PendingTradeUpdate.trade_id.in_(trade_ids))
            .returning(PendingTradeUpdate.id, PendingTradeUpdate.trade_id, PendingTradeUpdate.updates)
        ).all()
        rows.sort(key=lambda row: row.id)
        return [UpdateEntry(row.trade_id, TradeUpdate.from_dict(row.updates)) for row in rows]

    # -- reads --------------------------------------------------------------------

    def opening_fields_of(self, trade_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The opening fields of those of `trade_ids` that are stored, by trade_id (compare
        a record's with `Conflict(entry, stored).differing_fields()`)."""
        return self._stored_of(list(trade_ids))[0] if trade_ids else {}

    def get(self, trade_id: str) -> TradeHistory | None:
        located = self._rows_of([trade_id], TradeHistory)
        return located[0].TradeHistory if located else None

    def list(
        self,
        *,
        symbol: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        closed: bool | None = None,
        limit: int = 100,
    ) -> list[TradeHistory]:
        """Trades newest first, at most `limit` (capped at MAX_LIST_LIMIT)."""
        limit = min(limit, MAX_LIST_LIMIT)
        query = select(TradeHistory).where(*_conditions(symbol, since, until, closed))
        query = query.order_by(TradeHistory.timestamp.desc(), TradeHistory.trade_id).limit(limit)
        latest = min(until, datetime.now(UTC)) if until is not None else datetime.now(UTC)
        for window in _LIST_WINDOWS:
            if latest - _EARLIEST <= window:
                break  # a window reaching before the year 1: the whole query is the page
            start = latest - window
            if since is not None and since >= start:
                break  # the caller's own bound is the narrower one
            # Every trade outside the window is older than every trade in it: a full page
            # from the window is the page.
            page = list(self.session.scalars(query.where(TradeHistory.timestamp >= start)))
            if len(page) == limit:
                return page
        return list(self.session.scalars(query))

    def stats(
        self,
        *,
        symbol: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        model_name: str | None = None,
        closed: bool | None = None,
        group_by: str | None = None,
        bucket: str | None = None,
    ) -> dict[str, Any]:
        """The statistics (`db.stats.STAT_FIELDS`) of the matching trades: of the whole;
        per time bucket (`"buckets"`) when `bucket` is given; per group (`"groups"`, each
        with its key fields, and its own `"buckets"` with `bucket`) with `group_by` (one of
        GROUP_KEYS). Groups come sorted by key, nulls (trades without a model) last."""
        if group_by is not None and group_by not in GROUP_KEYS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_KEYS)}")
        if bucket is not None and not BUCKET_PATTERN.match(bucket):
            raise ValueError("bucket must look like '1 day', '15 minutes', '4 hours' or '1 week'")
        self._fresh()
        filters = stats.Filters(symbol, since, until, model_name, closed)
        return stats.statistics(self.session, filters, group_by, bucket)

    def stats_by_version(self, model_name: str) -> dict[str | None, dict[str, Any]]:
        """The statistics of the trades of `model_name`, per `model_version` (None: trades
        without one), sorted by version, nulls last. A version without trades is absent."""
        self._fresh()
        by_version = stats.statistics(self.session, stats.Filters(model_name=model_name), "model_version")
        groups = by_version["groups"]
        return {group.pop("model_version"): _without_keys(group) for group in groups}

    def equity_curves(
        self, model_name: str, limit_per_version: int = 500
    ) -> dict[str | None, list[dict[str, Any]]]:
        """Per `model_version` of the trades of `model_name`, the cumulative realized PnL
        (`{"at", "equity"}`) after each of its closed trades, oldest first: the last
        `limit_per_version` points (at most MAX_LIST_LIMIT). A version without a closed
        trade with PnL is absent."""
        self._fresh()
        return stats.equity_curves(self.session, model_name, min(limit_per_version, MAX_LIST_LIMIT))

    def equity_curve(
        self,
        *,
        symbol: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = MAX_LIST_LIMIT,
    ) -> list[dict[str, Any]]:
        """Cumulative realized PnL after each closed trade, oldest first: the last `limit` points."""
        self._fresh()
        filters = stats.Filters(symbol=symbol, since=since, until=until)
        return stats.equity_curve(self.session, filters, min(limit, MAX_LIST_LIMIT))

    def _fresh(self) -> None:
        """Fold what waits when the oldest change is older than the staleness allowed."""
        if self.stats_staleness_s is not None:
            stats.catch_up(self.session, self.stats_staleness_s)


def _without_keys(group: dict[str, Any]) -> dict[str, Any]:
    group.pop("model_name", None)
    return group


def _conditions(symbol, since, until, closed) -> list[Any]:
    conditions = []
    if symbol is not None:
        conditions.append(TradeHistory.symbol == symbol)
    if since is not None:
        conditions.append(TradeHistory.timestamp >= since)
    if until is not None:
        conditions.append(TradeHistory.timestamp < until)
    if closed is not None:
        conditions.append(TradeHistory.closed.is_(closed))
    return conditions


def _row_of(record: TradeRecord) -> dict[str, Any]:
    fields = (*OPENING_FIELDS, "trade_id", *UPDATE_FIELDS, *LINEAGE_FIELDS)
    return {name: getattr(record, name) for name in fields}


def _update_arrays(
    changed: dict[str, dict[str, Any]], stored: dict[str, dict[str, Any]], stamps: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """_APPLY_UPDATES' parameters: a column of values per field, and which fields each trade sets."""
    arrays: dict[str, list[Any]] = {name: [] for name in ("trade_id", "opened", "sets", *UPDATE_FIELDS)}
    arrays["update_stamps"] = []
    for trade_id, values in changed.items():
        arrays["trade_id"].append(trade_id)
        arrays["opened"].append(stored[trade_id]["timestamp"])
        arrays["sets"].append(sum(1 << bit for bit, name in enumerate(UPDATE_FIELDS) if name in values))
        for name in UPDATE_FIELDS:
            arrays[name].append(values.get(name))
        arrays["update_stamps"].append(json_text(stamps[trade_id]))
    return {**arrays, "first_opened": min(arrays["opened"]), "last_opened": max(arrays["opened"])}


def _merge_newest(target: dict[str, Any], stamps: dict[str, int], update_: TradeUpdate) -> bool:
    """Apply the fields of `update_` that are at least as new as what each one holds;
    False when every field already holds a newer change.

    A field a record set has no stamp and yields to any update; two unstamped updates
    apply in arrival order.
    """
    order = update_.order
    applied = False
    for name, value in update_values(update_).items():
        if order >= stamps.get(name, -1):
            target[name] = value
            stamps[name] = order
            applied = True
    return applied


def update_values(update_: TradeUpdate) -> dict[str, Any]:
    return {name: value for name in UPDATE_FIELDS if (value := getattr(update_, name)) is not None}


def trade_as_dict(trade: TradeHistory) -> dict[str, Any]:
    """A stored trade as JSON-ready fields (timestamps in ISO-8601, UTC)."""
    fields = {}
    for name in ("trade_id", *OPENING_FIELDS, *UPDATE_FIELDS, *LINEAGE_FIELDS):
        value = getattr(trade, name)
        fields[name] = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    return fields
