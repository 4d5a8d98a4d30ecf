"""How the kept statistics stay within STATS_MAX_STALENESS_S of the journal, with beat and
without it; what a read that outlives its statement timeout answers; an existing journal
upgraded to the kept statistics; the journal's writes against compressed chunks; and the
upkeep's state in /readyz and /metrics. Real web server, workers, beat and PostgreSQL
(with TimescaleDB where the server under test has it: there the old chunks really are in
the columnstore)."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tasks.client import TradeJournal
from tests.conftest import PG_ADMIN_URL
from tests.support.processes import flask, wait_for
from tests.test_trade_stats import journal

WRITTEN = text(
    'INSERT INTO trade_history (trade_id, "timestamp", symbol, side, order_type, amount, entry_price, closed,'
    " close_timestamp, realized_pnl, pnl_pct, fees, won, model_name, model_version)"
    " VALUES (:trade_id, :timestamp, :symbol, 'buy', 'market', 1, 100, :closed, :close_timestamp,"
    " :realized_pnl, :pnl_pct, :fees, :won, :model_name, :model_version)"
)
WHOLE = text(
    "SELECT trades, gross_profit, gross_loss FROM trade_stats_buckets WHERE keyset = 0 AND width = 'all'"
)


def stats(web, query: str = "") -> dict:
    status, body = web.get_json("/api/v1/trades/stats" + query)
    assert status == 200, body
    return body


def write_trade(engine, pnl: float) -> None:
    """A closed trade written with SQL, as an operator or a loader would."""
    now = datetime.now(UTC)
    row = {"trade_id": uuid.uuid4().hex, "timestamp": now, "symbol": "BTC/USDT", "closed": True}
    row.update(close_timestamp=now, realized_pnl=pnl, pnl_pct=0.01, fees=0.1, won=pnl > 0)
    with engine.begin() as connection:
        connection.execute(WRITTEN, {**row, "model_name": None, "model_version": None})


def count(engine, sql: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(text(sql))


def test_without_beat_a_read_folds_what_is_older_than_the_staleness_allowed(web, engine):
    server = web(STATS_MAX_STALENESS_S="2")
    before = stats(server)["trades"]
    write_trade(engine, 5.0)  # SQL, not the journal: the triggers log it all the same
    written = time.monotonic()
    wait_for(lambda: stats(server)["trades"] == before + 1, 10, "the trade to be counted")
    # Counted once it was older than the staleness allowed, not some refresh interval later.
    assert time.monotonic() - written < 2 + 3
    assert count(engine, "SELECT count(*) FROM trade_stats_changes") == 0  # the read folded it


def test_beat_keeps_the_statistics_folded_without_any_read(clean, engine, workers, start_beat):
    workers("trades", STATS_MAX_STALENESS_S="2")
    start_beat(STATS_MAX_STALENESS_S="2")
    for pnl in (3.0, -1.0, 2.5):
        write_trade(engine, pnl)
    wait_for(
        lambda: count(engine, "SELECT count(*) FROM trade_stats_changes") == 0,
        30,
        "beat's trades.refresh_stats to fold the changes",
    )
    with engine.connect() as connection:
        whole = connection.execute(WHOLE).one()
    assert (whole.trades, float(whole.gross_profit), float(whole.gross_loss)) == (3, 5.5, 1.0)


def test_a_read_past_the_statement_timeout_is_a_504_within_it(web, engine):
    server = web(WEB_STATEMENT_TIMEOUT_S="1", STATS_MAX_STALENESS_S="3600")
    stats(server)
    with engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE trade_stats_buckets IN ACCESS EXCLUSIVE MODE"))  # reads now wait
        started = time.monotonic()
        status, body = server.get_json("/api/v1/trades/stats?group_by=symbol")
        waited = time.monotonic() - started
        blocker.rollback()
    assert status == 504 and body["error"]["code"] == "database_timeout", body
    assert "WEB_STATEMENT_TIMEOUT_S" in body["error"]["message"]
    assert waited < 1 + 3  # the statement timeout, not the client's deadline, nor a hang
    assert stats(server)["trades"] == 0  # and the connection it held serves again


@pytest.fixture
def scratch_url():
    """A database of the test's own."""
    name = f"tradebot_upgrade_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_a_journal_from_before_the_kept_statistics_is_built_by_stats_refresh(scratch_url, env, tmp_path, web):
    """An existing deployment upgrades: its statistics come from the trades until they are
    built, then from what is kept, with the same answers."""
    own = {**env, "DATABASE_URL": scratch_url}
    flask(["db", "upgrade", "003"], own, tmp_path)
    engine = create_engine(scratch_url)
    with engine.begin() as connection:
        connection.execute(WRITTEN, [{"close_timestamp": None, **trade} for trade in journal()])
    engine.dispose()
    flask(["db", "upgrade"], own, tmp_path)
    server = web(DATABASE_URL=scratch_url)
    query = "?group_by=model_version&bucket=1%20day&since=2026-03-02T05:00:00Z"
    from_trades = stats(server, query)
    refreshed = flask(["stats", "refresh"], own, tmp_path)
    assert "built from the trades" in refreshed.stdout
    since = datetime(2026, 3, 2, 5, tzinfo=UTC)
    assert from_trades["trades"] == len([trade for trade in journal() if trade["timestamp"] >= since])
    assert_same_answer(stats(server, query), from_trades)


