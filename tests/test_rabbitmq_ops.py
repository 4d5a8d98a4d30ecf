"""What operators look at, on a RabbitMQ broker: /readyz, the queue gauges of /metrics, the
dashboard's health panel and the preflight, against the machine's RabbitMQ (a vhost per test),
the real web server and real Celery workers. Redis keeps the results and the prediction lane.
"""

from __future__ import annotations

import re
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import redis
from kombu import Connection

from tasks.contract import LANE_KEY, PREDICT_QUEUE, TRADES_DEAD_LETTER_QUEUE, TRADES_QUEUE
from tasks.web_clients import BrokerDown, BrokerQueues
from tests.conftest import RESULT_URL
from tests.support import rabbitmq
from tests.support.processes import ROOT, WebServer, flask, free_port, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def publish(broker_url: str, queue: str, count: int) -> None:
    """`count` messages into `queue` of the test's own vhost, no worker consuming it."""
    with Connection(broker_url) as connection:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        for number in range(count):
            channel.basic_publish(
                channel.prepare_message(f"trade {number}".encode()), exchange="", routing_key=queue
            )
        channel.close()


def test_readyz_on_rabbitmq_wants_a_live_worker_per_queue(web, workers, zoo, rabbitmq_url):
    server = web(CELERY_BROKER_URL=rabbitmq_url)

    status, body = server.get_json("/readyz", timeout=30)
    assert status == 503
    assert body["checks"]["broker"] == {"ok": True}
    assert body["checks"]["workers"]["error"] == "no live worker consumes predict, trades"

    predict = workers("predict", pool="threads", CELERY_BROKER_URL=rabbitmq_url)
    trades = workers("trades", CELERY_BROKER_URL=rabbitmq_url)

    last: list[dict] = []

    def ready() -> dict | None:
        status, body = server.get_json("/readyz")
        last[:] = [body]
        return body if status == 200 else None

    try:
        body = wait_for(ready, 120, "/readyz to answer 200 on RabbitMQ")
    except AssertionError as error:
        raise AssertionError(f"{error}; the last answer: {last}") from None
    checks = body["checks"]
    assert checks["broker"] == {"ok": True}
    assert checks["workers"]["queues"] == {"predict": [predict.name], "trades": [trades.name]}
    assert checks["models"]["ok"] is True


def test_readyz_names_a_silent_rabbitmq_without_its_password(web):
    port = free_port()
    server = web(CELERY_BROKER_URL=f"amqp://guest:hunter2-secret@127.0.0.1:{port}//")

    status, body = server.get_json("/readyz", timeout=30)
    assert status == 503
    broker = body["checks"]["broker"]
    assert broker["ok"] is False
    assert f"the broker at amqp://guest:***@127.0.0.1:{port}// does not answer" in broker["error"]
    assert body["checks"]["workers"]["ok"] is False
    assert "hunter2-secret" not in str(body)

    html = page(server, "/dashboard/health")
    assert '<tr data-check="queued"><th>messages waiting</th><td><span class="state bad">' in html
    assert "hunter2-secret" not in html


def page(server: WebServer, path: str) -> str:
    status, body = server.get(path)
    assert status == 200, (path, status, body[:500])
    return body.decode()


def queue_gauges(text: str) -> dict[str, float]:
    return {
        queue: float(value)
        for queue, value in re.findall(r'^celery_queue_length\{queue="([^"]+)"\} (\S+)$', text, re.M)
    }


