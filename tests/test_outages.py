"""Outages for real: the database or the broker goes away (a cut TCP proxy), then comes back."""

from __future__ import annotations

import json
from pathlib import Path

from celery import Celery
from sqlalchemy.engine import make_url

from db import Spool, TradeRecord
from tasks.client import TradeJournal
from tests.bots.send_task_bot import trade
from tests.conftest import BROKER_DB, RESULT_URL
from tests.support.journal import journal_counts, rows_reach
from tests.support.metrics import read_files, value
from tests.support.netfault import TcpProxy
from tests.support.processes import wait_for


def record(number: int, prefix: str = "t") -> dict:
    return trade(prefix, number)


def test_records_and_updates_survive_a_database_outage_exactly_once(
    clean, engine, env, start_worker, start_beat, tmp_path
):
    proxy = TcpProxy("127.0.0.1", make_url(env["DATABASE_URL"]).port or 5432)
    metrics = tmp_path / "metrics"
    through_proxy = {
        "DATABASE_URL": make_url(env["DATABASE_URL"])
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(False),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    worker = start_worker(**through_proxy)
    start_beat(**through_proxy)
    replay = Spool(Path(env["SPOOL_DIR"]) / "replay")
    journal = TradeJournal(env["CELERY_BROKER_URL"], tmp_path / "bot")
    try:
        for number in range(50):
            journal.record_trade(record(number))
        wait_for(rows_reach(engine, 50), 30, "the first 50 trades before the outage")

        proxy.cut()
        for number in range(50, 200):
            journal.record_trade(record(number))
        for number in range(0, 120, 2):  # closes 30 stored trades and 30 that wait in the spool
            journal.update_trade(f"t-{number}", closed=True, exit_price=41_000.0, realized_pnl=3.0)
        wait_for(lambda: replay.waiting() >= 210, 60, "150 records and 60 updates in the spool")
        assert journal_counts(engine) == {"rows": 50, "distinct_ids": 50, "closed": 0}
        assert "entries spooled" in worker.log()

        proxy.restore()
        wait_for(rows_reach(engine, 200, closed=60), 60, "the spool replayed after the outage")
        wait_for(lambda: replay.waiting() == 0, 30, "an empty spool")
        assert journal_counts(engine) == {"rows": 200, "distinct_ids": 200, "closed": 60}
        # What /metrics reports of it: every spooled entry counted once, and replayed once.
        counters = read_files(metrics)
        assert value(counters, "journal_spooled_entries_total") == 210
        assert value(counters, "journal_replayed_entries_total") == 210
        assert value(counters, "journal_entries_written_total", outcome="inserted") == 200
    finally:
        journal.close()
        proxy.close()


def test_the_bot_client_keeps_trades_while_the_broker_is_down_and_sends_them_after(
    clean, engine, start_worker, tmp_path
):
    start_worker()
    proxy = TcpProxy("127.0.0.1", 6379)
    broker_via_proxy = f"redis://127.0.0.1:{proxy.port}/{BROKER_DB}"
    outbox = tmp_path / "bot"
    journal = TradeJournal(broker_via_proxy, outbox, retry_interval_s=0.2)
    try:
        # The plan's TradeRecord dataclass and plain dicts are both accepted.
        assert journal.record_trade(TradeRecord.from_dict(record(0, "c"))).spooled is False
        wait_for(rows_reach(engine, 1), 30, "the trade sent while the broker answered")

        proxy.cut()
        sent = [journal.record_trade(record(number, "c")) for number in range(1, 41)]
        sent.append(journal.update_trade("c-1", closed=True, exit_price=40_500.0, realized_pnl=-2.0))
        assert [e for e in sent if not e.spooled] == []
        assert journal.waiting == 41
        journal.close()  # the bot stops while the broker is still down

        proxy.restore()
        restarted = TradeJournal(broker_via_proxy, outbox, retry_interval_s=0.2)
        wait_for(lambda: restarted.waiting == 0, 30, "the outbox sent by the restarted bot")
        restarted.close()
        wait_for(rows_reach(engine, 41, closed=1), 30, "every spooled trade in the database")
        assert journal_counts(engine) == {"rows": 41, "distinct_ids": 41, "closed": 1}
    finally:
        proxy.close()


def test_a_torn_spool_line_is_skipped_with_a_warning_and_the_rest_replayed(clean, engine, env, start_worker):
    folder = Path(env["SPOOL_DIR"]) / "replay"
    spool = Spool(folder)
    spool.append({"kind": "record", "trade": record(number, "s")} for number in range(5))
    with (folder / "active.jsonl").open("ab") as active:  # a writer that died mid-line
        active.write(b'{"kind": "record", "trade": {"trade_id": "torn-')
    spool.append({"kind": "record", "trade": record(number, "s")} for number in range(5, 10))
    with (folder / "active.jsonl").open("ab") as active:  # and one that died at the very end
        active.write(b'{"kind": "rec')

    worker = start_worker()
    app = Celery(broker=env["CELERY_BROKER_URL"], backend=RESULT_URL, set_as_current=False)
    report = app.send_task("trades.replay_spool", queue="trades").get(timeout=60)
    app.close()

    assert report == {"applied": 10, "skipped": 2, "segments": 1}
    assert journal_counts(engine) == {"rows": 10, "distinct_ids": 10, "closed": 0}
    assert worker.log().count("skipped an unreadable line") == 2
    kept = b"".join(path.read_bytes() for path in (folder / "quarantine").iterdir())
    assert b'"trade_id": "torn-' in kept and b'{"kind": "rec' in kept
    assert spool.waiting() == 0
    assert not list(folder.glob("segment-*"))


def test_invalid_spooled_entries_are_dead_lettered_during_replay(clean, engine, env, start_worker):
    folder = Path(env["SPOOL_DIR"])
    Spool(folder / "replay").append(
        [
            {"kind": "record", "trade": record(0, "v")},
            {"kind": "record", "trade": {**record(1, "v"), "amount": -1}},
            {"kind": "teleport"},
        ]
    )
    start_worker()
    app = Celery(broker=env["CELERY_BROKER_URL"], backend=RESULT_URL, set_as_current=False)
    assert app.send_task("trades.replay_spool", queue="trades").get(timeout=60)["applied"] == 3
    app.close()
    assert journal_counts(engine)["rows"] == 1
    letters = [
        json.loads(line) for line in (folder / "dead-letter" / "active.jsonl").read_text().splitlines()
    ]
    assert [letter["reason"].split(":")[0] for letter in letters] == ["invalid", "invalid"]