def assert_same_answer(actual, expected, path: str = "") -> None:
    """Equal, numbers within the statistics tests' tolerance (a ratio's last digits differ
    between PostgreSQL's numeric and the kept path's decimal arithmetic)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for name in expected:
            assert_same_answer(actual[name], expected[name], f"{path}.{name}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (mine, theirs) in enumerate(zip(actual, expected, strict=True)):
            assert_same_answer(mine, theirs, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12), path
    else:
        assert actual == expected, path


@pytest.fixture
def tiny_decompression_limit(engine):
    """TimescaleDB's limit on the tuples a transaction may decompress to change compressed
    rows, at 1 for the test database's new sessions (a placeholder without TimescaleDB)."""
    database = engine.dialect.identifier_preparer.quote(engine.url.database)  # no bind for a name
    setting = "timescaledb.max_tuples_decompressed_per_dml_transaction"
    with engine.begin() as connection:
        connection.execute(text(f"ALTER DATABASE {database} SET {setting} = 1"))
    yield
    with engine.begin() as connection:
        connection.execute(text(f"ALTER DATABASE {database} RESET {setting}"))


def test_the_journal_writes_to_old_chunks_as_to_new_ones(
    clean, engine, tiny_decompression_limit, env, tmp_path, start_worker, web
):
    """Old chunks in the columnstore (on TimescaleDB; elsewhere the command has nothing to
    do): a repeated record, late closes, a corrected old close and a conflicting record
    reach them as the journal's rules say, and the statistics follow. The journal's and
    the fold's transactions lift TimescaleDB's decompression limit (at its default of
    100,000 tuples, the fold failed on every batch once 1M trades' closes were compressed;
    here it is 1)."""
    old = datetime.now(UTC) - timedelta(days=40)
    closed_trades = "SELECT count(*) FROM trade_history WHERE closed"

    def opened(number: int, side: str = "buy") -> dict:
        at = (old + timedelta(hours=number)).isoformat()
        return {"trade_id": f"old-{number}", "symbol": "ETH/USDT", "side": side, "amount": 1, "timestamp": at}

    def close(bot, number: int, pnl: float, at: datetime) -> None:
        bot.update_trade(f"old-{number}", closed=True, realized_pnl=pnl, close_timestamp=at.isoformat())

    start_worker()
    with TradeJournal(env["CELERY_BROKER_URL"], env["SPOOL_DIR"]) as bot:
        for number in range(30):
            bot.record_trade({**opened(number), "entry_price": 100})
        for number in range(10):  # closed long ago: trade_closes' old chunk
            close(bot, number, 1.0, old + timedelta(hours=number, minutes=30))
    wait_for(lambda: count(engine, closed_trades) == 10, 60, "the old trades")
    flask(["stats", "refresh"], env, tmp_path)
    compressed = flask(["storage", "compress", "--older-than-days", "7"], env, tmp_path).stdout
    if "no columnstore" not in compressed:  # TimescaleDB: the old chunks are converted now
        for table in ("trade_history", "trade_closes"):
            converted = rf"^{table}: [1-9]\d* of \d+ chunks in the columnstore"
            assert re.search(converted, compressed, re.M), compressed
    with TradeJournal(env["CELERY_BROKER_URL"], env["SPOOL_DIR"]) as bot:
        bot.record_trade({**opened(3), "entry_price": 100})  # again: stored once
        bot.record_trade({**opened(4, side="sell"), "entry_price": 100})  # other content: a conflict
        for number in range(10, 30):  # closed now, opened over two days long ago
            close(bot, number, 7.5, datetime.now(UTC))
        bot.update_trade("old-0", realized_pnl=-2.0)  # corrected: its old close changes in trade_closes
    wait_for(lambda: count(engine, closed_trades) == 30, 60, "the late closes")
    wait_for(lambda: count(engine, f"{closed_trades} AND realized_pnl < 0") == 1, 60, "the correction")
    letters = tmp_path / "spool" / "dead-letter" / "active.jsonl"
    wait_for(lambda: letters.exists() and "old-4" in letters.read_text(), 30, "the conflict's dead letter")
    assert count(engine, "SELECT count(*) FROM trade_history") == 30
    assert count(engine, "SELECT count(*) FROM trade_history WHERE trade_id = 'old-4' AND side = 'buy'") == 1
    whole = stats(web(), "?symbol=ETH/USDT")
    assert (whole["trades"], whole["closed"], whole["total_pnl"]) == (30, 30, 9 * 1.0 - 2.0 + 20 * 7.5)
    assert count(engine, "SELECT count(*) FROM trade_stats_changes") == 0  # all folded
    assert count(engine, "SELECT count(*) FROM trade_closes WHERE trade_id = 'old-0' AND pnl < 0") == 1


