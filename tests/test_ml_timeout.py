"""A synchronous prediction that outlives PREDICT_TIMEOUT_S: 504 with a job id that later succeeds.

No predict worker runs in this module until the test starts one, so the wait runs out for real.
"""

from __future__ import annotations

import os

import numpy as np

from config import get_settings
from tests.support.model_zoo import ROWS
from tests.support.processes import Worker, wait_for


def test_a_prediction_that_outlives_its_wait_is_a_504_whose_job_later_succeeds(
    app, zoo, monkeypatch, tmp_path
):
    client = app.test_client()
    monkeypatch.setenv("PREDICT_TIMEOUT_S", "0.5")
    get_settings.cache_clear()
    try:
        response = client.post(
            "/api/v1/ml/predict", json={"model_name": "xgb.json", "features": ROWS.tolist()}
        )
    finally:
        monkeypatch.delenv("PREDICT_TIMEOUT_S")
        get_settings.cache_clear()
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
