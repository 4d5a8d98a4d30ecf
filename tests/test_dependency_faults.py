"""Dependencies that are there but refuse, fill up or go silent, produced for real:
a read-only database, a full spool disk (a tmpfs), a database and a Redis that stop
answering behind a stalled TCP proxy, and messages held past the visibility timeout.
In each: nothing lost, nothing stored twice, nothing dead-lettered, nothing stuck."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from db import Spool
from tasks.client import TradeJournal
from tasks.web_clients import held_reports
from tests.bots.send_task_bot import trade
from tests.conftest import BROKER_DB, PG_ADMIN_URL, RESULT_DB, RESULT_URL
from tests.support.apps import web_app
from tests.support.journal import journal_counts, rows_reach
from tests.support.metrics import read_files, value
from tests.support.model_zoo import ROWS
from tests.support.netfault import TcpProxy
from tests.support.processes import Worker, wait_for

results = redis.Redis.from_url(RESULT_URL)


def dead_letters(spool_dir: Path) -> list[dict]:
    path = spool_dir / "dead-letter" / "active.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def no_redelivery_counted() -> bool:
    return not results.keys("journal:redeliveries:*")


@pytest.fixture
def database_proxy(env) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of PostgreSQL, and the DATABASE_URL through it."""
    url = make_url(env["DATABASE_URL"])
    proxy = TcpProxy("127.0.0.1", url.port or 5432)
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    proxy.close()


