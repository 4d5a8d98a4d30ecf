"""The direct connection, web → predict process, against real workers, each with a
redis-server of its own: every process registers where it listens and deregisters when
it stops, a stalled Redis no longer holds a prediction up, a process killed under a
waiting request costs that request nothing, and a stranger gets nothing out of a port.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid

import numpy as np
import pytest
import redis

from tasks.contract import (
    LaneRequest,
    encode_lane_request,
    frame,
)
from tests.support.apps import web_app
from tests.support.model_zoo import ROWS
from tests.support.processes import Worker, wait_for
from tests.support.processes import direct_registrations as registrations
from tests.support.redis_server import RedisServer

BODY = {"model_name": "xgb.json", "features": ROWS.tolist()}


class Stack:
    """A redis-server of its own; `start(**env)` starts a predict worker on it."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.server = RedisServer(cwd)
        self.env = {
            **os.environ,
            "CELERY_BROKER_URL": self.server.url(0),
            "CELERY_RESULT_BACKEND": self.server.url(1),
        }
        self.results = redis.Redis.from_url(self.server.url(1))
        self.started: list[Worker] = []

    def start(self, concurrency: int = 2, **overrides: str) -> Worker:
        worker = Worker({**self.env, **overrides}, self.cwd, queues="predict", concurrency=concurrency)
        self.started.append(worker)
        worker.wait_ready().wait_models_loaded(self.server.url(1), {"xgb.json"})
        if overrides.get("PREDICT_DIRECT_BIND") != "off":
            worker.wait_direct_registered(self.server.url(1))
        return worker

    def client(self, **overrides):
        return web_app(
            celery_broker_url=self.server.url(0), celery_result_backend=self.server.url(1), **overrides
        ).test_client()

    def stop(self) -> None:
        for worker in self.started:
            worker.stop()
        self.server.stop()


@pytest.fixture
def stack(tmp_path, zoo, database_url):
    own = Stack(tmp_path)
    yield own
    own.stop()


@pytest.fixture(scope="module")
def serving(tmp_path_factory, zoo, database_url):
    """One predict process that every protocol case talks to: none of them may change it."""
    own = Stack(tmp_path_factory.mktemp("serving"))
    own.start(concurrency=1)
    yield own
    own.stop()


def test_each_predict_process_registers_where_it_listens_and_deregisters_when_it_stops(stack, zoo):
    worker = stack.start()
    addresses = {(r.host, r.port) for r in registrations(stack.results).values()}
    assert len(addresses) == 2 and all(host == "127.0.0.1" for host, _ in addresses)

    web = stack.client()
    began = time.monotonic()
    for _ in range(8):  # on kept connections, to each process in turn
        response = web.post("/api/v1/ml/predict", json=BODY)
        assert response.status_code == 200, response.get_json()
        np.testing.assert_allclose(response.get_json()["predictions"], zoo["xgb.json"], atol=1e-6, rtol=0)
    assert time.monotonic() - began < 5, "a kept connection waited for something"

    worker.stop()
    assert registrations(stack.results) == {}


def test_with_redis_stalled_a_prediction_is_answered_at_once_and_stored_once_it_is_back(stack, zoo):
    stack.start()
    web = stack.client()
    assert web.post("/api/v1/ml/predict", json=BODY).status_code == 200  # the registrations are read
    stack.results.client_pause(4000, all=False)  # every write waits 4 s: the lane's push, the outcome's store
    began = time.monotonic()
    response = web.post("/api/v1/ml/predict", json=BODY)
    took = time.monotonic() - began
    assert response.status_code == 200, response.get_json()
    assert took < 2.0, f"the answer waited {took:.1f} s for Redis"
    job_url = f"/api/v1/ml/jobs/{response.get_json()['prediction_id']}"
    wait_for(lambda: web.get(job_url).status_code == 200, 30, "the outcome to be stored")  # 404 till then
    assert web.get(job_url).get_json()["status"] == "succeeded"


def test_a_predict_process_killed_under_a_waiting_request_costs_that_request_nothing(stack, zoo):
    worker = stack.start(concurrency=1)
    web = stack.client(predict_timeout_s=90)
    assert web.post("/api/v1/ml/predict", json=BODY).status_code == 200  # the registration is read
    (process,) = worker.pool_pids()
    os.kill(process, signal.SIGSTOP)  # it takes the next request and never answers
    answered: list = []
    waiting = threading.Thread(target=lambda: answered.append(web.post("/api/v1/ml/predict", json=BODY)))
    waiting.start()
    waiting.join(1.0)
    assert waiting.is_alive(), "the request did not go to the stopped process"
    os.kill(process, signal.SIGKILL)  # Celery starts another, which takes it over Redis's lane

    waiting.join(90)
    assert answered and answered[0].status_code == 200, answered and answered[0].get_json()
    np.testing.assert_allclose(answered[0].get_json()["predictions"], zoo["xgb.json"], atol=1e-6, rtol=0)


def test_a_prediction_that_outlives_its_wait_on_a_connection_is_a_504_whose_job_later_succeeds(stack, zoo):
    worker = stack.start(concurrency=1)
    web = stack.client(predict_timeout_s=0.5)
    (process,) = worker.pool_pids()
    os.kill(process, signal.SIGSTOP)  # connected and sent to, it answers nothing for now
    try:
        began = time.monotonic()
        response = web.post("/api/v1/ml/predict", json=BODY)
        assert response.status_code == 504 and time.monotonic() - began < 3, response.get_json()
    finally:
        os.kill(process, signal.SIGCONT)
    job_url = response.get_json()["error"]["details"]["status_url"]
    wait_for(lambda: web.get(job_url).get_json()["status"] == "succeeded", 30, "the late job to succeed")
    assert web.post("/api/v1/ml/predict", json=BODY).status_code == 200  # on a fresh connection


def test_with_the_direct_connection_off_predictions_travel_over_the_redis_lane(stack, zoo):
    stack.start(PREDICT_DIRECT_BIND="off")
    assert registrations(stack.results) == {}
    response = stack.client().post("/api/v1/ml/predict", json=BODY)
    assert response.status_code == 200, response.get_json()
    np.testing.assert_allclose(response.get_json()["predictions"], zoo["xgb.json"], atol=1e-6, rtol=0)


def _message(job_id: str) -> bytes:
    return encode_lane_request(LaneRequest(job_id, "xgb.json", None, ROWS, time.time() + 60))


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param(lambda key: frame(b"not the key"), id="a wrong key"),
        pytest.param(lambda key: frame(key) + b"\xff\xff\xff\xff" + b"x" * 64, id="a 4 GiB frame"),
        pytest.param(lambda key: frame(key) + frame(b"not a lane message"), id="a malformed request"),
    ],
)
def test_a_connection_that_breaks_the_protocol_is_closed_unserved_and_the_process_serves_on(serving, opening):
    (registration,) = registrations(serving.results).values()
    job_id = str(uuid.uuid4())
    sock = socket.create_connection((registration.host, registration.port), timeout=10)
    try:
        sock.sendall(opening(registration.key.encode()) + frame(_message(job_id)))
        assert sock.recv(1024) == b""  # closed, with no answer
    except ConnectionResetError:
        pass  # closed with bytes unread: the same, said harder
    finally:
        sock.close()
    assert serving.results.get(f"celery-task-meta-{job_id}") is None  # nothing was served

    response = serving.client().post("/api/v1/ml/predict", json=BODY)
    assert response.status_code == 200, response.get_json()
