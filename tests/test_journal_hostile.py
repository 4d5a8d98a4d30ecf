"""Hostile input against the real workers: each bad entry is dead-lettered once, at its
first try, and never holds up its neighbours; updates apply the newest change per field."""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError
from sqlalchemy import text

from db import Spool
from tasks.client import TradeJournal
from tests.bots.send_task_bot import trade
from tests.conftest import RESULT_URL
from tests.support.journal import dead_letters, journal_counts, rows_reach, sender
from tests.support.processes import wait_for


def assert_settled_at_first_try(env: dict[str, str], worker) -> None:
    """Nothing left in the broker, nothing run twice."""
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    wait_for(lambda: broker.llen("trades") == 0 and broker.hlen("unacked") == 0, 30, "an idle queue")
    log = worker.log()
    assert "requeued" not in log and "held unacknowledged" not in log and "delivered" not in log
    assert not redis.Redis.from_url(RESULT_URL).keys("journal:redeliveries:*")


def test_a_nan_amount_sent_by_name_is_dead_lettered_once_and_its_neighbours_stored(
    clean, engine, env, start_worker
):
    worker = start_worker()
    app = sender(env)
    app.send_task("trades.record", args=[trade("before", 0)], queue="trades")
    app.send_task("trades.record", args=[{**trade("nan", 0), "amount": float("nan")}], queue="trades")
    app.send_task("trades.record", args=[{**trade("inf", 0), "entry_price": float("inf")}], queue="trades")
    app.send_task("trades.record", args=[trade("after", 0)], queue="trades")

    wait_for(rows_reach(engine, 2), 30, "the two valid neighbours")
    letters = wait_for(lambda: len(dead_letters(env)) == 2 and dead_letters(env), 30, "two dead letters")
    app.close()
    assert_settled_at_first_try(env, worker)
    assert journal_counts(engine) == {"rows": 2, "distinct_ids": 2, "closed": 0}
    by_id = {letter["payload"]["value"]["args"][0]["trade_id"]: letter for letter in letters}
    assert set(by_id) == {"nan-0", "inf-0"}
    # The letter keeps what came, written as text where JSON has no number for it.
    assert by_id["nan-0"]["payload"]["sanitized"] is True
    assert by_id["nan-0"]["payload"]["value"]["args"][0]["amount"] == "NaN"
    assert by_id["inf-0"]["payload"]["value"]["args"][0]["entry_price"] == "Infinity"
    assert all(letter["reason"].startswith("invalid") for letter in letters)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("market_regime", "bull\x00"),
        ("agent_votes", {"momentum": "buy\x00"}),
        ("timestamp", "0001-01-01T00:30:00+05:00"),
        ("timestamp", "9999-12-31T23:00:00-05:00"),
        ("amount", 10**400),
    ],
)
def test_a_value_postgresql_cannot_store_is_dead_lettered_at_its_first_try(
    clean, engine, env, start_worker, field, value
):
    worker = start_worker()
    app = sender(env)
    for number in range(3):
        app.send_task("trades.record", args=[trade("ok", number)], queue="trades")
    app.send_task("trades.record", args=[{**trade("bad", 0), field: value}], queue="trades")
    app.send_task("trades.record", args=[trade("ok", 3)], queue="trades")

    [letter] = wait_for(lambda: dead_letters(env), 30, "the dead letter")
    wait_for(rows_reach(engine, 4), 30, "the four neighbours")
    app.close()
    assert letter["reason"].startswith("invalid") and field in letter["reason"]
    assert_settled_at_first_try(env, worker)
    assert journal_counts(engine)["rows"] == 4


def test_the_bot_client_refuses_what_postgresql_cannot_store_before_sending(clean, env, tmp_path):
    with TradeJournal(env["CELERY_BROKER_URL"], tmp_path / "bot") as journal:
        with pytest.raises(ValidationError, match="market_regime"):
            journal.record_trade({**trade("bot", 0), "market_regime": "bull\x00"})
        with pytest.raises(ValidationError, match="timestamp"):
            journal.record_trade({**trade("bot", 1), "timestamp": "9999-12-31T23:00:00-05:00"})
        with pytest.raises(ValidationError, match="close_timestamp"):
            journal.update_trade("bot-0", closed=True, close_timestamp="0001-01-01T00:30:00+05:00")
        assert journal.waiting == 0
    assert redis.Redis.from_url(env["CELERY_BROKER_URL"]).llen("trades") == 0


