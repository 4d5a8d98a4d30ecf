"""/healthz and /readyz on the real web server, with real workers, PostgreSQL and Redis."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.model_zoo import version_of
from tests.support.processes import WebServer, free_port, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def ready(server: WebServer) -> dict:
    status, body = server.get_json("/readyz")
    return body if status == 200 else None


def test_ready_when_workers_consume_both_queues_with_the_models_loaded(web, workers, zoo):
    server = web(API_TOKEN="s3cret")
    predict = workers("predict", pool="threads")
    trades = workers("trades")

    body = wait_for(lambda: ready(server), 60, "/readyz to answer 200")
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"] == {"ok": True}
    assert checks["broker"] == {"ok": True}
    assert checks["workers"]["ok"] is True
    assert predict.name in checks["workers"]["queues"]["predict"]
    assert trades.name in checks["workers"]["queues"]["trades"]
    assert predict.name not in checks["workers"]["queues"]["trades"]
    models = get_models_dir()
    assert sorted(checks["models"]["loaded"], key=lambda m: m["name"]) == [
        {"name": name, "version": version_of(models / name)} for name in sorted(zoo)
    ]
    assert checks["models"]["ok"] is True
    assert checks["journal"] == {"ok": True, "held": 0}

    # Health stays open when API_TOKEN guards the API.
    assert server.get("/api/v1/trades")[0] == 401
    assert server.get_json("/healthz") == (200, {"status": "ok"})


def test_not_ready_names_the_queue_no_live_worker_consumes(web, workers, zoo):
    server = web()
    workers("predict", pool="threads")
    trades = workers("trades")
    wait_for(lambda: ready(server), 60, "/readyz to answer 200")

    trades.stop()

    def not_ready() -> dict | None:
        status, body = server.get_json("/readyz")
        return body if status == 503 else None

    body = wait_for(not_ready, 30, "/readyz to answer 503 once the trades worker is gone")
    assert body["status"] == "not ready"
    workers_check = body["checks"]["workers"]
    assert workers_check["ok"] is False
    assert workers_check["queues"]["trades"] == []
    assert workers_check["queues"]["predict"]
    assert "trades" in workers_check["error"]
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_model_dropped_in_is_loaded_and_ready_without_a_prediction(web, workers, zoo, tmp_path, pool):
    # Readiness must not wait for a first prediction: a balancer that acts on /readyz
    # would send none while the new model counts as missing.
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(get_models_dir() / "gbm.txt", models / "first.txt")
    server = web(MODEL_DIR=str(models))
    workers("predict", pool=pool, MODEL_DIR=str(models))
    workers("trades")
    wait_for(lambda: ready(server), 60, "/readyz to answer 200 with the first model")

    staged = models / ".dropped.txt.part"  # hidden: the store never lists it
    shutil.copy(get_models_dir() / "gbm.txt", staged)
    os.replace(staged, models / "dropped.txt")

    def both_loaded() -> list[dict] | None:
        body = ready(server)
        loaded = body["checks"]["models"]["loaded"] if body else []
        return sorted(loaded, key=lambda model: model["name"]) if len(loaded) == 2 else None

    loaded = wait_for(both_loaded, 30, "/readyz to count the dropped-in model as loaded")
    version = version_of(models / "dropped.txt")
    assert loaded == [{"name": "dropped.txt", "version": version}, {"name": "first.txt", "version": version}]
    status, entry = server.get_json("/api/v1/ml/models/dropped.txt")
    assert status == 200 and entry["loaded"] is True and entry["n_features"] == 5


def test_not_ready_says_what_is_down_and_liveness_does_not_care(web, tmp_path, zoo):
    # Nothing listens on these ports; the result backend (model reports) is the real one.
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(get_models_dir() / "gbm.txt", models / "never_loaded.txt")
    dead_database = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/tradebot"
    server = web(
        DATABASE_URL=dead_database,
        CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        MODEL_DIR=str(models),
    )

    status, body = server.get_json("/readyz", timeout=30)
    assert status == 503
    assert body["status"] == "not ready"
    checks = body["checks"]
    assert checks["database"]["ok"] is False and "database" in checks["database"]["error"]
    assert checks["broker"]["ok"] is False and "broker" in checks["broker"]["error"]
    assert checks["workers"]["ok"] is False
    assert checks["workers"]["queues"] == {"predict": [], "trades": []}
    assert checks["models"]["ok"] is False
    assert checks["models"]["missing"] == ["never_loaded.txt"]
    assert checks["models"]["loaded"] == []

    assert server.get_json("/healthz") == (200, {"status": "ok"})


def get_models_dir() -> Path:
    return Path(os.environ["MODEL_DIR"])
