"""The direct lane's adaptive batching, against the real Redis: queueing callers share a
model call, a lone caller does not wait for company.

The lane list lives in the results database here, where no predict worker listens.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis

from tasks.contract import (
    LANE_KEY,
    LaneRequest,
    MalformedLaneMessage,
    decode_lane_request,
    encode_lane_request,
)
from tasks.worker.lane_server import BatchLimits, LaneServer
from tests.conftest import RESULT_URL
from tests.support.processes import wait_for


def _message(job_id: str) -> bytes:
    return encode_lane_request(LaneRequest(job_id, "xgb.json", None, np.ones((1, 2)), time.time() + 60))


@pytest.fixture
def lane():
    client = redis.Redis.from_url(RESULT_URL)
    client.delete(LANE_KEY)
    batches: list[list[str]] = []
    served = threading.Condition()

    hold = threading.Event()  # a batch with job "slow" is served once this is set
    hold.set()

    def serve(calls):
        ids = [call.id for call in calls]
        if "slow" in ids:
            hold.wait(30)
        with served:
            batches.append(ids)
            served.notify_all()

    started: list[LaneServer] = []

    def start(busy_wait_s: float, threads: int = 1, limits_of=None) -> LaneServer:
        server = LaneServer(client, serve, 64, busy_wait_s, limits_of).start(threads)
        started.append(server)
        return server

    yield client, batches, start, hold
    hold.set()
    for server in started:
        server.stop()
    client.delete(LANE_KEY)


def test_messages_that_queue_up_wait_for_company_and_share_one_batch(lane):
    client, batches, start, _ = lane
    client.lpush(LANE_KEY, _message("a"), _message("b"))  # two callers queueing
    start(busy_wait_s=2.0)
    wait_for(lambda: client.llen(LANE_KEY) == 0, 10, "the lane to take the first two")
    client.lpush(LANE_KEY, _message("c"))  # arrives while the lane waits for company
    wait_for(lambda: batches, 10, "the batch to be served")
    assert batches == [["a", "b", "c"]]


def test_a_lone_message_is_served_at_once(lane):
    client, batches, start, _ = lane
    start(busy_wait_s=30.0)  # a wait that a lone message must not pay
    client.lpush(LANE_KEY, _message("alone"))
    wait_for(lambda: batches, 10, "the lone message to be served")
    assert batches == [["alone"]]


def test_a_message_arriving_while_another_batch_is_served_waits_for_company(lane):
    client, batches, start, hold = lane
    hold.clear()
    start(busy_wait_s=2.0, threads=2)
    client.lpush(LANE_KEY, _message("slow"))  # one lane thread takes it and is held
    wait_for(lambda: client.llen(LANE_KEY) == 0, 10, "a lane thread to take the slow one")
    client.lpush(LANE_KEY, _message("next"))  # the other thread: a lone message, but the lane is busy
    wait_for(lambda: client.llen(LANE_KEY) == 0, 10, "the other lane thread to take it")
    client.lpush(LANE_KEY, _message("company"))
    wait_for(lambda: batches, 10, "the second batch to be served")
    assert batches == [["next", "company"]]
    hold.set()
    wait_for(lambda: len(batches) == 2, 10, "the slow batch to be served")
    assert batches[1] == ["slow"]


def test_a_lane_message_carries_the_checked_rows_as_they_are():
    rows = np.array([[1.5, np.nan, -2.0], [0.0, 1e300, 3.0]])
    sent = LaneRequest("job-1", "xgb.json", "xgboost", rows, 1e9, explain=True, request_id="req-1")
    received = decode_lane_request(encode_lane_request(sent))
    np.testing.assert_array_equal(received.features, rows)  # NaN and all: bytes, not JSON numbers
    assert received.features.dtype == np.float64
    assert (received.job_id, received.model_name, received.model_type) == ("job-1", "xgb.json", "xgboost")
    assert (received.expires, received.explain, received.request_id) == (1e9, True, "req-1")
    sequences = np.ones((2, 3, 4), dtype=np.float32)
    assert decode_lane_request(
        encode_lane_request(LaneRequest("j", "m.pt", None, sequences, 1.0))
    ).features.shape == (2, 3, 4)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json\n",
        b'{"id": "j"}',  # no rows
        b"[1, 2]\n\x00",
        b'{"id": "j", "model": "m", "dtype": "<f8", "shape": [1, 2], "expires": 1}\n\x00'
        * 3,  # size mismatch
        b'{"id": "j", "model": "m", "dtype": "|O", "shape": [1, 1], "expires": 1}\n' + bytes(8),  # objects
        b'{"id": "j", "model": "m", "dtype": "<f8", "shape": [-1, 1], "expires": 1}\n' + bytes(8),
        b'{"id": "j", "model": "m", "dtype": "<f8", "shape": [1, 1, 1, 1], "expires": 1}\n' + bytes(8),
        b'{"id": "j", "model": 7, "dtype": "<f8", "shape": [1, 1], "expires": 1}\n' + bytes(8),
        b'{"id": "j", "model": "m", "dtype": "<f8", "shape": [1, 1], "expires": "soon"}\n' + bytes(8),
    ],
)
def test_a_lane_message_that_cannot_be_read_is_refused_not_guessed(raw):
    with pytest.raises(MalformedLaneMessage):
        decode_lane_request(raw)


def test_a_malformed_message_is_dropped_and_the_lane_goes_on(lane):
    client, batches, start, _ = lane
    start(busy_wait_s=0.0)
    client.lpush(LANE_KEY, b"garbage")
    client.lpush(LANE_KEY, _message("after"))
    wait_for(lambda: batches, 10, "the next message to be served")
    assert batches == [["after"]]


def _for(model: str, job_id: str) -> bytes:
    return encode_lane_request(LaneRequest(job_id, model, None, np.ones((1, 2)), time.time() + 60))


def test_a_model_takes_at_most_its_max_batch_and_the_rest_goes_back_first_in_line(lane):
    client, batches, start, _ = lane
    limits = {"costly.pt": BatchLimits(max_batch=2, wait_s=0.0), "cheap.json": BatchLimits(64, 0.0)}
    client.lpush(LANE_KEY, *[_for("costly.pt", f"c{n}") for n in range(5)], _for("cheap.json", "x"))
    start(0.0, limits_of=limits.get)
    wait_for(lambda: sum(map(len, batches)) == 6, 10, "every message to be served")
    # Each batch holds at most two of the costly model; nothing is lost, doubled or reordered.
    assert all(sum(job.startswith("c") for job in batch) <= 2 for batch in batches)
    assert [job for batch in batches for job in batch if job.startswith("c")] == [f"c{n}" for n in range(5)]
    assert batches[0] == ["c0", "c1", "x"]


def test_a_models_own_wait_replaces_the_default(lane):
    client, batches, start, _ = lane
    limits = {"eager.json": BatchLimits(max_batch=64, wait_s=0.0)}
    client.lpush(LANE_KEY, _for("eager.json", "a"), _for("eager.json", "b"))  # queueing callers
    start(30.0, limits_of=limits.get)  # the default would wait 30 s for company; this model, not at all
    wait_for(lambda: batches, 5, "the batch to be served without waiting")
    assert batches == [["a", "b"]]
