"""The journal end to end: a bot enqueues by task name, real workers write PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import text

from tests.bots.send_task_bot import trade
from tests.support.journal import journal_counts, rows_reach
from tests.support.processes import wait_for

BOT = Path(__file__).parent / "bots" / "send_task_bot.py"


def run_bot(env: dict[str, str], prefix: str, count: int, close: int, repeat: int = 1) -> None:
    args = [sys.executable, str(BOT), env["CELERY_BROKER_URL"], prefix, str(count), str(close)]
    subprocess.run([*args, "--repeat", str(repeat)], env=env, check=True, timeout=300)


def sender(env: dict[str, str]) -> Celery:
    app = Celery(broker=env["CELERY_BROKER_URL"], set_as_current=False)
    app.conf.task_serializer = "json"
    return app


def dead_letters(env: dict[str, str]) -> list[dict]:
    path = Path(env["SPOOL_DIR"]) / "dead-letter" / "active.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_send_task_bot_records_1000_trades_and_closes_300(clean, engine, env, start_worker):
    start_worker()
    run_bot(env, "bot", 1000, 300)

    wait_for(rows_reach(engine, 1000, closed=300), 120, "1000 trades with 300 closed")
    assert journal_counts(engine) == {"rows": 1000, "distinct_ids": 1000, "closed": 300}
    with engine.connect() as connection:
        closed = connection.execute(
            text(
                "SELECT won, realized_pnl, exit_price, close_timestamp"
                " FROM trade_history WHERE trade_id = 'bot-1'"
            )
        ).one()
    assert closed.won is True and closed.realized_pnl == 12.5 and closed.exit_price == 40_101.0
    assert closed.close_timestamp is not None


def test_the_same_records_sent_three_times_are_stored_once(clean, engine, env, start_worker):
    start_worker()
    run_bot(env, "thrice", 200, 50, repeat=3)

    wait_for(rows_reach(engine, 200, closed=50), 60, "200 trades with 50 closed")
    app = sender(env)
    marker = app.send_task("trades.record", args=[trade("marker", 0)], queue="trades")
    wait_for(rows_reach(engine, 201), 30, "the marker sent after every duplicate")
    app.close()
    assert marker.id
    assert journal_counts(engine) == {"rows": 201, "distinct_ids": 201, "closed": 50}
    assert dead_letters(env) == []  # exact duplicates are no-ops, not conflicts


def test_an_update_that_arrives_before_its_record_is_applied_when_the_record_lands(
    clean, engine, env, start_worker
):
    start_worker()
    app = sender(env)
    updates = {"closed": True, "exit_price": 41_000.0, "realized_pnl": 55.0}
    app.send_task("trades.update", args=["early-0", updates], queue="trades")

    def parked() -> bool:
        with engine.connect() as connection:
            return bool(connection.scalar(text("SELECT count(*) FROM trade_pending_updates")))

    wait_for(parked, 30, "the early update to be kept")
    app.send_task("trades.record", args=[trade("early", 0)], queue="trades")
    wait_for(rows_reach(engine, 1, closed=1), 30, "the trade to land closed")
    app.close()
    with engine.connect() as connection:
        row = connection.execute(text("SELECT exit_price, won FROM trade_history")).one()
        left = connection.scalar(text("SELECT count(*) FROM trade_pending_updates"))
    assert (row.exit_price, row.won, left) == (41_000.0, True, 0)


def test_a_second_record_with_the_same_id_and_other_content_is_refused_loudly(
    clean, engine, env, start_worker
):
    worker = start_worker()
    app = sender(env)
    original = trade("twin", 0)
    app.send_task("trades.record", args=[original], queue="trades")
    wait_for(rows_reach(engine, 1), 30, "the original trade")
    app.send_task("trades.record", args=[{**original, "entry_price": 1.0, "side": "buy"}], queue="trades")

    letters = wait_for(lambda: dead_letters(env), 30, "the conflicting record to be dead-lettered")
    app.close()
    assert letters[0]["reason"].startswith("conflict")
    assert "entry_price" in letters[0]["reason"]
    assert letters[0]["payload"]["trade"]["entry_price"] == 1.0
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT entry_price FROM trade_history")) == original["entry_price"]
    assert "recorded again with different" in worker.log()


def test_invalid_messages_are_dead_lettered_and_do_not_block_the_queue(clean, engine, env, start_worker):
    start_worker()
    app = sender(env)
    app.send_task("trades.record", args=[{"symbol": "BTC/USDT", "side": "up"}], queue="trades")
    app.send_task("trades.record", args=["not a dict", "extra"], queue="trades")
    app.send_task("trades.update", args=["x", {"exit_price": -5}], queue="trades")
    app.send_task("trades.record", args=[trade("fine", 0)], queue="trades")

    wait_for(rows_reach(engine, 1), 30, "the valid record behind the invalid ones")
    letters = wait_for(lambda: len(dead_letters(env)) >= 3 and dead_letters(env), 30, "three dead letters")
    app.close()
    assert all(letter["reason"].startswith("invalid") for letter in letters)


# The journal serialises writers per trade with advisory locks (db.repository). Holding
# one from the test makes the batch that contains that trade block mid-transaction, so a
# test can kill the pool process at a known point. pg_stat_activity names each backend's
# process (db.extension), which tells the test whom to kill.
LOCK_NAMESPACE = 0x7472


class TradeLock:
    def __init__(self, engine, trade_id: str):
        self.connection = engine.connect()
        self.connection.execute(
            text("SELECT pg_advisory_lock(:ns, hashtext(:id))"), {"ns": LOCK_NAMESPACE, "id": trade_id}
        )
        self.connection.commit()

    def release(self) -> None:
        self.connection.execute(text("SELECT pg_advisory_unlock_all()"))
        self.connection.commit()
        self.connection.close()


def _process_waiting_for(engine, worker, trade_id: str) -> int | None:
    """The live pool process whose transaction waits for `trade_id`'s lock, if any."""
    with engine.connect() as connection:
        names = connection.scalars(
            text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = :ns"
                " AND l.objid::bigint = (hashtext(:id)::bigint & 4294967295)"
            ),
            {"ns": LOCK_NAMESPACE, "id": trade_id},
        ).all()
    alive = set(worker.pool_pids())
    waiting = [int(name.rsplit(":", 1)[1]) for name in names if name.startswith("tradebot:")]
    return next((pid for pid in waiting if pid in alive), None)


