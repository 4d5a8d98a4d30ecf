"""The prediction log's settings and its outage, each on a predict worker of its own
(one model, so it loads fast): PREDICTION_LOG_MAX_ROWS, PREDICTION_LOG_FEATURES=off,
PREDICTION_LOG=off, and the database going away under a worker that keeps predicting.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db import Spool
from tests.conftest import RESULT_URL
from tests.support.apps import web_app
from tests.support.metrics import read_files, value
from tests.support.model_zoo import ROWS
from tests.support.netfault import TcpProxy
from tests.support.processes import Beat, Worker, wait_for
from tests.test_prediction_log import logged, post


def worker_on(model_dir: Path, folder: Path, **settings: str) -> Worker:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODEL_DIR": str(model_dir), "SPOOL_DIR": str(folder / "spool"), **settings}
    worker = Worker(env, folder, queues="predict,trades", concurrency=1).wait_ready()
    return worker.wait_models_loaded(RESULT_URL, {"xgb.json"})


@pytest.fixture
def one_model(zoo, tmp_path) -> Path:
    folder = tmp_path / "one-model"
    folder.mkdir()
    shutil.copy2(Path(os.environ["MODEL_DIR"]) / "xgb.json", folder / "xgb.json")
    return folder


def test_features_are_capped_by_max_rows_and_kept_out_with_features_off(clean, one_model, tmp_path):
    client = web_app(model_dir=one_model).test_client()
    worker = worker_on(one_model, tmp_path / "capped", PREDICTION_LOG_MAX_ROWS="2")
    try:
        answer = post(client, {"model_name": "xgb.json", "features": ROWS.tolist()}).get_json()
        entry = logged(client, answer["prediction_id"])
        assert (
            entry["rows"] == 4
            and len(entry["predictions"]) == 4
            and entry["features"]
            == [
                [None if value != value else value for value in row]
                for row in ROWS[:2].tolist()  # NaN: null
            ]
        )
    finally:
        worker.stop()

    worker = worker_on(one_model, tmp_path / "no-features", PREDICTION_LOG_FEATURES="off")
    try:
        answer = post(client, {"model_name": "xgb.json", "features": ROWS[:1].tolist()}).get_json()
        entry = logged(client, answer["prediction_id"])
        assert entry["features"] is None and entry["rows"] == 1
    finally:
        worker.stop()


def test_prediction_log_off_logs_nothing(clean, engine, one_model, tmp_path):
    client = web_app(model_dir=one_model).test_client()
    worker = worker_on(one_model, tmp_path / "off", PREDICTION_LOG="off")
    try:
        answers = [post(client, {"model_name": "xgb.json", "features": ROWS.tolist()}) for _ in range(5)]
        assert all(answer.status_code == 200 and answer.get_json()["prediction_id"] for answer in answers)
    finally:
        worker.stop()  # a warm shutdown writes what a writer holds: nothing may be left to write
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM prediction_log")) == 0


def test_with_the_database_down_predictions_answer_and_their_log_is_spooled_then_replayed(
    clean, engine, one_model, tmp_path
):
    proxy = TcpProxy("127.0.0.1", make_url(os.environ["DATABASE_URL"]).port or 5432)
    through_proxy = {
        "DATABASE_URL": make_url(os.environ["DATABASE_URL"])
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(False),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    folder = tmp_path / "outage"
    client = web_app(model_dir=one_model).test_client()
    worker = worker_on(one_model, folder, **through_proxy)
    beat = Beat({**os.environ, "SPOOL_DIR": str(folder / "spool"), **through_proxy}, folder)
    replay = Spool(folder / "spool" / "replay")
    try:
        proxy.cut()
        ids = []
        for _ in range(20):
            response = post(client, {"model_name": "xgb.json", "features": ROWS.tolist()})
            assert response.status_code == 200  # the log's outage is not the prediction's
            ids.append(response.get_json()["prediction_id"])
        wait_for(lambda: replay.waiting() >= 20, 60, "the 20 log entries in the spool")
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM prediction_log")) == 0

        proxy.restore()
        wait_for(lambda: replay.waiting() == 0, 60, "the spool replayed")
        with engine.connect() as connection:
            stored = connection.scalars(text("SELECT prediction_id FROM prediction_log")).all()
        assert sorted(stored) == sorted(ids)  # each once
        counters = read_files(tmp_path / "metrics")
        assert value(counters, "journal_spooled_entries_total") == 20
        assert value(counters, "prediction_log_entries_written_total", outcome="inserted") == 20
    finally:
        beat.stop()
        worker.stop()
        proxy.close()