def test_metrics_and_dashboard_count_what_waits_on_rabbitmq(web, rabbitmq_url):
    server = web(CELERY_BROKER_URL=rabbitmq_url)
    publish(rabbitmq_url, TRADES_QUEUE, 7)
    publish(rabbitmq_url, TRADES_DEAD_LETTER_QUEUE, 2)
    # With RabbitMQ as the broker the lane lives in the result backend's Redis.
    redis.Redis.from_url(RESULT_URL).rpush(LANE_KEY, "a", "b", "c")
    vhost = urlparse(rabbitmq_url).path.lstrip("/")
    assert rabbitmq.queue_depths(vhost) == {TRADES_QUEUE: 7, TRADES_DEAD_LETTER_QUEUE: 2}

    metrics = page(server, "/metrics")
    assert "celery_broker_up 1.0" in metrics
    assert queue_gauges(metrics) == {
        PREDICT_QUEUE: 0.0,  # not declared yet (no worker ever started): nothing waits in it
        TRADES_QUEUE: 7.0,
        TRADES_DEAD_LETTER_QUEUE: 2.0,
        LANE_KEY: 3.0,
    }
    # Passive reads only: the web created no queue.
    assert set(rabbitmq.queue_depths(vhost)) == {TRADES_QUEUE, TRADES_DEAD_LETTER_QUEUE}

    html = page(server, "/dashboard/health")
    assert '<tr data-check="queued"><th>messages waiting</th><td><span class="state ok">' in html
    assert f'<code>{TRADES_QUEUE}</code> <span data-queue="{TRADES_QUEUE}">7</span>' in html
    assert f'<span data-queue="{TRADES_DEAD_LETTER_QUEUE}">2</span>' in html
    assert f'<span data-queue="{LANE_KEY}">3</span>' in html

    publish(rabbitmq_url, TRADES_QUEUE, 3)
    assert queue_gauges(page(server, "/metrics"))[TRADES_QUEUE] == 10.0


def test_the_reader_survives_its_connection_being_closed(rabbitmq_url, clean):
    reader = BrokerQueues(rabbitmq_url, RESULT_URL, timeout_s=1.0)
    publish(rabbitmq_url, TRADES_QUEUE, 4)
    assert reader.depths()[TRADES_QUEUE] == 4
    reader.ping()

    vhost = urlparse(rabbitmq_url).path.lstrip("/")
    # What a broker restart does to the kept connection, in this vhost only: the reader
    # learns of it on its next read, which must still answer.
    closed = rabbitmq.rabbitmqctl("close_all_connections", "-p", vhost, "test: the reader must reconnect")
    assert "Closed 1 connections" in closed

    assert reader.depths()[TRADES_QUEUE] == 4
    reader.ping()

    dead = BrokerQueues(f"amqp://guest:guest@127.0.0.1:{free_port()}//", RESULT_URL, timeout_s=0.5)
    with pytest.raises(BrokerDown):
        dead.depths()


def test_preflight_probes_rabbitmq_with_amqp_and_the_results_with_redis(env, tmp_path, rabbitmq_url):
    good = flask(["preflight"], {**env, "CELERY_BROKER_URL": rabbitmq_url}, tmp_path)
    assert "PostgreSQL, RabbitMQ and Redis answer" in good.stdout

    port = free_port()
    down = flask(
        ["preflight"],
        {**env, "CELERY_BROKER_URL": f"amqp://guest:pw-secret@127.0.0.1:{port}//"},
        tmp_path,
        check=False,
    )
    assert down.returncode == 1
    assert f"RabbitMQ does not answer at amqp://guest:***@127.0.0.1:{port}//" in down.stderr
    assert "docker-compose.rabbitmq.yml" in down.stderr
    assert "pw-secret" not in down.stderr and "Traceback" not in down.stderr

    results_port = free_port()
    no_results = flask(
        ["preflight"],
        {
            **env,
            "CELERY_BROKER_URL": rabbitmq_url,
            "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{results_port}/1",
        },
        tmp_path,
        check=False,
    )
    assert no_results.returncode == 1
    assert f"Redis does not answer at redis://127.0.0.1:{results_port}/1" in no_results.stderr
    assert "RabbitMQ does not answer" not in no_results.stderr


def test_make_run_asks_a_configured_rabbitmq_and_starts_no_redis_in_its_place(env, tmp_path):
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "--data-dir", str(tmp_path / "data")],
        env={**env, "CELERY_BROKER_URL": f"amqp://guest:pw-secret@127.0.0.1:{port}//"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert f"RabbitMQ does not answer at amqp://guest:***@127.0.0.1:{port}//" in done.stderr
    assert "private Redis" not in done.stdout + done.stderr
    assert not (tmp_path / "data" / "redis").exists()
    assert "pw-secret" not in done.stderr and "Traceback" not in done.stderr