def test_a_pool_process_killed_mid_batch_loses_and_doubles_nothing(clean, engine, env, start_worker):
    worker = start_worker()
    lock = TradeLock(engine, "kill-150")
    bot = subprocess.Popen([sys.executable, str(BOT), env["CELERY_BROKER_URL"], "kill", "1000", "0"], env=env)
    victim = wait_for(
        lambda: _process_waiting_for(engine, worker, "kill-150"), 60, "a batch blocked mid-transaction"
    )
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in worker.pool_pids(), 30, "the pool to replace the killed process")
    lock.release()  # the requeued messages can now be written

    assert bot.wait(120) == 0
    wait_for(rows_reach(engine, 1000), 120, "all 1000 trades after the kill")
    assert journal_counts(engine) == {"rows": 1000, "distinct_ids": 1000, "closed": 0}
    assert "requeued" in worker.log()


def test_a_message_that_keeps_killing_its_worker_is_dead_lettered_after_the_cap(
    clean, engine, env, start_worker
):
    worker = start_worker(JOURNAL_MAX_REDELIVERIES="2")
    lock = TradeLock(engine, "poison-0")
    app = sender(env)
    app.send_task("trades.record", args=[trade("poison", 0)], queue="trades")
    app.send_task("trades.record", args=[trade("innocent", 0)], queue="trades")

    kills = 0
    while True:
        victim = wait_for(
            lambda: dead_letters(env) or _process_waiting_for(engine, worker, "poison-0"),
            60,
            "the poison message to block again, or to be dead-lettered",
        )
        if isinstance(victim, list):
            break
        os.kill(victim, signal.SIGKILL)
        kills += 1
        assert kills <= 3, "the poison message was retried past its cap"
        wait_for(
            lambda pid=victim: pid not in worker.pool_pids(), 30, "the pool to replace the killed process"
        )
    lock.release()
    app.close()

    letters = dead_letters(env)
    assert [letter["payload"]["args"][0]["trade_id"] for letter in letters] == ["poison-0"]
    assert letters[0]["reason"].startswith("poison")
    wait_for(rows_reach(engine, 1), 30, "the innocent trade")
    with engine.connect() as connection:
        assert connection.scalars(text("SELECT trade_id FROM trade_history")).all() == ["innocent-0"]
    assert "dead-lettered, not run again" in worker.log()


