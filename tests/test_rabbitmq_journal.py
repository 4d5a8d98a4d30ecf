"""The journal with RabbitMQ as the broker (Redis stays the result backend): real workers,
the machine's RabbitMQ in a fresh vhost per test, the contract's quorum `trades` queue."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from celery import Celery
from kombu import Connection, Queue

from db import RecordEntry, TradeRecord
from tasks.client import TradeJournal
from tasks.contract import TRADES_DEAD_LETTER_QUEUE, TRADES_DELIVERY_LIMIT, TRADES_QUEUE, amqp_queues
from tests.bots.send_task_bot import trade
from tests.support import rabbitmq
from tests.support.journal import dead_letters, journal_counts, rows_reach
from tests.support.processes import wait_for
from tests.test_journal_workers import TradeLock, _process_waiting_for


def vhost_of(url: str) -> str:
    return unquote(urlparse(url).path[1:])


def amqp_env(env: dict[str, str], url: str, **more: str) -> dict[str, str]:
    return {**env, "CELERY_BROKER_URL": url, **more}


def journal(url: str, env: dict[str, str], **options) -> TradeJournal:
    return TradeJournal(url, Path(env["SPOOL_DIR"]), **options)


def test_records_updates_and_duplicates_reach_the_journal_through_a_quorum_queue(
    clean, engine, env, rabbitmq_url, start_worker
):
    start_worker(CELERY_BROKER_URL=rabbitmq_url)
    with journal(rabbitmq_url, env) as bot:
        early = bot.update_trade("rmq-early", closed=True, exit_price=41_000.0, realized_pnl=5.0)
        sent = [bot.record_trade(trade("rmq", number)) for number in range(100)]
        assert not any(item.spooled for item in [early, *sent])  # RabbitMQ confirmed each one
        twice = RecordEntry(TradeRecord.from_dict(trade("rmq", 0)), job_id=sent[0].job_id)
        bot.send(twice)  # the same message again: one row
        bot.record_trade(trade("rmq-early", 0) | {"trade_id": "rmq-early"})

    wait_for(rows_reach(engine, 101, closed=1), 60, "100 trades and the early-updated one")
    assert journal_counts(engine) == {"rows": 101, "distinct_ids": 101, "closed": 1}
    assert dead_letters(env) == []
    queues = rabbitmq.rabbitmqctl(
        "list_queues",
        "-p",
        vhost_of(rabbitmq_url),
        "--no-table-headers",
        "--quiet",
        "name",
        "type",
        "arguments",
    )
    trades_line = next(line for line in queues.splitlines() if line.startswith(f"{TRADES_QUEUE}\t"))
    assert "quorum" in trades_line and f"{TRADES_DELIVERY_LIMIT}" in trades_line
    assert any(line.startswith(f"{TRADES_DEAD_LETTER_QUEUE}\t") for line in queues.splitlines())


def test_a_send_task_bot_with_the_contracts_queues_records_over_rabbitmq(
    clean, engine, env, rabbitmq_url, start_worker
):
    start_worker(CELERY_BROKER_URL=rabbitmq_url)
    app = Celery(broker=rabbitmq_url, set_as_current=False)
    # What the README tells a send_task bot to configure on RabbitMQ.
    app.conf.update(
        broker_read_url=rabbitmq_url,
        broker_write_url=rabbitmq_url,
        task_serializer="json",
        task_queues=amqp_queues(),
    )
    try:
        for number in range(50):
            app.send_task("trades.record", args=[trade("plain", number)], queue=TRADES_QUEUE)
    finally:
        app.close()
    wait_for(rows_reach(engine, 50), 60, "the send_task bot's 50 trades")
    assert journal_counts(engine) == {"rows": 50, "distinct_ids": 50, "closed": 0}
    # The worker declared where RabbitMQ dead-letters (this bot did not).
    assert TRADES_DEAD_LETTER_QUEUE in rabbitmq.queue_depths(vhost_of(rabbitmq_url))


def test_a_worker_killed_outright_gives_its_messages_back_at_once(
    clean, engine, env, rabbitmq_url, start_worker
):
    # An hour's visibility timeout: on RabbitMQ it plays no part, a dead consumer's
    # unacknowledged messages go back to the queue when its connection drops.
    settings = {
        "CELERY_BROKER_URL": rabbitmq_url,
        "BROKER_VISIBILITY_TIMEOUT_S": "3600",
        "JOURNAL_BATCH_SIZE": "20",
    }
    worker = start_worker(**settings)
    lock = TradeLock(engine, "gone-150")
    with journal(rabbitmq_url, env) as bot:
        for number in range(300):
            bot.record_trade(trade("gone", number))
        wait_for(
            lambda: _process_waiting_for(engine, worker, "gone-150"), 60, "a batch blocked mid-transaction"
        )
        os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool: no shutdown at all
        worker.process.wait(30)
        lock.release()
        assert bot.waiting == 0

    start_worker(**settings)
    wait_for(rows_reach(engine, 300), 60, "the dead worker's trades, long before the visibility timeout")
    wait_for(
        lambda: rabbitmq.queue_depths(vhost_of(rabbitmq_url)).get(TRADES_QUEUE) == 0, 30, "an idle queue"
    )
    assert journal_counts(engine) == {"rows": 300, "distinct_ids": 300, "closed": 0}
    assert dead_letters(env) == []


def test_a_rabbitmq_restart_while_a_bot_sends_loses_and_doubles_nothing(
    clean, engine, env, rabbitmq_url, start_worker
):
    start_worker(CELERY_BROKER_URL=rabbitmq_url)
    sent: list[bool] = []
    done = threading.Event()
    with journal(rabbitmq_url, env, retry_interval_s=0.5, connect_timeout_s=1.0) as bot:

        def send_stream() -> None:
            for number in range(400):
                sent.append(bot.record_trade(trade("restart", number)).spooled)
                time.sleep(0.005)
            done.set()

        sender = threading.Thread(target=send_stream)
        sender.start()
        try:
            wait_for(lambda: len(sent) >= 50, 30, "the bot to be sending")
            rabbitmq.rabbitmqctl("stop_app")
            wait_for(lambda: any(sent), 30, "a trade kept in the outbox while RabbitMQ is down")
        finally:
            rabbitmq.rabbitmqctl("start_app")
        rabbitmq.rabbitmqctl("await_startup")
        sender.join(120)
        assert done.is_set()
        wait_for(bot.flush, 60, "the outbox sent once RabbitMQ is back", interval=0.5)

    wait_for(rows_reach(engine, 400), 120, "every trade after the restart (the worker reconnects)")
    assert journal_counts(engine) == {"rows": 400, "distinct_ids": 400, "closed": 0}


def test_with_the_trades_queue_deleted_a_trade_goes_to_the_outbox_not_nowhere(
    clean, engine, env, rabbitmq_url, start_worker
):
    with journal(rabbitmq_url, env, retry_interval_s=0.5) as bot:
        assert not bot.record_trade(trade("gone-queue", 0)).spooled  # declares the queue
        rabbitmq.rabbitmqctl("delete_queue", "-p", vhost_of(rabbitmq_url), TRADES_QUEUE)
        unroutable = bot.record_trade(trade("gone-queue", 1))
        assert unroutable.spooled and bot.waiting == 1  # returned as unroutable: kept, not lost
        wait_for(bot.flush, 30, "the outbox sent on a fresh channel, which declares the queue again")
    start_worker(CELERY_BROKER_URL=rabbitmq_url)
    wait_for(rows_reach(engine, 1), 60, "the trade sent after the queue came back")
    assert journal_counts(engine)["distinct_ids"] == 1  # the first went down with the deleted queue


def test_a_trades_queue_rabbitmq_cannot_agree_on_keeps_trades_in_the_outbox(env, rabbitmq_url):
    # An old deployment's classic `trades` queue: RabbitMQ refuses the contract's declaration.
    with Connection(rabbitmq_url) as connection:
        Queue(TRADES_QUEUE, durable=True)(connection.default_channel).declare()
    with journal(rabbitmq_url, env) as bot:
        sent = bot.record_trade(trade("refused", 0))
        assert sent.spooled and bot.waiting == 1
    assert rabbitmq.queue_depths(vhost_of(rabbitmq_url))[TRADES_QUEUE] == 0


def test_a_message_past_rabbitmqs_delivery_limit_ends_in_the_dead_letter_spool(
    clean, env, rabbitmq_url, start_worker, start_beat
):
    with journal(rabbitmq_url, env) as bot:
        poison = bot.record_trade(trade("poison", 0))
    vhost = vhost_of(rabbitmq_url)
    # A consumer that keeps returning the message (as dying workers would), past the limit.
    with Connection(rabbitmq_url) as connection:
        trades = amqp_queues()[0](connection.default_channel)
        returns = 0
        while (message := trades.get(no_ack=False)) is not None:
            message.reject(requeue=True)
            returns += 1
            assert returns <= TRADES_DELIVERY_LIMIT + 1
    assert returns == TRADES_DELIVERY_LIMIT + 1
    assert rabbitmq.queue_depths(vhost)[TRADES_DEAD_LETTER_QUEUE] == 1

    start_worker(CELERY_BROKER_URL=rabbitmq_url)
    start_beat(CELERY_BROKER_URL=rabbitmq_url)
    letters = wait_for(lambda: dead_letters(env), 60, "RabbitMQ's dead letter in dead-letter/")
    assert [letter["payload"]["id"] for letter in letters] == [poison.job_id]
    assert letters[0]["reason"].startswith("poison: RabbitMQ dead-lettered it")
    assert letters[0]["payload"]["body"][0][0]["trade_id"] == "poison-0"
    wait_for(
        lambda: rabbitmq.queue_depths(vhost)[TRADES_DEAD_LETTER_QUEUE] == 0, 30, "an empty dead-letter queue"
    )


def test_a_publish_rabbitmq_nacks_goes_to_the_outbox(clean, engine, env, rabbitmq_url, start_worker):
    vhost = vhost_of(rabbitmq_url)
    with journal(rabbitmq_url, env, retry_interval_s=0.5) as bot:
        assert not bot.record_trade(trade("nacked", 0)).spooled  # declares the queue
        # A full queue that refuses more: RabbitMQ nacks the next publish.
        rabbitmq.rabbitmqctl(
            "set_policy", "-p", vhost, "--apply-to", "queues", "full", f"^{TRADES_QUEUE}$",
            '{"max-length": 1, "overflow": "reject-publish"}',
        )  # fmt: skip
        wait_for(
            lambda: bot.record_trade(trade("nacked", 1)).spooled, 30, "a nacked publish kept in the outbox"
        )
        assert bot.waiting >= 1
        rabbitmq.rabbitmqctl("clear_policy", "-p", vhost, "full")
        start_worker(CELERY_BROKER_URL=rabbitmq_url)
        wait_for(bot.flush, 30, "the outbox sent once RabbitMQ takes messages again", interval=0.5)
    wait_for(rows_reach(engine, 2), 60, "both trades")
    assert journal_counts(engine) == {"rows": 2, "distinct_ids": 2, "closed": 0}


def test_a_broker_blocked_by_a_memory_alarm_cannot_hang_the_bot(
    clean, engine, env, rabbitmq_url, start_worker
):
    with journal(rabbitmq_url, env, retry_interval_s=0.5, connect_timeout_s=1.0) as bot:
        assert not bot.record_trade(trade("blocked", 0)).spooled
        watermark = rabbitmq.rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
        # The whole broker blocks publishers (RabbitMQ's memory alarm): kept short, others share it.
        rabbitmq.rabbitmqctl("set_vm_memory_high_watermark", "0.0001")
        try:
            started = time.monotonic()
            blocked = bot.record_trade(trade("blocked", 1))
            waited = time.monotonic() - started
        finally:
            rabbitmq.rabbitmqctl("set_vm_memory_high_watermark", watermark)
        assert blocked.spooled  # the confirm timed out: kept in the outbox, and the bot went on
        assert waited < 30
        start_worker(CELERY_BROKER_URL=rabbitmq_url)
        wait_for(bot.flush, 60, "the outbox sent once the alarm cleared", interval=0.5)
    wait_for(rows_reach(engine, 2), 60, "both trades")
    assert journal_counts(engine) == {"rows": 2, "distinct_ids": 2, "closed": 0}
