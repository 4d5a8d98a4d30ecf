"""Predictions with RabbitMQ as the broker: `ml.predict` tasks travel over RabbitMQ, the
synchronous lane and every outcome stay in the result backend's Redis."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.web_clients.predictions import PredictionClient
from tests.conftest import RESULT_URL
from tests.support.http import call
from tests.support.model_zoo import ROWS
from tests.support.processes import Worker, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")

TOLERANCE = 1e-6


@pytest.fixture
def predict_worker(zoo, env, tmp_path, rabbitmq_url):
    worker = Worker({**env, "CELERY_BROKER_URL": rabbitmq_url}, tmp_path, queues="predict").wait_ready()
    worker.wait_models_loaded(RESULT_URL, set(zoo))
    yield worker
    worker.stop()


def test_sync_and_async_predictions_through_the_web_over_rabbitmq(
    zoo, predict_worker, rabbitmq_url, start_web
):
    web = start_web(CELERY_BROKER_URL=rabbitmq_url)
    body = {"model_name": "xgb.json", "features": ROWS.tolist()}

    now = call(f"{web.url}/api/v1/ml/predict", "POST", body)
    assert now.status == 200, now.body
    np.testing.assert_allclose(now.json()["predictions"], zoo["xgb.json"], atol=TOLERANCE, rtol=0)

    later = call(f"{web.url}/api/v1/ml/predict", "POST", body, {"Prefer": "respond-async"})
    assert later.status == 202, later.body
    status_url = f"{web.url}{later.json()['status_url']}"
    done = wait_for(
        lambda: (job := call(status_url).json())["status"] == "succeeded" and job, 30, "the async job"
    )
    np.testing.assert_allclose(done["result"]["predictions"], zoo["xgb.json"], atol=TOLERANCE, rtol=0)


def test_waiting_predictions_travel_as_ml_predict_tasks_over_rabbitmq(zoo, predict_worker, rabbitmq_url):
    client = PredictionClient(rabbitmq_url, RESULT_URL, direct_lane=False)
    payload = client.predict("gbm.txt", ROWS, None, 30)
    np.testing.assert_allclose(payload["predictions"], zoo["gbm.txt"], atol=TOLERANCE, rtol=0)
