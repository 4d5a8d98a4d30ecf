"""Upgrading from a classic `trades` queue on RabbitMQ: left by an older deployment, or declared
first by a bot with Celery's defaults. RabbitMQ refuses the contract's declaration of it; the
workers stay up and say so, and `flask --app web queues migrate` moves every message into the
contract's quorum queue. The machine's RabbitMQ, a vhost per test, real workers and CLI."""

from __future__ import annotations

import signal
import subprocess

import pytest
from celery import Celery
from kombu import Connection, Producer

from tasks.contract import MIGRATE_COMMAND, RECORD_TASK, TRADES_QUEUE, queue_disagreement
from tasks.web_clients.queue_migration import hold_the_vhost
from tests.bots.send_task_bot import trade
from tests.support import rabbitmq
from tests.support.journal import journal_counts, rows_reach
from tests.support.processes import BIN, ROOT, flask, free_port, wait_for
from tests.test_rabbitmq_journal import amqp_env, vhost_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STAGING = f"{TRADES_QUEUE}.migrating"


def send_with_celerys_defaults(url: str, count: int) -> None:
    """A bot that knows the task's name and queue only: Celery declares a classic `trades`."""
    bot = Celery(broker=url, set_as_current=False)
    bot.conf.update(broker_read_url=url, broker_write_url=url)
    try:
        for number in range(count):
            bot.send_task(RECORD_TASK, args=[trade("classic", number)], queue=TRADES_QUEUE)
    finally:
        bot.close()


def test_a_classic_trades_queue_leaves_the_worker_up_and_says_how_to_migrate_it(
    clean, engine, env, rabbitmq_url, start_worker, web
):
    send_with_celerys_defaults(rabbitmq_url, 50)
    amqp = amqp_env(env, rabbitmq_url)

    worker = start_worker(CELERY_BROKER_URL=rabbitmq_url)  # answers its ping: it did not exit
    said = wait_for(lambda: "x-dead-letter-exchange" in worker.log() and worker.log(), 30, "its error")
    assert "queue 'trades' was declared otherwise" in said and MIGRATE_COMMAND in said

    preflight = flask(["preflight"], amqp, ROOT, check=False)
    assert preflight.returncode == 1
    assert "'trades'" in preflight.stderr and "x-dead-letter-exchange" in preflight.stderr
    assert MIGRATE_COMMAND in preflight.stderr

    server = web(CELERY_BROKER_URL=rabbitmq_url)
    status, ready = server.get_json("/readyz")
    assert status == 503
    assert ready["checks"]["broker"]["disagreeing"] == [
        {"queue": TRADES_QUEUE, "argument": "x-dead-letter-exchange", "fix": MIGRATE_COMMAND}
    ]
    assert rabbitmq.queue_depths(vhost_of(rabbitmq_url))[TRADES_QUEUE] == 50  # stranded, not lost

    migrated = flask(["queues", "migrate"], amqp, ROOT)
    assert "trades: now the contract's queue; 50 messages moved into it" in migrated.stdout

    wait_for(rows_reach(engine, 50), 60, "the worker consuming the migrated queue")
    assert journal_counts(engine) == {"rows": 50, "distinct_ids": 50, "closed": 0}
    assert worker.alive()
    wait_for(lambda: server.get_json("/readyz")[1]["checks"]["broker"]["ok"], 30, "the broker check ready")


def test_a_migration_killed_twice_and_run_again_moves_every_message_exactly_once(env, rabbitmq_url):
    count = 3000
    with Connection(rabbitmq_url) as connection:
        channel = connection.channel()
        channel.queue_declare(queue=TRADES_QUEUE, durable=True)  # classic, Celery's default
        producer = Producer(channel)
        for number in range(count):
            producer.publish(str(number), routing_key=TRADES_QUEUE, delivery_mode=2, headers={"n": number})
    amqp = amqp_env(env, rabbitmq_url)

    # Killed in the middle of each hop: into staging, then out of it into the contract's queue.
    for hop in (f"{TRADES_QUEUE} -> {STAGING}", f"{STAGING} -> {TRADES_QUEUE}"):
        run = subprocess.Popen(
            [str(BIN / "flask"), "--app", "web", "queues", "migrate", "--batch", "50"],
            env=amqp, cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            for line in run.stdout:
                if hop in line and int(line.rsplit(":", 1)[1].split()[0]) >= 500:
                    run.send_signal(signal.SIGKILL)
                    break
        finally:
            run.wait(30)
        assert run.returncode == -signal.SIGKILL, f"the run ended before the kill in {hop}"

    flask(["queues", "migrate"], amqp, ROOT)

    depths = rabbitmq.queue_depths(vhost_of(rabbitmq_url))
    assert STAGING not in depths
    with Connection(rabbitmq_url) as connection:
        assert queue_disagreement(connection, TRADES_QUEUE) is None  # the contract's quorum queue now
        channel = connection.channel()
        bodies = []
        while (message := channel.basic_get(TRADES_QUEUE, no_ack=True)) is not None:
            bodies.append(int(message.body))
            headers = message.properties["application_headers"]
            assert headers == {"n": bodies[-1], "x-delivery-count": 0}  # as sent, and delivered first time
    assert sorted(bodies) == list(range(count))  # nothing lost, nothing doubled


def test_a_second_migration_at_once_is_refused(env, rabbitmq_url):
    amqp = amqp_env(env, rabbitmq_url)
    with Connection(rabbitmq_url) as holder:
        hold_the_vhost(holder)  # another run holds the vhost
        refused = flask(["queues", "migrate"], amqp, ROOT, check=False)
    assert refused.returncode == 1 and "another `queues migrate`" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = flask(["queues", "migrate"], amqp, ROOT)
    assert f"{TRADES_QUEUE}: nothing to move" in done.stdout


def test_a_migration_against_a_broker_that_does_not_answer_says_so(env):
    nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    refused = flask(["queues", "migrate"], amqp_env(env, nobody), ROOT, check=False)
    assert refused.returncode == 1 and "Connection refused" in refused.stderr
    assert "Traceback" not in refused.stderr and "run the command again" in refused.stderr