def test_a_message_whose_dead_letter_cannot_be_written_is_held_not_dropped_nor_counted(
    clean, engine, env, start_worker, tmp_path
):
    # SPOOL_DIR is a file, so dead-lettering the invalid message fails: the spool's disk
    # is unavailable (class a). The message must stay in the broker, held by the worker
    # and tried again, never acknowledged, never counted as a redelivery.
    broken = tmp_path / "not-a-folder"
    broken.write_text("")
    worker = start_worker(SPOOL_DIR=str(broken), JOURNAL_MAX_REDELIVERIES="1")
    app = sender(env)
    app.send_task("trades.record", args=[{"symbol": "BTC/USDT", "side": "sideways"}], queue="trades")
    wait_for(lambda: worker.log().count("held unacknowledged") >= 3, 60, "the message to be tried 3 times")
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    assert broker.hlen("unacked") == 1  # still the broker's, held by the worker

    broken.unlink()
    broken.mkdir()
    letters = broken / "dead-letter" / "active.jsonl"
    wait_for(letters.exists, 60, "the message to be dead-lettered once the folder works")
    wait_for(lambda: broker.hlen("unacked") == 0, 30, "the message to be acknowledged")
    app.close()
    [letter] = [json.loads(line) for line in letters.read_text().splitlines()]
    assert letter["reason"].startswith("invalid") and letter["payload"]["args"][0]["side"] == "sideways"
    assert "redelivered" not in worker.log() and "requeued" not in worker.log()


def test_sigterm_lets_the_running_batch_finish_and_returns_the_rest_to_the_queue(
    clean, engine, env, start_worker
):
    worker = start_worker()
    lock = TradeLock(engine, "stop-150")
    bot = subprocess.Popen([sys.executable, str(BOT), env["CELERY_BROKER_URL"], "stop", "1000", "0"], env=env)
    wait_for(lambda: _process_waiting_for(engine, worker, "stop-150"), 60, "a batch blocked mid-transaction")
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    assert broker.hlen("unacked") > 0  # kombu's record of the messages the worker holds
    worker.process.send_signal(signal.SIGTERM)  # a warm shutdown, while that batch runs
    wait_for(lambda: "Warm shutdown" in worker.log(), 30, "the worker to begin its warm shutdown")
    lock.release()
    assert worker.process.wait(120) == 0
    assert broker.hlen("unacked") == 0  # returned to the queue, not left for the visibility timeout
    with engine.connect() as connection:  # the batch that was running was finished, not dropped
        running = connection.scalar(text("SELECT count(*) FROM trade_history WHERE trade_id = 'stop-150'"))
    assert running == 1
    assert bot.wait(120) == 0

    start_worker()  # what the stopped worker held but had not started is back in the queue
    wait_for(rows_reach(engine, 1000), 120, "all 1000 trades after the restart")
    assert journal_counts(engine) == {"rows": 1000, "distinct_ids": 1000, "closed": 0}


def test_trades_held_by_a_worker_killed_outright_come_back_after_the_visibility_timeout(
    clean, engine, env, start_worker
):
    # Redelivered messages run one by one (poison isolation). A message held longer than
    # the visibility timeout is delivered again, and counts towards the dead-letter cap,
    # so the test keeps what the killed worker held small next to the timeout, as the
    # defaults (200 per batch, 300 s) do.
    short = {"BROKER_VISIBILITY_TIMEOUT_S": "10", "JOURNAL_BATCH_SIZE": "20"}
    worker = start_worker(**short)
    lock = TradeLock(engine, "gone-150")
    bot = subprocess.Popen([sys.executable, str(BOT), env["CELERY_BROKER_URL"], "gone", "1000", "0"], env=env)
    wait_for(lambda: _process_waiting_for(engine, worker, "gone-150"), 60, "a batch blocked mid-transaction")
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool: no shutdown at all
    worker.process.wait(30)
    lock.release()
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    assert broker.hlen("unacked") > 0  # held by the dead worker, in no queue
    assert bot.wait(120) == 0

    start_worker(**short)
    # Every message leaves the queue and enters `unacked` in one step, so nothing the dead
    # worker held is lost: it all comes back after the visibility timeout, none doubled.
    wait_for(rows_reach(engine, 1000), 180, "the held trades after the visibility timeout")
    wait_for(lambda: broker.llen("trades") == 0 and broker.hlen("unacked") == 0, 60, "an idle queue")
    counts = journal_counts(engine)
    assert counts["rows"] == counts["distinct_ids"] == 1000
    assert dead_letters(env) == []
