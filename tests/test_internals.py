"""The fenced modules against the real libraries: each private internal still does what
the fence says, and a library release other than the one it was written for stops the
import with an error that names the module."""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import sys
import uuid
from pathlib import Path

import numpy
import pytest
import redis
import xgboost
from celery import Celery, states
from celery_batches.trace import apply_batches_task
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

import models.xgboost_native
from models import ModelLoading
from tasks.contract import REDIS_TRANSPORT, error_result
from tasks.internals import UnsupportedRelease, written_for
from tasks.internals.celery_results import result_meta
from tasks.internals.kombu_redis import Transport
from tasks.internals.process_exit import at_exit
from tests.conftest import BROKER_URL, RESULT_URL
from tests.support.journal import rows_reach
from tests.support.processes import wait_for

FENCES = {
    "tasks.internals.kombu_redis": "kombu",
    "tasks.internals.celery_batches": "celery-batches",
    "tasks.internals.celery_results": "celery",
}


@pytest.mark.parametrize("module", sorted(FENCES))
def test_a_fence_refuses_a_release_it_was_not_written_for(module):
    importlib.import_module(module)  # the installed release passes its own check
    with pytest.raises(UnsupportedRelease) as refused:
        written_for(FENCES[module], "0.1", module)
    assert module in str(refused.value)
    assert FENCES[module] in str(refused.value)


def test_the_xgboost_fence_refuses_another_release(monkeypatch):
    monkeypatch.setattr(xgboost, "__version__", "9.0.0")
    with pytest.raises(ImportError, match=r"models\.xgboost_native .* 9\.0\.0"):
        importlib.reload(models.xgboost_native)
    monkeypatch.undo()
    importlib.reload(models.xgboost_native)


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "binary:logistic"},
        {"objective": "reg:squarederror"},
        {"objective": "multi:softprob", "num_class": 3},
    ],
    ids=["binary", "regression", "multiclass"],
)
def test_xgboost_dense_prediction_equals_inplace_predict(params):
    rng = numpy.random.default_rng(7)
    features = rng.normal(size=(300, 5))
    labels = rng.integers(0, params.get("num_class", 2), size=300)
    booster = xgboost.train({**params, "max_depth": 4}, xgboost.DMatrix(features, label=labels), 20)
    for rows in (features[:1], features[:64], numpy.where(features[:10] > 1, numpy.nan, features[:10])):
        expected = booster.inplace_predict(rows, missing=numpy.nan)
        numpy.testing.assert_array_equal(models.xgboost_native.predict_dense(booster, rows), expected)


def test_result_meta_is_what_celery_reads_back():
    app = Celery("reader", set_as_current=False, broker=BROKER_URL, backend=RESULT_URL)
    job_id = str(uuid.uuid4())
    key, encoded = result_meta(app, job_id, states.SUCCESS, {"predictions": [0.5]}, "2026-12-02T00:00:00")
    redis.Redis.from_url(RESULT_URL).set(key, encoded, ex=60)
    result = app.AsyncResult(job_id)
    assert result.state == states.SUCCESS
    assert result.get(timeout=5) == {"predictions": [0.5]}
    # The same fields as Celery's own meta, so nothing that reads results misses one.
    own = app.backend._get_result_meta({"predictions": [0.5]}, states.SUCCESS, None, None)
    assert set(app.backend.decode(encoded)) == {*own, "task_id"}


def test_a_failure_written_as_meta_raises_the_models_error_in_a_bot():
    app = Celery("reader", set_as_current=False, broker=BROKER_URL, backend=RESULT_URL)
    app.conf.accept_content = ["json"]
    job_id = str(uuid.uuid4())
    error = ModelLoading("xgboost_model.json is still being written", {"retry_after_s": 1})
    key, encoded = result_meta(app, job_id, states.FAILURE, error_result(error), "2026-12-02T00:00:00")
    redis.Redis.from_url(RESULT_URL).set(key, encoded, ex=60)
    with pytest.raises(ModelLoading, match="still being written"):
        app.AsyncResult(job_id).get(timeout=5)


def test_the_pool_hand_off_matches_celery_batches(clean, engine, start_worker):
    # run_in_pool passes (task, (requests,), loglevel, logfile), as Batches.flush does.
    assert list(inspect.signature(apply_batches_task).parameters) == ["task", "args", "loglevel", "logfile"]
    worker = start_worker()
    sender = Celery(broker=BROKER_URL, set_as_current=False)
    for n in range(5):
        trade = {"trade_id": f"fence-{n}", "timestamp": "2026-12-02T00:00:00Z", "symbol": "BTC/USDT"}
        record = {**trade, "side": "buy", "amount": 1, "entry_price": 1}
        sender.send_task("trades.record", args=[record], queue="trades", serializer="json")
    wait_for(rows_reach(engine, 5), timeout=30, what="5 trades through the pool")
    assert worker.alive()


def test_the_redis_transport_overrides_what_kombu_still_has(broker):
    # The private names the transport overrides or calls, on the kombu it was written for.
    for name in ("_create_client", "_brpop_start", "_brpop_read", "_q_for_pri", "_flush_brpop_reauth"):
        assert callable(getattr(kombu_redis.Channel, name)), name
    assert callable(kombu_redis.QoS._remove_from_indices)
    assert callable(virtual.Transport._deliver)
    assert issubclass(Transport, kombu_redis.Transport)
    # A message through it: taken, recorded as unacknowledged, acknowledged, gone.
    queue_name = f"fence-{uuid.uuid4().hex[:8]}"
    with Connection(BROKER_URL, transport=REDIS_TRANSPORT) as connection:
        queue = connection.SimpleQueue(queue_name)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        assert broker.hlen("unacked") >= 1
        message.ack()
        queue.close()
    assert broker.llen(queue_name) == 0
    assert not broker.hexists("unacked", message.delivery_tag)


def _register_a_marker_and_return(marker: Path) -> None:
    at_exit(lambda: marker.write_text("written at exit"))


def test_at_exit_runs_at_the_end_of_a_multiprocessing_child(tmp_path):
    # granian's web workers are such children: they end with os._exit, which skips atexit,
    # and the web writes its last access lines there (web.answered).
    marker = tmp_path / "marker"
    child = multiprocessing.get_context("fork").Process(target=_register_a_marker_and_return, args=(marker,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert marker.read_text() == "written at exit"


def test_the_process_exit_fence_refuses_another_python(monkeypatch):
    import tasks.internals.process_exit as fenced

    monkeypatch.setattr(sys, "version_info", (3, 12, 0, "final", 0))
    with pytest.raises(UnsupportedRelease, match=r"tasks\.internals\.process_exit"):
        importlib.reload(fenced)
