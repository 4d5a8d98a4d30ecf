"""/api/v1/ml end to end: the real app, Redis and `celery -A tasks worker -Q predict` processes.

The models are written by the libraries' own save functions, and every prediction that
comes back over HTTP is compared with the library's in-process prediction of the file.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery

from config import get_settings
from models import InputMismatch
from tests.conftest import BROKER_DB, BROKER_URL, RESULT_URL
from tests.support.model_zoo import LABELS, ROWS, SEQUENCES, train_lightgbm, version_of
from tests.support.processes import Worker, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def predict_worker(zoo, tmp_path_factory, database_url):
    folder = tmp_path_factory.mktemp("predict-worker")
    worker = Worker(dict(os.environ), folder, queues="predict").wait_ready()
    worker.wait_models_loaded(RESULT_URL, set(zoo))
    yield worker
    worker.stop()


@pytest.fixture
def ml(app, predict_worker):
    return app.test_client()


def post(client, body, **headers):
    return client.post(
        "/api/v1/ml/predict", data=json.dumps(body), content_type="application/json", headers=headers
    )


@pytest.mark.parametrize("name", ["xgb.json", "xgb.ubj", "gbm.txt"])
def test_tree_models_answer_like_their_library(ml, zoo, name):
    response = post(ml, {"model_name": name, "features": ROWS.tolist()})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    np.testing.assert_allclose(body["predictions"], zoo[name], atol=TOLERANCE, rtol=0)
    assert body["model_name"] == name
    assert body["model_version"] == version_of(get_settings().model_dir / name)


@pytest.mark.parametrize("name", ["scripted.pt", "forecaster.pt"])
def test_lstm_models_answer_like_torch(ml, zoo, name):
    response = post(ml, {"model_name": name, "model_type": "lstm", "features": SEQUENCES.tolist()})
    assert response.status_code == 200, response.get_json()
    predictions = np.asarray(response.get_json()["predictions"], dtype=np.float64)
    np.testing.assert_allclose(predictions.reshape(zoo[name].shape), zoo[name], atol=TOLERANCE, rtol=0)
    one = post(ml, {"model_name": name, "features": SEQUENCES[0].tolist()}).get_json()["predictions"]
    np.testing.assert_allclose(np.ravel(one), np.ravel(zoo[name][0]), atol=TOLERANCE, rtol=0)


def test_a_bare_stem_names_a_model(ml, zoo):
    body = post(ml, {"model_name": "gbm", "features": ROWS[:1].tolist()}).get_json()
    assert body["model_name"] == "gbm.txt"


def test_the_model_list_shows_what_the_workers_loaded(ml, zoo):
    def listing() -> dict[str, dict]:
        return {model["name"]: model for model in ml.get("/api/v1/ml/models").get_json()["models"]}

    # Workers report what they loaded; the web reads those reports at most once a second.
    wait_for(lambda: all(model["loaded"] for model in listing().values()), 30, "every model reported loaded")
    models = listing()
    assert set(models) == set(zoo)
    assert models["xgb.json"]["type"] == "xgboost" and models["xgb.json"]["n_features"] == 5
    assert models["scripted.pt"]["type"] == "lstm" and models["forecaster.pt"]["input_kind"] == "sequences"
    one = ml.get("/api/v1/ml/models/gbm.txt").get_json()
    assert one["version"] == version_of(get_settings().model_dir / "gbm.txt") and one["size_mb"] > 0


def test_an_async_prediction_is_polled_to_its_result(ml, zoo):
    response = post(ml, {"model_name": "xgb.json", "features": ROWS.tolist()}, Prefer="respond-async")
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert response.headers["Location"] == response.get_json()["status_url"] == f"/api/v1/ml/jobs/{job_id}"

    done = wait_for(
        lambda: ml.get(f"/api/v1/ml/jobs/{job_id}").get_json()["status"] == "succeeded", 30, "the job"
    )
    assert done
    result = ml.get(f"/api/v1/ml/jobs/{job_id}").get_json()["result"]
    np.testing.assert_allclose(result["predictions"], zoo["xgb.json"], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    "job_id", ["0b7c3c58-8c1e-4df5-9d3a-1d1e2b0f9a77", "not-a-job", "..%2F..%2Fetc%2Fpasswd"]
)
def test_a_job_never_issued_is_a_404(ml, job_id):
    response = ml.get(f"/api/v1/ml/jobs/{job_id}")
    assert response.status_code == 404 and response.get_json()["error"]["code"] in (
        "job_not_found",
        "not_found",
    )


def test_a_failed_async_job_reports_its_error(ml, zoo):
    # The web checks widths only once a worker described the model; send to the worker anyway.
    app = Celery(broker=BROKER_URL, backend=RESULT_URL, set_as_current=False)
    result = app.send_task("ml.predict", args=["xgb.json", [[1.0, 2.0]]], queue="predict")
    with pytest.raises(InputMismatch, match="5 values"):
        result.get(timeout=30)  # bots calling ml.predict by name get the same error as the API
    app.close()


BAD_REQUESTS = [
    ({"model_name": "nope.json", "features": [[1, 2, 3, 4, 5]]}, 404, "model_not_found"),
    ({"model_name": "../../etc/passwd", "features": [[1, 2, 3, 4, 5]]}, 400, "invalid_model_name"),
    ({"model_name": "/etc/passwd", "features": [[1, 2, 3, 4, 5]]}, 400, "invalid_model_name"),
    (
        {"model_name": "xgb.json", "model_type": "lightgbm", "features": [[1, 2, 3, 4, 5]]},
        422,
        "model_type_mismatch",
    ),
    (
        {"model_name": "xgb.json", "model_type": "random_forest", "features": [[1, 2, 3, 4, 5]]},
        422,
        "model_type_mismatch",
    ),
    ({"model_name": "xgb.json", "features": [[1, 2, 3]]}, 422, "input_mismatch"),
    ({"model_name": "xgb.json", "features": [[1, 2, 3, 4, 5], [1, 2]]}, 422, "input_mismatch"),
    ({"model_name": "xgb.json", "features": [["a", "b", "c", "d", "e"]]}, 422, "input_mismatch"),
    ({"model_name": "xgb.json", "features": [[True, 2, 3, 4, 5]]}, 422, "input_mismatch"),
    ({"model_name": "xgb.json", "features": []}, 422, "input_mismatch"),
    ({"model_name": "xgb.json", "features": [1, 2, 3, 4, 5]}, 422, "input_mismatch"),
    ({"model_name": "forecaster.pt", "features": [[[1, 2, 3]]]}, 422, "input_mismatch"),
    ({"model_name": "xgb.json", "features": "1,2,3,4,5"}, 422, "invalid_input"),
    ({"model_name": 7, "features": [[1, 2, 3, 4, 5]]}, 422, "invalid_input"),
    ({"features": [[1, 2, 3, 4, 5]]}, 422, "invalid_input"),
    ({"model_name": "xgb.json", "features": [[1, 2, 3, 4, 5]], "extra": 1}, 422, "invalid_input"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_a_json_error(ml, zoo, body, status, code):
    response = post(ml, body)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == code
    assert (
        "Traceback" not in response.get_data(as_text=True)
        and "/" not in response.get_json()["error"]["message"][:1]
    )


def test_nan_is_a_missing_value_for_trees_but_refused_for_the_lstm(ml, zoo):
    raw = b'{"model_name": "xgb.json", "features": [[NaN, 1, 2, 3, 4]]}'
    assert ml.post("/api/v1/ml/predict", data=raw, content_type="application/json").status_code == 200
    raw = b'{"model_name": "forecaster.pt", "features": [[NaN, 1, 2, 3, 4]]}'
    response = ml.post("/api/v1/ml/predict", data=raw, content_type="application/json")
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "input_mismatch"


def test_malformed_and_huge_bodies(ml):
    response = ml.post("/api/v1/ml/predict", data=b'{"model_name": ', content_type="application/json")
    assert response.status_code == 400
    huge = b'{"model_name": "xgb.json", "features": [' + b"[1,2,3,4,5]," * 900_000 + b"[1,2,3,4,5]]}"
    response = ml.post("/api/v1/ml/predict", data=huge, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "request_entity_too_large"


def test_path_traversal_in_the_url_finds_nothing(ml, zoo):
    for path in (
        "/api/v1/ml/models/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/ml/models/.hidden",
        "/api/v1/ml/models/%2Fetc%2Fpasswd",
    ):
        response = ml.get(path)
        assert response.status_code in (400, 404) and response.is_json


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path(os.environ["MODEL_DIR"]).parent / "pickle-ran"


def test_a_pickle_is_refused_and_never_unpickled(ml, zoo):
    path = get_settings().model_dir / "evil.pkl"
    path.write_bytes(pickle.dumps(Boom()))
    try:
        response = post(ml, {"model_name": "evil.pkl", "features": [[1, 2, 3, 4, 5]]})
        assert response.status_code in (404, 422)
        app = Celery(broker=BROKER_URL, backend=RESULT_URL, set_as_current=False)
        with pytest.raises(Exception, match=r"(?i)pickle|refused|not"):
            app.send_task("ml.predict", args=["evil.pkl", [[1, 2, 3, 4, 5]]], queue="predict").get(timeout=30)
        app.close()
        assert not MARKER.exists()
    finally:
        path.unlink()


def test_a_model_replaced_while_requests_flow_switches_without_a_failed_request(app, zoo, tmp_path):
    worker = Worker(dict(os.environ), tmp_path, queues="predict").wait_ready()
    worker.wait_models_loaded(RESULT_URL, {"gbm.txt"})
    client = app.test_client()
    folder = get_settings().model_dir
    old = zoo["gbm.txt"]
    retrained = train_lightgbm(1 - LABELS)
    new = retrained.predict(ROWS)
    failures: list[object] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = post(client, {"model_name": "gbm.txt", "features": ROWS.tolist()})
            if response.status_code != 200:
                failures.append(response.get_json())
                continue
            body = response.get_json()
            if not (
                np.allclose(body["predictions"], old, atol=TOLERANCE)
                or np.allclose(body["predictions"], new, atol=TOLERANCE)
            ):
                failures.append(body)
            versions.append(body["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(versions) > 20, 30, "requests on the old model")
        staged = folder / "gbm.txt.part"
        retrained.save_model(staged)
        new_version = version_of(staged)
        os.replace(staged, folder / "gbm.txt")
        started = time.monotonic()
        wait_for(lambda: versions and versions[-1] == new_version, 30, "the new version to answer")
        switched_after = time.monotonic() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        worker.stop()
        train_lightgbm().save_model(folder / "gbm.txt")  # the other tests expect the original
    assert failures == []
    assert switched_after < 10


def test_a_model_copied_in_answers_503_with_retry_after_until_it_has_loaded(ml, zoo):
    # A plain copy, not an atomic rename: its modification time is fresh, so the workers
    # wait for it to settle. The request is right and the server not ready: 503, not 422.
    target = get_settings().model_dir / "copied.json"
    shutil.copyfile(get_settings().model_dir / "xgb.json", target)
    statuses: list[int] = []

    def answered():
        response = post(ml, {"model_name": "copied.json", "features": ROWS.tolist()})
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.get_json()["error"]["code"] == "model_loading"
            assert response.headers["Retry-After"] == "1"
        return response.status_code == 200 and response

    try:
        os.utime(target)  # just written
        answer = wait_for(answered, 30, "the copied model to answer")
    finally:
        target.unlink()
    assert statuses[0] == 503 and set(statuses) == {503, 200}
    np.testing.assert_allclose(answer.get_json()["predictions"], zoo["xgb.json"], atol=TOLERANCE, rtol=0)


def test_the_web_process_never_imports_an_ml_library(zoo):
    probe = (
        "import sys; from web import create_app; app = create_app(); c = app.test_client();"
        "assert c.get('/api/v1/ml/models').status_code == 200;"
        "print(sorted(m for m in ('torch', 'xgboost', 'lightgbm') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def _libraries_mapped(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in ("libtorch", "libxgboost", "lib_lightgbm") if name in maps}


def test_models_load_in_the_pool_processes_not_in_the_parent(predict_worker, zoo):
    every = {"libtorch", "libxgboost", "lib_lightgbm"}
    children = predict_worker.pool_pids()
    wait_for(
        lambda: all(_libraries_mapped(pid) == every for pid in children), 60, "every pool process to load"
    )
    assert _libraries_mapped(predict_worker.pid) == set()


def test_a_worker_that_serves_no_lstm_never_imports_torch(tmp_path, zoo):
    trees = tmp_path / "trees"
    trees.mkdir()
    shutil.copy(get_settings().model_dir / "xgb.json", trees)
    worker = Worker({**os.environ, "MODEL_DIR": str(trees)}, tmp_path, queues="predict").wait_ready()
    try:
        wait_for(
            lambda: all("libxgboost" in _libraries_mapped(pid) for pid in worker.pool_pids()),
            60,
            "xgboost loaded",
        )
        assert all("libtorch" not in _libraries_mapped(pid) for pid in worker.pool_pids())
    finally:
        worker.stop()


def test_with_the_broker_down_a_prediction_is_a_503_not_a_hang_unless_a_worker_takes_it_directly(
    predict_worker, zoo
):
    from tasks.contract import BrokerUnavailable
    from tasks.web_clients import PredictionClient
    from tests.support.netfault import TcpProxy

    proxy = TcpProxy("127.0.0.1", 6379)
    proxy.cut()  # a broker address that refuses connections
    urls = {"broker_url": f"redis://127.0.0.1:{proxy.port}/{BROKER_DB}", "result_url": RESULT_URL}
    client = PredictionClient(**urls, direct_connection=False)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        client.predict("xgb.json", ROWS, None, timeout_s=10)
    assert raised.value.status == 503 and time.monotonic() - started < 5
    with pytest.raises(BrokerUnavailable):
        client.submit("xgb.json", ROWS.tolist(), None)

    # The predict worker registered where it listens: the broker is not on the way.
    predict_worker.wait_direct_registered(RESULT_URL)
    payload = PredictionClient(**urls).predict("xgb.json", ROWS, None, timeout_s=10)
    np.testing.assert_allclose(payload["predictions"], zoo["xgb.json"], atol=TOLERANCE, rtol=0)


def test_a_threads_pool_worker_loads_the_models_in_its_own_process_and_serves_them(app, zoo, tmp_path):
    # No fork in a threads pool: the worker process itself loads and predicts.
    worker = Worker(dict(os.environ), tmp_path, queues="predict", pool="threads").wait_ready()
    worker.wait_models_loaded(RESULT_URL, set(zoo))
    try:
        assert _libraries_mapped(worker.pid) == {"libtorch", "libxgboost", "lib_lightgbm"}
        client = app.test_client()
        for _ in range(5):  # whichever worker answers, the numbers are the library's
            body = post(client, {"model_name": "gbm.txt", "features": ROWS.tolist()}).get_json()
            np.testing.assert_allclose(body["predictions"], zoo["gbm.txt"], atol=TOLERANCE, rtol=0)
    finally:
        worker.stop()


def test_a_malformed_direct_lane_message_is_dropped_and_the_lane_keeps_serving(predict_worker, zoo):
    from tasks.contract import LANE_KEY
    from tasks.web_clients.predictions import PredictionClient

    broker = redis.Redis.from_url(BROKER_URL)
    broker.lpush(LANE_KEY, b"not json", b'{"items": 5}', b'{"id": "x", "items": [[1]]}')
    payload = PredictionClient(direct_connection=False).predict("xgb.json", ROWS, None, 30)  # behind them
    np.testing.assert_allclose(payload["predictions"], zoo["xgb.json"], atol=TOLERANCE, rtol=0)
    assert broker.llen(LANE_KEY) == 0


def test_without_the_direct_lane_waiting_predictions_travel_as_ml_predict_tasks(predict_worker, zoo):
    from tasks.web_clients.predictions import PredictionClient

    client = PredictionClient(direct_lane=False)
    payloads = []
    threads = [
        threading.Thread(target=lambda: payloads.append(client.predict("gbm.txt", ROWS, None, 30)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(payloads) == 4
    for payload in payloads:
        np.testing.assert_allclose(payload["predictions"], zoo["gbm.txt"], atol=TOLERANCE, rtol=0)
