"""A V2 inference that outlives PREDICT_TIMEOUT_S: a 504 in the protocol's shape naming the job.

No predict worker runs in this module, so the wait runs out for real (as in test_ml_timeout).
"""

from __future__ import annotations

import re

from tests.support.apps import web_app
from tests.support.model_zoo import ROWS


def test_an_infer_that_outlives_its_wait_is_a_504_naming_the_job(database_url, zoo):
    client = web_app(predict_timeout_s=0.5).test_client()
    body = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": ROWS[:1].ravel().tolist()}]}
    answer = client.post("/v2/models/xgb.json/infer", json=body)
    assert answer.status_code == 504
    error = answer.get_json()
    assert set(error) == {"error"} and "no answer within 0.5s" in error["error"]
    job_id = re.search(r"job_id ([0-9a-f-]{36})", error["error"]).group(1)
    # The job goes on, and /api/v1 knows it.
    assert client.get(f"/api/v1/ml/jobs/{job_id}").get_json()["status"] == "pending"
