"""db.compare's kept sums: an experiment's shadows logged the way workers log them
(db.prediction_log), its trades written, changed and removed around them in any order, and
every figure read from the kept rows equal to the scan's and to the independent computation."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import RecordEntry, TradeRecord, TradeRepository
from db.compare import compare, fold_all, record_experiment
from db.prediction_log import log_predictions
from tests.support.compare_journal import (
    CHALLENGER,
    CHAMPION,
    MODEL,
    OLD_CHAMPION,
    OTHER_CHALLENGER,
    SINCE,
    Journal,
    Logged,
    assert_figures,
    expected,
    mixed_journal,
    scored_journal,
)

NEVER = datetime(2999, 1, 1, tzinfo=SINCE.tzinfo)  # an `until` no experiment has: a scan


def log_row(entry: Logged) -> dict:
    row = {
        "prediction_id": entry.prediction_id,
        "created_at": entry.created_at,
        "model_name": entry.model_name,
        "model_version": entry.model_version,
        "model_type": "xgboost",
        "rows": len(entry.values),
        "predictions": entry.values,
        "latency_ms": 1.0,
        "role": entry.role,
        "shadow_of": entry.shadow_of,
    }
    if entry.champion is not None:
        row["champion_version"] = entry.champion.model_version
        row["champion_predictions"] = entry.champion.values
    return row


def write_as_workers(engine, journal: Journal, experiments, trades_first: float = 0.5, seed: int = 1):
    """The experiments set, a share of the trades written before their predictions are
    logged (in batches, as the log's writer does), the rest after."""
    Journal().write(engine)
    rng = random.Random(seed)
    early = [trade for trade in journal.trades if rng.random() < trades_first]
    late = [trade for trade in journal.trades if trade not in early]
    with Session(engine) as session:
        for challenger, since, threshold in experiments:
            record_experiment(session, MODEL, challenger, since, threshold)
        session.commit()
    with engine.begin() as connection:
        Journal.write_trades(connection, early)
    entries = sorted(journal.log, key=lambda entry: entry.created_at)
    with Session(engine) as session:
        for start in range(0, len(entries), 97):
            log_predictions(session, [log_row(entry) for entry in entries[start : start + 97]])
            session.commit()
    with engine.begin() as connection:
        Journal.write_trades(connection, late)


def run(engine, **given):
    with Session(engine) as session:
        return compare(session, MODEL, given.pop("challenger", CHALLENGER), **given)


def assert_kept_equals_scan_and_loops(engine, journal: Journal, since, threshold=0.5, **more):
    kept = run(engine, since=since, threshold=threshold, **more)
    assert kept["source"] == "kept"
    scanned = run(engine, since=since, until=NEVER, threshold=threshold, **more)
    assert scanned["source"] == "scan"
    figures = expected(
        journal, more.get("challenger", CHALLENGER), since, None, threshold, more.get("champion")
    )
    assert_figures(kept, figures)
    assert_figures(scanned, figures)
    return kept


@pytest.fixture
def mixed(engine):
    journal = mixed_journal(seed=21, worker_like=True)
    write_as_workers(
        engine, journal, [(CHALLENGER, SINCE, 0.5), (OTHER_CHALLENGER, SINCE - timedelta(hours=1), 0.5)]
    )
    return journal


def test_an_experiment_reads_its_kept_sums_which_equal_the_scan(engine, mixed):
    answer = assert_kept_equals_scan_and_loops(engine, mixed, SINCE)
    assert answer["pairs"] > 300 and answer["trades"] > 30 and answer["brier_diff_ci"] is not None
    assert answer["taken"] > 0 and answer["declined"] > 0
    assert_kept_equals_scan_and_loops(engine, mixed, SINCE, champion=OLD_CHAMPION)
    assert_kept_equals_scan_and_loops(engine, mixed, SINCE, champion=CHAMPION)
    other = assert_kept_equals_scan_and_loops(
        engine, mixed, SINCE - timedelta(hours=1), challenger=OTHER_CHALLENGER
    )
    assert other["pairs"] > 0


def test_a_window_that_is_no_experiments_is_scanned(engine, mixed):
    assert run(engine, since=SINCE + timedelta(seconds=1))["source"] == "scan"
    assert run(engine, since=SINCE, threshold=0.3)["source"] == "scan"  # kept at 0.5
    assert run(engine, since=SINCE, until=SINCE + timedelta(days=2))["source"] == "scan"


def test_trades_closed_changed_and_removed_afterwards_are_folded(engine, mixed):
    rng = random.Random(4)
    linked = [trade for trade in mixed.trades if trade.prediction_id is not None]
    changes = []
    for trade in rng.sample(linked, 60):
        if not trade.closed:
            trade.closed, trade.pnl = True, round(rng.gauss(0, 10), 2)
            trade.won = trade.pnl > 0
        else:
            trade.pnl = None if trade.pnl is not None and rng.random() < 0.2 else round(rng.gauss(0, 10), 2)
            trade.won = None if trade.pnl is None else trade.pnl > 0
        changes.append(trade)
    removed = rng.sample([trade for trade in linked if trade not in changes], 15)
    with engine.begin() as connection:
        for trade in changes:
            connection.execute(
                text(
                    "UPDATE trade_history SET closed = :closed, won = :won, realized_pnl = :pnl"
                    " WHERE trade_id = :trade_id"
                ),
                {"closed": trade.closed, "won": trade.won, "pnl": trade.pnl, "trade_id": trade.trade_id},
            )
        connection.execute(
            text("DELETE FROM trade_history WHERE trade_id = ANY(:ids)"),
            {"ids": [trade.trade_id for trade in removed]},
        )
    for trade in removed:
        mixed.trades.remove(trade)
    assert_kept_equals_scan_and_loops(engine, mixed, SINCE)
    # Folding again changes nothing: every trade is held once.
    with Session(engine) as session:
        assert fold_all(session) == 0
    assert_kept_equals_scan_and_loops(engine, mixed, SINCE)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE trade_history"))
    mixed.trades.clear()
    answer = assert_kept_equals_scan_and_loops(engine, mixed, SINCE)
    assert answer["trades"] == 0 and answer["pairs"] > 300


def test_a_later_experiment_of_the_same_challenger_adds_to_the_earlier(engine):
    journal = scored_journal(240, challenger_noise=0.3, champion_noise=0.9)
    later = SINCE + timedelta(minutes=121)
    write_as_workers(engine, journal, [(CHALLENGER, SINCE, 0.5), (CHALLENGER, later, 0.5)], trades_first=0.3)
    whole = assert_kept_equals_scan_and_loops(engine, journal, SINCE)
    assert whole["n"] == 240 and whole["verdict"] == "challenger better"
    part = assert_kept_equals_scan_and_loops(engine, journal, later)
    assert part["n"] == 240 - 120


def test_replayed_log_batches_count_once(engine):
    journal = scored_journal(80, challenger_noise=0.4, champion_noise=0.6)
    write_as_workers(engine, journal, [(CHALLENGER, SINCE, 0.5)])
    with Session(engine) as session:  # the spool's replay of what was written: nothing new
        log_predictions(session, [log_row(entry) for entry in journal.log])
        session.commit()
    answer = assert_kept_equals_scan_and_loops(engine, journal, SINCE)
    assert answer["pairs"] == 80 and answer["trades"] == 80


def test_trades_and_their_shadows_written_at_once_miss_each_other_never(engine):
    """Four writers at once, in small transactions: two log champions and shadows as the
    log's writer does, two record the champions' trades as the journal does. Whichever of
    a trade and its shadow commits second sees the other: every trade is kept, once."""
    journal = scored_journal(400, challenger_noise=0.4, champion_noise=0.6, seed=8)
    Journal().write(engine)
    with Session(engine) as session:
        record_experiment(session, MODEL, CHALLENGER, SINCE, 0.5)
        session.commit()
    entries = sorted(journal.log, key=lambda entry: entry.created_at)
    records = [
        TradeRecord.from_dict(
            {
                "trade_id": trade.trade_id,
                "symbol": "BTC/USDT",
                "side": "buy",
                "amount": 1.0,
                "entry_price": 100.0,
                "timestamp": trade.opened,
                "closed": True,
                "realized_pnl": trade.pnl,
                "won": trade.won,
                "close_timestamp": trade.opened + timedelta(minutes=5),
                "prediction_id": trade.prediction_id,
            }
        )
        for trade in journal.trades
    ]
    failures: list[BaseException] = []

    def write(batches) -> None:
        try:
            with Session(engine) as session:
                for write_batch in batches:
                    write_batch(session)
                    session.commit()
        except BaseException as exc:
            failures.append(exc)

    def log_batch(chunk):
        return lambda session: log_predictions(session, [log_row(entry) for entry in chunk])

    def trade_batch(chunk):
        return lambda session: TradeRepository(session).write([RecordEntry(record) for record in chunk])

    # Each writer takes every other chunk, in the same order: the two sides meet all along.
    log_chunks = [entries[start : start + 10] for start in range(0, len(entries), 10)]
    trade_chunks = [records[start : start + 5] for start in range(0, len(records), 5)]
    writers = [
        threading.Thread(target=write, args=([log_batch(chunk) for chunk in log_chunks[0::2]],)),
        threading.Thread(target=write, args=([log_batch(chunk) for chunk in log_chunks[1::2]],)),
        threading.Thread(target=write, args=([trade_batch(chunk) for chunk in trade_chunks[0::2]],)),
        threading.Thread(target=write, args=([trade_batch(chunk) for chunk in trade_chunks[1::2]],)),
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert failures == []
    answer = assert_kept_equals_scan_and_loops(engine, journal, SINCE)
    assert answer["pairs"] == 400 and answer["trades"] == 400 and answer["n"] == 400