def test_readyz_and_metrics_show_where_the_upkeep_stands(web, engine):
    server = web(STATS_MAX_STALENESS_S="3600")
    write_trade(engine, 1.0)
    _, body = server.get_json("/readyz")
    upkeep = body["checks"]["maintenance"]
    assert set(upkeep) >= {"ok", "statistics", "columnstore", "retention"}
    assert upkeep["statistics"]["built"] is True and upkeep["statistics"]["pending"] == 1
    assert upkeep["statistics"]["ok"] is True  # a second behind is keeping up
    _, scraped = server.get("/metrics")
    metrics = scraped.decode()
    assert "journal_upkeep_up 1.0" in metrics
    assert 'journal_upkeep_ok{part="statistics"} 1.0' in metrics
    assert "trade_stats_pending_changes 1.0" in metrics


@pytest.mark.parametrize("closed", ["maybe", ""])
def test_a_bad_closed_filter_is_a_400_naming_it(http, closed):
    response = http.get("/api/v1/trades/stats", query_string={"closed": closed})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "closed" in {problem["field"] for problem in response.get_json()["error"]["details"]}


def test_the_journal_finds_a_trade_an_operator_moved_and_forgets_one_deleted(http, app, engine):
    """trade_ids follows SQL as it follows the journal: a trade whose opening time was
    corrected in SQL (within its chunk: TimescaleDB refuses to move a row to another)
    takes its next update where it now is; one deleted in SQL can be recorded again, once."""
    from db import RecordEntry, TradeRecord, TradeRepository, TradeUpdate, UpdateEntry, database
    from tests.test_api_trades import VALID

    opened = datetime(2026, 5, 4, 10, tzinfo=UTC)
    records = [{**VALID, "trade_id": name, "timestamp": opened.isoformat()} for name in ("moved", "gone")]
    with app.app_context():
        TradeRepository(database.session).write([RecordEntry(TradeRecord.from_dict(r)) for r in records])
    with engine.begin() as connection:
        moved = text('UPDATE trade_history SET "timestamp" = "timestamp" - :by WHERE trade_id = :id')
        connection.execute(moved, {"by": timedelta(minutes=30), "id": "moved"})
        connection.execute(text("DELETE FROM trade_history WHERE trade_id = 'gone'"))
    later = TradeUpdate.from_dict({"closed": True, "realized_pnl": 4.0})
    again = {**VALID, "trade_id": "gone", "timestamp": (opened + timedelta(hours=1)).isoformat()}
    with app.app_context():
        repository = TradeRepository(database.session)
        outcome = repository.write([UpdateEntry("moved", later), RecordEntry(TradeRecord.from_dict(again))])
        assert outcome.updated == 1 and outcome.inserted == ["gone"] and outcome.pending == 0
        assert repository.get("moved").realized_pnl == 4.0
        assert repository.get("gone").timestamp == opened + timedelta(hours=1)
        assert repository.write([RecordEntry(TradeRecord.from_dict(again))]).duplicates == ["gone"]
    assert count(engine, "SELECT count(*) FROM trade_history WHERE trade_id IN ('moved', 'gone')") == 2


def test_a_backlog_beyond_the_bulk_threshold_is_built_in_one_pass(http, app, engine):
    """A bulk load logs a change a row; folding it batch by batch would recompute nearly
    every close day a batch, so beat and `stats refresh` build it from the trades."""
    from db import database
    from db import stats as kept

    with engine.begin() as connection:
        connection.execute(WRITTEN, [{"close_timestamp": None, **trade} for trade in journal()])
    with app.app_context():
        assert kept.state(database.session).pending == len(journal())
        done = kept.fold_all(database.session, datetime.now(UTC), build_beyond=len(journal()))
        assert done.built and done.days > 0 and kept.state(database.session).pending == 0
    built = http.get("/api/v1/trades/stats?group_by=symbol&bucket=1%20day").get_json()
    with engine.begin() as connection:
        connection.execute(text("UPDATE trade_stats_state SET built = false"))  # the definition, for once
    from_trades = http.get("/api/v1/trades/stats?group_by=symbol&bucket=1%20day").get_json()
    assert from_trades["trades"] == len(journal())
    assert_same_answer(built, from_trades)