@pytest.fixture
def read_only(database_url, engine) -> Iterator:
    """Make the test database read-only, as a standby is after a failover, and back."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = make_url(database_url).database

    def switch(on: bool) -> None:
        with admin.connect() as connection:
            setting = (
                "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
            )
            connection.execute(text(f'ALTER DATABASE "{name}" {setting}'))
            # Sessions take the database's defaults when they start: end the open ones,
            # as a failover does.
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
        engine.dispose()

    yield switch
    switch(False)
    admin.dispose()


def test_a_read_only_database_spools_every_entry_and_replays_them_once_writable(
    clean, engine, env, start_worker, start_beat, tmp_path, read_only
):
    worker = start_worker()
    spool_dir = Path(env["SPOOL_DIR"])
    replay = Spool(spool_dir / "replay")
    journal = TradeJournal(env["CELERY_BROKER_URL"], tmp_path / "bot")
    try:
        for number in range(10):
            journal.record_trade(trade("ro", number))
        wait_for(rows_reach(engine, 10), 30, "the first 10 trades")

        read_only(True)
        for number in range(10, 40):
            journal.record_trade(trade("ro", number))
        for number in range(0, 20, 2):  # 5 stored trades and 5 that wait in the spool
            journal.update_trade(f"ro-{number}", closed=True, exit_price=40_500.0, realized_pnl=1.5)
        wait_for(lambda: replay.waiting() == 40, 60, "30 records and 10 updates spooled")
        assert dead_letters(spool_dir) == []
        assert "read-only transaction (SQLSTATE 25006)" in worker.log()

        read_only(False)
        start_beat()
        wait_for(rows_reach(engine, 40, closed=10), 60, "the spool replayed once the database is writable")
        wait_for(lambda: replay.waiting() == 0, 30, "an empty spool")
    finally:
        journal.close()
    assert journal_counts(engine) == {"rows": 40, "distinct_ids": 40, "closed": 10}
    assert dead_letters(spool_dir) == [] and no_redelivery_counted()


def test_a_full_spool_disk_keeps_trades_in_the_broker_until_they_can_be_stored(
    clean, engine, env, app, start_worker, start_beat, tmp_path, database_proxy, tiny_filesystem
):
    proxy, through_proxy = database_proxy
    metrics = tmp_path / "metrics"
    spool = {"SPOOL_DIR": str(tiny_filesystem), "DATABASE_URL": through_proxy}
    worker = start_worker(PROMETHEUS_MULTIPROC_DIR=str(metrics), **spool)
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    replay = Spool(tiny_filesystem / "replay")
    readiness = app.test_client()
    journal = TradeJournal(env["CELERY_BROKER_URL"], tmp_path / "bot")
    try:
        proxy.cut()
        for number in range(300):
            journal.record_trade(trade("full", number))

        def held() -> int:
            return sum(held_reports(results).values())

        # The 64 KiB spool takes what fits; the rest stays in the broker, held by the worker.
        def settled() -> bool:  # each trade spooled (and acknowledged) or held (unacknowledged)
            now_held, spooled = held(), replay.waiting()
            return bool(spooled and now_held) and spooled + now_held == 300 == spooled + broker.hlen(
                "unacked"
            )

        wait_for(settled, 120, "a full spool, the rest held in the broker")
        journal_check = readiness.get("/readyz").get_json()["checks"]["journal"]
        assert journal_check["ok"] is False and journal_check["held"] == held()
        assert "neither the database nor the spool" in journal_check["error"]
        assert value(read_files(metrics), "journal_held_entries") == held()
        assert value(read_files(metrics), "journal_outages_total", dependency="spool") > 0

        proxy.restore()
        start_beat(**spool)  # the replay must drain the full disk too
        wait_for(rows_reach(engine, 300), 120, "every trade stored once the database is back")
        wait_for(lambda: replay.waiting() == 0 and held() == 0, 60, "an empty spool, nothing held")
        wait_for(lambda: broker.hlen("unacked") == 0 and broker.llen("trades") == 0, 30, "an idle broker")
    finally:
        journal.close()
    assert journal_counts(engine) == {"rows": 300, "distinct_ids": 300, "closed": 0}
    assert dead_letters(tiny_filesystem) == [] and no_redelivery_counted()
    assert "redelivered" not in worker.log() and "requeued" not in worker.log()
    assert readiness.get("/readyz").get_json()["checks"]["journal"] == {"ok": True, "held": 0}


def test_a_database_that_goes_silent_is_given_up_on_and_its_trades_spooled(
    clean, engine, env, start_worker, tmp_path, database_proxy
):
    proxy, through_proxy = database_proxy
    # Statements may take 1 s; the worker gives up on a silent server 5 s after that. No
    # retries: each would wait for the silent server again (retries are test_outages.py's).
    worker = start_worker(
        DATABASE_URL=through_proxy, DATABASE_STATEMENT_TIMEOUT_S="1", JOURNAL_DB_RETRIES="0"
    )
    replay = Spool(Path(env["SPOOL_DIR"]) / "replay")
    app = Celery(broker=env["CELERY_BROKER_URL"], backend=RESULT_URL, set_as_current=False)
    journal = TradeJournal(env["CELERY_BROKER_URL"], tmp_path / "bot")
    try:
        for number in range(10):
            journal.record_trade(trade("silent", number))
        wait_for(rows_reach(engine, 10), 30, "the first 10 trades")

        proxy.stall()  # connections stay open; nothing comes back
        for number in range(10, 30):
            journal.record_trade(trade("silent", number))
        wait_for(lambda: replay.waiting() == 20, 120, "the 20 trades spooled after the database went silent")
        # The worker says why once the batch is spooled, a moment after the spool has it.
        wait_for(
            lambda: "server closed the connection unexpectedly" in worker.log(), 10, "the worker's reason"
        )
        started = time.monotonic()
        assert app.send_task("trades.replay_spool", queue="trades").get(timeout=60) is None
        assert time.monotonic() - started < 30  # a replay against the silent server returns

        proxy.resume()
        report = wait_for(
            lambda: app.send_task("trades.replay_spool", queue="trades").get(timeout=60), 60, "a replay"
        )
        assert report["applied"] == 20
    finally:
        app.close()
        journal.close()
    assert journal_counts(engine) == {"rows": 30, "distinct_ids": 30, "closed": 0}


def test_a_redis_that_goes_silent_fails_each_request_in_bounded_time(clean, env, zoo, tmp_path):
    # The web reaches Redis through the proxy; the predict worker directly. The worker
    # takes no direct connection: what is bounded here is the Redis lane's wait (a direct
    # connection answers without Redis: tests/test_direct_connection.py).
    lane_only = {**env, "PREDICT_DIRECT_BIND": "off"}
    worker = Worker(lane_only, tmp_path, queues="predict", pool="threads").wait_ready()
    proxy = TcpProxy("127.0.0.1", make_url(env["CELERY_BROKER_URL"]).port or 6379)
    try:
        worker.wait_models_loaded(env["CELERY_RESULT_BACKEND"], {"xgb.json"})
        client = web_app(
            celery_broker_url=f"redis://127.0.0.1:{proxy.port}/{BROKER_DB}",
            celery_result_backend=f"redis://127.0.0.1:{proxy.port}/{RESULT_DB}",
            predict_timeout_s=1,
            spool_dir=tmp_path / "web-spool",
        ).test_client()
        body = {"model_name": "xgb.json", "features": ROWS.tolist()}
        assert client.post("/api/v1/ml/predict", json=body).status_code == 200

        proxy.stall()
        for method, path, payload in [
            ("POST", "/api/v1/ml/predict", body),
            ("POST", "/api/v1/ml/predict", body),  # the connections of the first are gone
            ("GET", "/api/v1/ml/models", None),
        ]:
            started = time.monotonic()
            response = client.open(path, method=method, json=payload)
            assert (response.status_code, response.get_json()["error"]["code"]) == (503, "broker_unavailable")
            assert time.monotonic() - started < 15, (method, path)
        started = time.monotonic()
        kept = client.post("/api/v1/trades", json=trade("silent-broker", 0))
        assert (kept.status_code, kept.get_json()["status"]) == (202, "spooled")
        assert time.monotonic() - started < 15
        assert client.get("/readyz").status_code == 503
    finally:
        proxy.close()
        worker.stop()


def test_trades_a_live_worker_holds_past_the_visibility_timeout_are_not_delivered_again(
    clean, engine, env, start_worker, tmp_path, database_proxy
):
    proxy, through_proxy = database_proxy
    broken = tmp_path / "not-a-folder"  # a spool that cannot be written: the trades are held
    broken.write_text("")
    short = {"BROKER_VISIBILITY_TIMEOUT_S": "4"}
    holder = start_worker(DATABASE_URL=through_proxy, SPOOL_DIR=str(broken), **short)
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    proxy.cut()
    journal = TradeJournal(env["CELERY_BROKER_URL"], tmp_path / "bot")
    try:
        for number in range(50):
            journal.record_trade(trade("vis", number))
        wait_for(lambda: broker.hlen("unacked") == 50 and broker.llen("trades") == 0, 60, "50 trades held")
        # A second worker, whose sweep returns the messages of workers that are gone.
        sweeper = start_worker(**short)
        since = time.time()

        def renewed_past_the_timeout() -> bool:
            scores = [score for _, score in broker.zrange("unacked_index", 0, -1, withscores=True)]
            return len(scores) == 50 and min(scores) > since + 2 * 4

        wait_for(renewed_past_the_timeout, 60, "the holder to renew every message's visibility")
        assert broker.llen("trades") == 0 and journal_counts(engine)["rows"] == 0  # nobody took them

        proxy.restore()
        wait_for(rows_reach(engine, 50), 120, "the held trades stored once the database is back")
        wait_for(lambda: broker.hlen("unacked") == 0, 30, "every message acknowledged")
    finally:
        journal.close()
    assert journal_counts(engine) == {"rows": 50, "distinct_ids": 50, "closed": 0}
    assert no_redelivery_counted()
    for worker in (holder, sweeper):
        assert "delivered" not in worker.log() and "requeued" not in worker.log()
