"""Predictions that outlive their wait: a 504 whose job later succeeds, and expiry after PREDICT_EXPIRES_S.

No predict worker runs in this module until the test starts one, so the wait runs out for real.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.support.apps import web_app
from tests.support.model_zoo import ROWS
from tests.support.processes import Worker, wait_for


def test_a_prediction_that_outlives_its_wait_is_a_504_whose_job_later_succeeds(database_url, zoo, tmp_path):
    client = web_app(predict_timeout_s=0.5).test_client()
    response = client.post("/api/v1/ml/predict", json={"model_name": "xgb.json", "features": ROWS.tolist()})
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert error["code"] == "prediction_timeout"
    job_url = error["details"]["status_url"]
    assert job_url == f"/api/v1/ml/jobs/{error['details']['job_id']}"
    assert client.get(job_url).get_json()["status"] == "pending"

    worker = Worker(dict(os.environ), tmp_path, queues="predict").wait_ready()
    try:
        wait_for(
            lambda: client.get(job_url).get_json()["status"] == "succeeded", 60, "the late job to succeed"
        )
    finally:
        worker.stop()
    result = client.get(job_url).get_json()["result"]
    np.testing.assert_allclose(result["predictions"], zoo["xgb.json"], atol=1e-6, rtol=0)


def test_predictions_no_worker_started_within_predict_expires_s_fail_as_expired(app, zoo, tmp_path):
    from tasks.web_clients.predictions import PredictionClient, PredictionTimeout

    predictions = PredictionClient(expires_s=1)
    sent_at = time.time()
    with pytest.raises(PredictionTimeout) as timed_out:  # the direct lane, nobody serving it
        predictions.predict("xgb.json", ROWS, None, timeout_s=0.2)
    queued = predictions.submit("xgb.json", ROWS.tolist(), None)  # the ml.predict task
    wait_for(lambda: time.time() > sent_at + 1.5, 5, "both predictions to expire")

    worker = Worker(dict(os.environ), tmp_path, queues="predict").wait_ready()
    client = app.test_client()
    try:
        for job_id in (timed_out.value.job_id, queued):
            url = f"/api/v1/ml/jobs/{job_id}"
            wait_for(lambda u=url: client.get(u).get_json()["status"] == "failed", 120, f"{job_id} to fail")
            error = client.get(url).get_json()["error"]
            assert (error["status"], error["code"]) == (504, "prediction_expired")
        fresh = client.post("/api/v1/ml/predict", json={"model_name": "xgb.json", "features": ROWS.tolist()})
        assert fresh.status_code == 200, fresh.get_json()
    finally:
        worker.stop()
