"""A broker that answers but refuses writes, produced for real on a redis-server of the
test's own: NOREPLICAS (`min-replicas-to-write` unmet) and READONLY (a replica, as after
a failover). Every path treats it as the broker being unavailable: the bot client and
`POST /api/v1/trades` keep trades in their outbox, predictions answer 503, and no
worker or beat exits; once writes are taken again, everything arrives, once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tasks.client import TradeJournal
from tests.bots.send_task_bot import trade
from tests.support.apps import web_app
from tests.support.journal import journal_counts, rows_reach
from tests.support.model_zoo import ROWS
from tests.support.processes import Beat, Worker, wait_for
from tests.support.redis_server import RedisServer


@pytest.fixture
def private_broker(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def refuse_writes(tmp_path) -> Iterator[Callable[[RedisServer, str], Callable[[], None]]]:
    """Make a server refuse writes with a given reply; returns what makes it take them again."""
    masters: list[RedisServer] = []

    def refuse(server: RedisServer, refusal: str) -> Callable[[], None]:
        client = redis.Redis(port=server.port)
        if refusal == "NOREPLICAS":
            client.config_set("min-replicas-to-write", 1)
            return lambda: client.config_set("min-replicas-to-write", 0)
        masters.append(RedisServer(tmp_path))  # an empty master: the server becomes its replica
        client.replicaof("127.0.0.1", masters[-1].port)
        return lambda: client.replicaof("NO", "ONE")

    yield refuse
    for master in masters:
        master.stop()


@pytest.mark.parametrize("refusal", ["NOREPLICAS", "READONLY"])
def test_a_broker_refusing_writes_loses_nothing_and_stops_no_worker(
    clean, engine, env, tmp_path, private_broker, refuse_writes, refusal, zoo
):
    on_broker = {
        **env,
        "CELERY_BROKER_URL": private_broker.url(0),
        "CELERY_RESULT_BACKEND": private_broker.url(1),
    }
    worker = Worker(on_broker, tmp_path).wait_ready()
    beat = Beat(on_broker, tmp_path)
    journal = TradeJournal(private_broker.url(0), tmp_path / "bot", retry_interval_s=0.2)
    web = web_app(
        celery_broker_url=private_broker.url(0),
        celery_result_backend=private_broker.url(1),
        spool_dir=tmp_path / "web-spool",  # the web's outbox
    ).test_client()
    try:
        for number in range(10):
            journal.record_trade(trade("before", number))
        wait_for(rows_reach(engine, 10), 30, "the trades sent while the broker took writes")

        take_writes_again = refuse_writes(private_broker, refusal)
        sent = [journal.record_trade(trade("during", number)) for number in range(10)]
        sent.append(journal.update_trade("before-0", closed=True, exit_price=40_100.0, realized_pnl=2.0))
        assert all(enqueued.spooled for enqueued in sent)  # kept in the bot's outbox
        kept = web.post("/api/v1/trades", json=trade("http", 0))
        assert (kept.status_code, kept.get_json()["status"]) == (202, "spooled")
        body = {"model_name": "xgb.json", "features": ROWS.tolist()}
        for headers in ({}, {"Prefer": "respond-async"}):  # the direct lane, the ml.predict task
            refused = web.post("/api/v1/ml/predict", json=body, headers=headers)
            assert (refused.status_code, refused.get_json()["error"]["code"]) == (503, "broker_unavailable")

        # The worker pauses and asks again; it does not exit, nor does beat.
        wait_for(lambda: worker.log().count("consuming paused") >= 3, 60, "the worker to ask three times")
        assert worker.alive() and beat.alive()

        take_writes_again()
        wait_for(lambda: journal.waiting == 0, 30, "the bot's outbox sent")
        web.post("/api/v1/trades", json=trade("http", 1))  # sends the web's outbox first
        wait_for(rows_reach(engine, 22, closed=1), 60, "every trade kept during the refusal")
        assert worker.alive() and beat.alive()
    finally:
        journal.close()
        beat.stop()
        worker.stop()
    assert journal_counts(engine) == {"rows": 22, "distinct_ids": 22, "closed": 1}
    assert "Unrecoverable error" not in worker.log()
    assert not (Path(env["SPOOL_DIR"]) / "dead-letter").exists()
