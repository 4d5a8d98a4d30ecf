"""A Redis restart under the web's kept connections: the first prediction after it still answers.

The web keeps one Redis connection per request thread (`tasks.replies`); Redis going away
closes them. This runs its own redis-server, so restarting it disturbs no other test.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from config import get_settings
from tests.support.model_zoo import ROWS
from tests.support.processes import Service, Worker, free_port, wait_for


def _redis(port: int, tmp_path) -> Service:
    args = [
        shutil.which("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    server = Service(args, dict(os.environ), tmp_path, tmp_path / f"redis-{port}.log")
    wait_for(
        lambda: (
            subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip()
            == b"PONG"
        ),
        20,
        "redis-server to answer",
    )
    return server


@pytest.fixture
def private_redis_env(tmp_path, monkeypatch, zoo):
    port = free_port()
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", f"redis://127.0.0.1:{port}/1")
    get_settings.cache_clear()
    yield port
    get_settings.cache_clear()


def test_the_first_prediction_after_a_redis_restart_answers(private_redis_env, tmp_path, zoo):
    from web import create_app

    port = private_redis_env
    server = _redis(port, tmp_path)
    worker = None
    try:
        worker = Worker(dict(os.environ), tmp_path, queues="predict", pool="threads").wait_ready()
        worker.wait_models_loaded(os.environ["CELERY_RESULT_BACKEND"], {"xgb.json"})
        client = create_app().test_client()
        body = {"model_name": "xgb.json", "features": ROWS.tolist()}
        assert client.post("/api/v1/ml/predict", json=body).status_code == 200

        server.stop()
        server = _redis(port, tmp_path)  # a new, empty server on the same port

        response = client.post("/api/v1/ml/predict", json=body)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["predictions"] == pytest.approx(zoo["xgb.json"], abs=1e-6)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