def test_an_entry_the_database_refuses_is_dead_lettered_alone_at_its_first_try(
    clean, engine, env, start_worker, refusing_symbol
):
    worker = start_worker(JOURNAL_BATCH_WAIT_S="0.5")  # one batch for all of them
    app = sender(env)
    for number in range(20):
        record = trade("batch", number)
        if number == 13:
            record["symbol"] = refusing_symbol
        app.send_task("trades.record", args=[record], queue="trades")

    [letter] = wait_for(lambda: dead_letters(env), 30, "the refused entry's dead letter")
    wait_for(rows_reach(engine, 19), 30, "its 19 neighbours")
    app.close()
    assert letter["reason"].startswith("unstorable") and "23514" in letter["reason"]
    assert letter["payload"]["trade"]["trade_id"] == "batch-13"
    assert_settled_at_first_try(env, worker)


def test_unstorable_spooled_entries_do_not_block_the_replay(
    clean, engine, env, start_worker, refusing_symbol
):
    spool = Spool(Path(env["SPOOL_DIR"]) / "replay")
    entries = [{"kind": "record", "trade": trade("spooled", number)} for number in range(6)]
    entries[1]["trade"]["market_regime"] = "bull\x00"  # refused by validation
    entries[3]["trade"]["symbol"] = refusing_symbol  # refused by the database
    entries.append({"kind": "update", "trade_id": "spooled-0", "updates": {"fees": 0.5}})
    spool.append(entries)
    start_worker()
    app = sender(env)
    report = app.send_task("trades.replay_spool", queue="trades").get(timeout=60)
    app.close()

    assert report == {"applied": 7, "skipped": 0, "segments": 1}
    assert spool.waiting() == 0
    assert journal_counts(engine)["rows"] == 4
    reasons = sorted(letter["reason"].split(":")[0] for letter in dead_letters(env))
    assert reasons == ["invalid", "unstorable"]
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT fees FROM trade_history WHERE trade_id = 'spooled-0'")) == 0.5


@pytest.mark.parametrize("missing", ["trade_id", "timestamp"])
def test_a_record_sent_by_name_must_carry_its_id_and_time(clean, engine, env, start_worker, missing):
    worker = start_worker()
    app = sender(env)
    record = trade("named", 0)
    del record[missing]
    app.send_task("trades.record", args=[record], queue="trades")
    app.send_task("trades.record", args=[trade("named", 1)], queue="trades")

    [letter] = wait_for(lambda: dead_letters(env), 30, "the dead letter")
    wait_for(rows_reach(engine, 1), 30, "the complete record")
    app.close()
    assert missing in letter["reason"] and "redelivery" in letter["reason"]
    assert_settled_at_first_try(env, worker)


# -- the order of updates ----------------------------------------------------------------


def stored(engine, trade_id: str) -> dict:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT fees, exit_price, closed, realized_pnl FROM trade_history WHERE trade_id = :id"),
            {"id": trade_id},
        ).one()
    return dict(row._mapping)


def at(second: int) -> str:
    return f"2026-02-01T00:00:{second:02d}Z"


def test_a_late_older_update_never_overwrites_a_newer_one(clean, engine, env, start_worker):
    start_worker()
    app = sender(env)
    app.send_task("trades.record", args=[trade("order", 0)], queue="trades")
    wait_for(rows_reach(engine, 1), 30, "the trade")
    newer = {"fees": 0.8, "closed": True, "updated_at": at(20)}
    older = {"fees": 0.4, "exit_price": 41_000.0, "updated_at": at(10)}
    app.send_task("trades.update", args=["order-0", newer], queue="trades")
    wait_for(lambda: stored(engine, "order-0")["closed"], 30, "the newer update")
    app.send_task("trades.update", args=["order-0", older], queue="trades")  # arrives last
    app.send_task("trades.record", args=[trade("marker", 0)], queue="trades")
    wait_for(rows_reach(engine, 2), 30, "a marker sent after the older update")
    app.close()
    # Per field: fees keeps the newer value; exit_price, which only the older one set, is taken.
    assert stored(engine, "order-0") == {
        "fees": 0.8,
        "exit_price": 41_000.0,
        "closed": True,
        "realized_pnl": None,
    }


