"""Redis faults under the prediction path, with a redis-server of the test's own (so
restarting or filling it disturbs no other test).

The web and the workers keep one Redis connection per thread (`tasks.contract.redis_commands`);
a restart closes them. A full Redis refuses the lane's push.
"""

from __future__ import annotations

import os

import pytest
import redis

from tests.support.apps import web_app
from tests.support.model_zoo import ROWS
from tests.support.processes import Worker, free_port, wait_for
from tests.support.redis_server import RedisServer


@pytest.fixture
def private_redis_env(zoo) -> tuple[int, dict[str, str]]:
    """A port for the test's redis-server, and the environment of a worker using it."""
    port = free_port()
    urls = {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/1",
    }
    return port, {**os.environ, **urls}


def app_on(env: dict[str, str], **overrides):
    """A web app using the broker and results that `env` names."""
    return web_app(
        celery_broker_url=env["CELERY_BROKER_URL"],
        celery_result_backend=env["CELERY_RESULT_BACKEND"],
        **overrides,
    )


def test_the_first_prediction_after_a_redis_restart_answers(private_redis_env, tmp_path, zoo):
    port, env = private_redis_env
    server = RedisServer(tmp_path, port=port)
    worker = None
    try:
        worker = Worker(env, tmp_path, queues="predict", pool="threads").wait_ready()
        worker.wait_models_loaded(env["CELERY_RESULT_BACKEND"], {"xgb.json"})
        client = app_on(env).test_client()
        body = {"model_name": "xgb.json", "features": ROWS.tolist()}
        assert client.post("/api/v1/ml/predict", json=body).status_code == 200

        server.restart()  # a new, empty server on the same port

        response = client.post("/api/v1/ml/predict", json=body)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["predictions"] == pytest.approx(zoo["xgb.json"], abs=1e-6)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def test_a_full_redis_answers_predictions_503_and_keeps_trades_in_the_outbox(
    private_redis_env, tmp_path, zoo
):
    port, env = private_redis_env
    server = RedisServer(tmp_path, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction", port=port)
    try:
        filler = redis.Redis(port=port, db=0)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for number in range(1000):
                filler.set(f"ballast:{number}", b"x" * 100_000)
        client = app_on(env, predict_timeout_s=0.5).test_client()
        body = {"model_name": "xgb.json", "features": ROWS.tolist()}
        for headers in ({}, {"Prefer": "respond-async"}):  # the direct lane, the ml.predict task
            response = client.post("/api/v1/ml/predict", json=body, headers=headers)
            assert response.status_code == 503, response.get_json()
            error = response.get_json()["error"]
            assert error["code"] == "broker_unavailable" and "maxmemory" in error["message"]

        trade = {"symbol": "BTC/USDT", "side": "buy", "amount": 0.5, "entry_price": 100.0}
        kept = client.post("/api/v1/trades", json={**trade, "trade_id": "while-full"})
        assert (kept.status_code, kept.get_json()["status"]) == (202, "spooled")
        filler.flushdb()  # memory again: the outbox goes out first, then the next trade
        client.post("/api/v1/trades", json={**trade, "trade_id": "after"})
        wait_for(lambda: filler.llen("trades") == 2, 30, "both trades on the queue")
    finally:
        server.stop()
