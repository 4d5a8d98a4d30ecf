"""A Redis broker restarted, or its connection lost, while a trades worker takes and runs
messages: nothing waits for the visibility timeout (issue 26, bench/soak_outages.py)."""

from __future__ import annotations

import uuid
from queue import Empty

import pytest
import redis
from kombu import Connection
from sqlalchemy.engine import make_url

from tasks.client import TradeJournal
from tasks.contract import REDIS_TRANSPORT
from tests.bots.send_task_bot import trade
from tests.support.journal import journal_counts, rows_reach
from tests.support.netfault import TcpProxy
from tests.support.processes import Worker, wait_for
from tests.support.redis_server import RedisServer

GROUPS, GROUP_SIZE = 10, 5


def answers_again(worker: Worker) -> bool:
    assert worker.alive(), worker.log()[-3000:]
    try:
        worker.wait_ready(timeout=2)
    except (redis.RedisError, AssertionError):  # the first pings may meet the old connection
        return False
    return True


def test_batches_waiting_for_a_pool_process_are_run_after_a_broker_restart(
    clean, engine, env, start_worker, start_beat, tmp_path
):
    # Celery's consumer, on losing the broker, discards every job its prefork pool has not
    # started ("the broker will redeliver them"): on Redis their messages stayed
    # unacknowledged, renewed by no one, until the visibility timeout (300 s here).
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    database = TcpProxy("127.0.0.1", make_url(env["DATABASE_URL"]).port or 5432)
    overrides = {
        "CELERY_BROKER_URL": server.url(0),
        "CELERY_RESULT_BACKEND": server.url(1),
        "DATABASE_URL": make_url(env["DATABASE_URL"])
        .set(host="127.0.0.1", port=database.port)
        .render_as_string(False),
        "BROKER_VISIBILITY_TIMEOUT_S": "300",
    }
    journal = TradeJournal(server.url(0), tmp_path / "bot")
    broker = redis.Redis(port=server.port)
    try:
        worker = start_worker(**overrides)
        start_beat(**overrides)
        database.stall()  # both pool processes hang on their first batch; the rest queue behind
        for group in range(GROUPS):
            for number in range(group * GROUP_SIZE, (group + 1) * GROUP_SIZE):
                journal.record_trade(trade("restart", number))
            taken = (group + 1) * GROUP_SIZE
            wait_for(lambda taken=taken: broker.hlen("unacked") >= taken, 30, f"{taken} trades taken")

        server.restart()  # a clean shutdown and start on its append-only file
        wait_for(lambda: answers_again(worker), 60, "the worker back on the restarted broker")
        database.cut()  # the silent connections end; new ones reach the database
        database.resume()
        database.restore()

        everything = GROUPS * GROUP_SIZE
        wait_for(rows_reach(engine, everything), 90, "every trade, long before the visibility timeout")
        wait_for(lambda: broker.hlen("unacked") == 0, 30, "every message acknowledged")
        assert journal_counts(engine) == {"rows": everything, "distinct_ids": everything, "closed": 0}
    finally:
        journal.close()
        database.close()
        server.stop()


def test_a_take_whose_reply_was_lost_is_delivered_by_the_next_one(tmp_path):
    # The take script ran (its messages recorded as unacknowledged) and the link broke
    # before its reply came back: a consumer on a new connection gets those messages,
    # where they used to wait, held by no one, for the visibility timeout.
    server = RedisServer(tmp_path)
    proxy = TcpProxy("127.0.0.1", server.port)
    broker = redis.Redis(port=server.port)
    url, options = f"redis://127.0.0.1:{proxy.port}/0", {"socket_timeout": 0.5}
    name = f"lost-reply-{uuid.uuid4().hex[:8]}"
    try:
        with Connection(url, transport=REDIS_TRANSPORT, transport_options=options) as connection:
            queue = connection.SimpleQueue(name)
            queue.put({"n": -1})
            queue.get(timeout=5).ack()  # the take script is loaded in Redis
            for number in range(3):
                queue.put({"n": number})
            proxy.hold_replies()
            with pytest.raises(redis.TimeoutError):
                queue.consumer.channel._take_and_deliver()  # what a worker runs once BLMOVE wakes it
            assert (broker.llen(name), broker.hlen("unacked")) == (0, 3)  # taken, recorded, unseen
            proxy.cut()
            proxy.resume()
            proxy.restore()

        with Connection(url, transport=REDIS_TRANSPORT, transport_options=options) as connection:
            queue = connection.SimpleQueue(name)
            delivered = []
            for _ in range(3):
                try:
                    message = queue.get(timeout=5)
                except Empty:
                    break
                delivered.append(message.payload["n"])
                message.ack()
            queue.close()
        assert sorted(delivered) == [0, 1, 2]
        assert broker.hlen("unacked") == 0
    finally:
        proxy.close()
        server.stop()
