"""gunicorn (gunicorn.conf.py) drains on SIGTERM: requests in flight finish before it exits."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request

import numpy as np
import pytest

from tasks.contract import LANE_KEY
from tests.support.model_zoo import ROWS
from tests.support.processes import WebServer, Worker, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_sigterm_lets_the_request_in_flight_finish(env, tmp_path, database_url, clean, broker, zoo):
    # No predict worker yet: the synchronous prediction waits inside gunicorn.
    server = WebServer(
        {**env, "PREDICT_TIMEOUT_S": "120", "WEB_GRACEFUL_TIMEOUT_S": "120"}, tmp_path, workers=2
    ).wait_ready()
    worker = None
    try:
        answer: dict = {}

        def predict() -> None:
            body = json.dumps({"model_name": "xgb.json", "features": ROWS.tolist()}).encode()
            request = urllib.request.Request(
                server.url + "/api/v1/ml/predict", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=180) as response:
                answer.update(status=response.status, body=json.loads(response.read()))

        client = threading.Thread(target=predict)
        client.start()

        def queued() -> bool:
            # Waiting predictions travel over the direct lane (a Redis broker), else the queue.
            return broker.llen(LANE_KEY) + broker.llen("predict") > 0

        wait_for(queued, 30, "the prediction to be queued")

        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Handling signal: term" in server.log(), 30, "gunicorn to take the SIGTERM")
        wait_for(lambda: "Worker exiting" in server.log(), 30, "the idle gunicorn worker to exit")
        assert server.alive(), "gunicorn exited with a request in flight"

        worker = Worker(env, tmp_path, queues="predict", pool="threads").wait_ready()
        client.join(120)
        assert answer["status"] == 200
        np.testing.assert_allclose(answer["body"]["predictions"], zoo["xgb.json"], atol=1e-6, rtol=0)
        assert server.process.wait(60) == 0
    finally:
        server.stop()
        if worker is not None:
            worker.stop()