def test_updates_apply_newest_per_field_whichever_way_they_arrive(clean, engine, env, start_worker):
    start_worker(JOURNAL_BATCH_WAIT_S="0.5")
    app = sender(env)
    app.send_task("trades.record", args=[trade("marker", 0)], queue="trades")
    wait_for(rows_reach(engine, 1), 30, "the marker trade")
    # Before the trade exists: parked, in the wrong order.
    app.send_task("trades.update", args=["parked-0", {"fees": 0.3, "updated_at": at(30)}], queue="trades")
    app.send_task("trades.update", args=["parked-0", {"fees": 0.1, "updated_at": at(10)}], queue="trades")

    def parked() -> int:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM trade_pending_updates"))

    wait_for(lambda: parked() == 2, 30, "both early updates to be kept")
    # The record and two more updates, one older and one newer than the parked ones; the
    # record's batch and the updates' batch run side by side, in either order.
    app.send_task("trades.update", args=["parked-0", {"fees": 0.5, "updated_at": at(50)}], queue="trades")
    app.send_task("trades.record", args=[{**trade("parked", 0), "fees": 0.05}], queue="trades")
    app.send_task("trades.update", args=["parked-0", {"fees": 0.2, "updated_at": at(20)}], queue="trades")
    app.send_task("trades.update", args=["marker-0", {"closed": True}], queue="trades")
    wait_for(
        lambda: journal_counts(engine)["rows"] == 2 and stored(engine, "marker-0")["closed"] and not parked(),
        30,
        "every write done: the trade stored, the marker's update (sent last) applied",
    )
    app.close()
    assert stored(engine, "parked-0")["fees"] == 0.5


def test_an_update_spooled_in_an_outage_loses_to_a_newer_one_sent_after_it(
    clean, engine, env, start_worker, tmp_path
):
    # The reported case: a record and {fees: 0.4} spooled while the database was down (beat
    # held back), then {fees: 0.8, closed: true} sent directly once it was back.
    from sqlalchemy.engine import make_url

    from tests.support.netfault import TcpProxy

    proxy = TcpProxy("127.0.0.1", make_url(env["DATABASE_URL"]).port or 5432)
    through_proxy = make_url(env["DATABASE_URL"]).set(host="127.0.0.1", port=proxy.port)
    start_worker(DATABASE_URL=through_proxy.render_as_string(False))
    spool = Spool(Path(env["SPOOL_DIR"]) / "replay")
    journal = TradeJournal(env["CELERY_BROKER_URL"], tmp_path / "bot")
    app = sender(env)
    try:
        proxy.cut()
        journal.record_trade(trade("outage", 0))
        journal.update_trade("outage-0", fees=0.4)
        wait_for(lambda: spool.waiting() == 2, 60, "the record and the first update spooled")
        proxy.restore()
        journal.update_trade("outage-0", fees=0.8, closed=True)

        def parked() -> int:
            with engine.connect() as connection:
                return connection.scalar(text("SELECT count(*) FROM trade_pending_updates"))

        wait_for(lambda: parked() == 1, 60, "the newer update kept until its trade lands")
        assert app.send_task("trades.replay_spool", queue="trades").get(timeout=60)["applied"] == 2
        assert stored(engine, "outage-0")["fees"] == 0.8
        assert stored(engine, "outage-0")["closed"] is True
    finally:
        app.close()
        journal.close()
        proxy.close()


def raw_message(task: str, body: bytes, content_type: str = "application/json") -> bytes:
    """A Celery protocol-2 message as kombu's Redis transport stores it, built by hand (a bot
    in another language could send anything)."""
    task_id = str(uuid.uuid4())
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0},
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "trades"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def test_messages_celery_cannot_decode_are_dead_lettered_and_nothing_is_unpickled(
    clean, engine, env, start_worker, tmp_path
):
    worker = start_worker()
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    deep = b"[[" + b"[" * 5_000 + b"1" + b"]" * 5_000 + b"], {}, {}]"
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(((Path.touch, (marker,)),))  # would create `marker` if unpickled
    broker.lpush("trades", raw_message("trades.record", deep))
    broker.lpush("trades", raw_message("trades.record", payload, "application/x-python-serialize"))
    broker.lpush("trades", raw_message("trades.recrod", b'[[{"trade_id": "typo-0"}], {}, {}]'))
    app = sender(env)
    app.send_task("trades.record", args=[trade("after", 0)], queue="trades")

    letters = wait_for(lambda: len(dead_letters(env)) == 3 and dead_letters(env), 30, "three dead letters")
    wait_for(rows_reach(engine, 1), 30, "the valid trade sent after them")
    app.close()
    reasons = sorted(letter["reason"].split(":")[0] for letter in letters)
    assert reasons == ["invalid", "undecodable", "unknown task"]
    # A payload JSON could not hold as it came (bytes, depth) is kept as text, marked sanitized.
    payloads = [letter["payload"].get("value", letter["payload"]) for letter in letters]
    assert {payload["content_type"] for payload in payloads} == {
        "application/json",
        "application/x-python-serialize",
    }
    assert any(payload["task"] == "trades.recrod" for payload in payloads)
    assert not marker.exists() and worker.alive()
    wait_for(lambda: broker.llen("trades") == 0 and broker.hlen("unacked") == 0, 30, "an idle queue")
