"""The prediction log and lineage, end to end: real predict and trades workers, the real
database, predictions over HTTP, by job and by `send_task`, and trades that name them.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import xgboost
from sqlalchemy import text
from sqlalchemy.orm import Session

from celeryconfig import celery_config
from config import Settings
from db import PredictionEntry, RecordEntry, TradeRecord, TradeRepository
from tasks.client import TradeJournal
from tests.bots.send_task_bot import trade
from tests.conftest import RESULT_URL
from tests.support.journal import sender
from tests.support.model_zoo import ROWS, version_of
from tests.support.processes import Worker, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")


@pytest.fixture(scope="module")
def workers(zoo, tmp_path_factory, database_url):
    """One worker for both queues, with every model of the zoo loaded."""
    folder = tmp_path_factory.mktemp("lineage-worker")
    worker = Worker(dict(os.environ), folder, queues="predict,trades").wait_ready()
    worker.wait_models_loaded(RESULT_URL, set(zoo))
    yield worker
    worker.stop()


@pytest.fixture
def ml(app, clean, workers):
    return app.test_client()


def post(client, body, **headers):
    return client.post(
        "/api/v1/ml/predict", data=json.dumps(body), content_type="application/json", headers=headers
    )


def logged(client, prediction_id: str, timeout: float = 30) -> dict:
    """The log entry, once the worker's writer has written it (a moment after the answer)."""

    def entry():
        response = client.get(f"/api/v1/ml/predictions/{prediction_id}")
        return response.get_json() if response.status_code == 200 else None

    return wait_for(entry, timeout, f"prediction {prediction_id} in the log")


def trade_row(engine, trade_id: str):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT prediction_id, model_name, model_version FROM trade_history WHERE trade_id = :id"),
            {"id": trade_id},
        ).one_or_none()


def test_a_prediction_is_logged_under_the_prediction_id_its_answer_carries(ml, zoo):
    response = post(
        ml, {"model_name": "xgb.json", "features": ROWS.tolist()}, **{"X-Request-ID": "req-lineage-1"}
    )
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    prediction_id = answer["prediction_id"]
    assert str(uuid.UUID(prediction_id)) == prediction_id

    entry = logged(ml, prediction_id)
    assert entry["prediction_id"] == prediction_id
    assert entry["model_name"] == "xgb.json" and entry["model_type"] == "xgboost"
    assert (
        entry["model_version"]
        == answer["model_version"]
        == version_of(Path(os.environ["MODEL_DIR"]) / "xgb.json")
    )
    assert entry["predictions"] == answer["predictions"] and entry["rows"] == len(ROWS)
    assert entry["request_id"] == "req-lineage-1"
    assert entry["latency_ms"] >= 0
    assert datetime.fromisoformat(entry["created_at"]) <= datetime.now(UTC)
    # The input rows as sent, the missing value (NaN) as null: jsonb holds no NaN.
    expected = [[None if np.isnan(value) else value for value in row] for row in ROWS.tolist()]
    assert entry["features"] == expected
    assert entry["contributions"] is None and entry["trade_ids"] == []


def test_an_async_job_and_a_send_task_carry_their_job_id_as_prediction_id(ml, zoo):
    accepted = post(ml, {"model_name": "gbm.txt", "features": ROWS.tolist()}, Prefer="respond-async")
    job_id = accepted.get_json()["job_id"]
    wait_for(lambda: ml.get(f"/api/v1/ml/jobs/{job_id}").get_json()["status"] == "succeeded", 30, "the job")
    assert ml.get(f"/api/v1/ml/jobs/{job_id}").get_json()["result"]["prediction_id"] == job_id
    assert logged(ml, job_id)["model_name"] == "gbm.txt"

    bot = sender(dict(os.environ))
    try:
        result = bot.send_task("ml.predict", args=["xgb.json", ROWS[:2].tolist()], queue="predict")
        payload = result.get(timeout=30)
    finally:
        bot.close()
    assert payload["prediction_id"] == result.id
    assert logged(ml, result.id)["rows"] == 2 and logged(ml, result.id)["request_id"] is None


def test_a_send_task_with_an_integer_beyond_64_bits_is_logged_as_sent(ml, zoo):
    """Celery's JSON keeps integers orjson cannot write; the model takes them as floats. The
    log keeps the features exact, and the entries flushed with it (one such entry used to
    cost its whole batch)."""
    row = [10**30, *ROWS[0].tolist()[1:]]
    bot = sender(dict(os.environ))
    try:
        huge = bot.send_task("ml.predict", args=["xgb.json", [row]], queue="predict")
        plain = bot.send_task("ml.predict", args=["xgb.json", ROWS[:1].tolist()], queue="predict")
        huge.get(timeout=30), plain.get(timeout=30)
    finally:
        bot.close()
    wait_for(lambda: ml.get(f"/api/v1/ml/predictions/{huge.id}").status_code == 200, 30, "the entry")
    response = ml.get(f"/api/v1/ml/predictions/{huge.id}")
    assert json.loads(response.get_data(as_text=True))["features"] == [row]
    assert logged(ml, plain.id)["rows"] == 1


@pytest.mark.parametrize(
    ("prediction_id", "status"),
    [
        pytest.param(str(uuid.uuid4()), 404, id="an-unknown-uuid"),  # the same test id in every run
        ("never-logged", 404),
        ("..%2F..%2Fetc%2Fpasswd", 404),  # no such route: a name never leaves its place
        ("bad$id", 400),
        ("x" * 65, 400),
    ],
)
def test_an_id_never_logged_is_404_and_a_malformed_one_400(ml, prediction_id, status):
    response = ml.get(f"/api/v1/ml/predictions/{prediction_id}")
    assert response.status_code == status
    assert response.get_json()["error"]["code"] in ("prediction_not_found", "not_found", "invalid_input")


def test_a_trade_links_to_the_model_version_of_its_prediction_whichever_lands_first(ml, zoo, engine):
    journal = TradeJournal(os.environ["CELERY_BROKER_URL"], Path(os.environ["SPOOL_DIR"]) / "bot-lineage")
    bot = sender(dict(os.environ))
    try:
        # The prediction first: the trade finds its model version when it is inserted.
        answer = post(ml, {"model_name": "xgb.json", "features": ROWS[:1].tolist()}).get_json()
        logged(ml, answer["prediction_id"])
        journal.record_trade({**trade("lin", 1), "prediction_id": answer["prediction_id"]})

        # The trade first (a prediction made by `send_task` under an id the bot chose, still
        # queued): the log entry fills the trade in when it lands.
        early_id = str(uuid.uuid4())
        journal.record_trade({**trade("lin", 2), "prediction_id": early_id})
        wait_for(lambda: trade_row(engine, "lin-2") is not None, 30, "the early trade stored")
        assert trade_row(engine, "lin-2").model_name is None
        bot.send_task("ml.predict", args=["gbm.txt", ROWS[:1].tolist()], task_id=early_id, queue="predict")

        # A bot that predicts elsewhere names the model itself.
        journal.record_trade({**trade("lin", 3), "model_name": "elsewhere", "model_version": "v7"})

        wait_for(lambda: (row := trade_row(engine, "lin-1")) and row.model_name, 30, "trade 1 linked")
        wait_for(lambda: (row := trade_row(engine, "lin-2")) and row.model_name, 30, "trade 2 linked")
        wait_for(lambda: trade_row(engine, "lin-3") is not None, 30, "trade 3 stored")
    finally:
        journal.close()
        bot.close()

    model_dir = Path(os.environ["MODEL_DIR"])
    assert tuple(trade_row(engine, "lin-1")) == (
        answer["prediction_id"],
        "xgb.json",
        version_of(model_dir / "xgb.json"),
    )
    assert tuple(trade_row(engine, "lin-2")) == (early_id, "gbm.txt", version_of(model_dir / "gbm.txt"))
    assert tuple(trade_row(engine, "lin-3")) == (None, "elsewhere", "v7")
    shown = ml.get("/api/v1/trades/lin-2").get_json()
    assert (shown["prediction_id"], shown["model_name"]) == (early_id, "gbm.txt")
    assert logged(ml, early_id)["trade_ids"] == ["lin-2"]


def test_a_trade_over_http_carries_its_lineage(ml, zoo, engine):
    answer = post(ml, {"model_name": "gbm.txt", "features": ROWS[:1].tolist()}).get_json()
    record = {**trade("http-lin", 1), "prediction_id": answer["prediction_id"]}
    assert ml.post("/api/v1/trades", json=record).status_code == 202
    wait_for(lambda: (row := trade_row(engine, "http-lin-1")) and row.model_version, 30, "the trade linked")
    assert trade_row(engine, "http-lin-1").model_version == answer["model_version"]

    bad = ml.post("/api/v1/trades", json={**trade("http-lin", 2), "model_version": "v1"})
    assert bad.status_code == 422 and "model_name" in bad.get_json()["error"]["message"] + json.dumps(
        bad.get_json()["error"]["details"]
    )
    wrong = ml.post("/api/v1/trades", json={**trade("http-lin", 3), "prediction_id": "../../etc"})
    assert wrong.status_code == 422 and wrong.get_json()["error"]["details"][0]["field"] == "prediction_id"


def tree_contributions(name: str, rows: np.ndarray) -> np.ndarray:
    path = Path(os.environ["MODEL_DIR"]) / name
    if name.endswith(".txt"):
        import lightgbm

        return lightgbm.Booster(model_file=str(path)).predict(rows, pred_contrib=True)
    return xgboost.Booster(model_file=str(path)).predict(
        xgboost.DMatrix(rows, missing=np.nan), pred_contribs=True
    )


@pytest.mark.parametrize("name", ["xgb.json", "xgb.ubj", "gbm.txt"])
def test_explain_returns_the_libraries_contributions_and_the_log_keeps_them(ml, zoo, name):
    response = post(ml, {"model_name": name, "features": ROWS.tolist(), "explain": True})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    contributions = np.asarray(body["contributions"], dtype=np.float64)
    assert contributions.shape == (len(ROWS), ROWS.shape[1] + 1)  # each feature, then the bias
    np.testing.assert_allclose(contributions, tree_contributions(name, ROWS), atol=1e-5, rtol=0)
    assert logged(ml, body["prediction_id"])["contributions"] == body["contributions"]
    assert "contributions" not in post(ml, {"model_name": name, "features": ROWS.tolist()}).get_json()


def test_explain_is_for_tree_models_only(ml, zoo):
    for body in (
        {"model_name": "forecaster.pt", "features": [[0.0] * 5] * 12, "explain": True},
        {"model_name": "scripted.pt", "features": [[0.0] * 5] * 12, "explain": True},
    ):
        response = post(ml, body)
        assert response.status_code == 422
        error = response.get_json()["error"]
        assert error["code"] == "explanation_unsupported" and "tree models" in error["message"]
    assert (
        post(ml, {"model_name": "xgb.json", "features": ROWS.tolist(), "explain": "yes"}).status_code == 422
    )
    # Sent by name, past the web's checks: the worker answers the same error.
    bot = sender(dict(os.environ))
    try:
        result = bot.send_task(
            "ml.predict", args=["forecaster.pt", [[0.0] * 5] * 12, None, True], queue="predict"
        )
        with pytest.raises(Exception, match="tree models"):
            result.get(timeout=30)
    finally:
        bot.close()


def test_performance_per_model_version(ml, zoo, engine):
    answers = [
        post(ml, {"model_name": "xgb.json", "features": ROWS[:1].tolist()}).get_json() for _ in range(3)
    ]
    journal = TradeJournal(os.environ["CELERY_BROKER_URL"], Path(os.environ["SPOOL_DIR"]) / "bot-perf")
    try:
        for number, (answer, pnl) in enumerate(zip(answers, (5.0, -2.0, None), strict=True)):
            record = {**trade("perf", number), "prediction_id": answer["prediction_id"]}
            if pnl is not None:
                record.update(closed=True, exit_price=41_000.0, realized_pnl=pnl, pnl_pct=pnl / 10)
            journal.record_trade(record)
        wait_for(
            lambda: all((row := trade_row(engine, f"perf-{n}")) and row.model_version for n in range(3)),
            30,
            "the three trades linked",
        )
    finally:
        journal.close()
    for answer in answers:
        logged(ml, answer["prediction_id"])

    body = ml.get("/api/v1/ml/models/xgb.json/performance").get_json()
    assert body["model_name"] == "xgb.json"
    assert body["current_version"] == answers[0]["model_version"]
    [version] = body["versions"]
    assert version["model_version"] == answers[0]["model_version"]
    assert version["predictions"] == 3
    assert version["first_served"] <= version["last_served"]
    assert (version["trades"], version["closed"], version["wins"]) == (3, 2, 1)
    assert version["total_pnl"] == 3.0 and version["profit_factor"] == 2.5
    assert version["max_drawdown"] == 2.0

    assert ml.get("/api/v1/ml/models/never-heard-of/performance").status_code == 404
    assert ml.get("/api/v1/ml/models/..%2Fsecret/performance").status_code in (400, 404)
    assert ml.get("/api/v1/ml/models/.hidden/performance").status_code == 400


def logged_entry(
    prediction_id: str, created_at: datetime, model_version: str = "v", features: list | None = None
) -> PredictionEntry:
    return PredictionEntry.of(
        {
            "prediction_id": prediction_id,
            "created_at": created_at,
            "model_name": "xgb.json",
            "model_version": model_version,
            "model_type": "xgboost",
            "rows": 1,
            "predictions": [0.5],
            "latency_ms": 1.0,
            "features": features,
        }
    )


def test_retention_is_applied_by_the_prune_task_and_a_replay_doubles_nothing(clean, engine, start_worker):
    now = datetime.now(UTC)
    entries = [logged_entry(f"p-{age}", now - timedelta(days=age)) for age in (0, 1, 29, 31, 60, 400)]
    with Session(engine) as session:
        first = TradeRepository(session).write(entries)
        again = TradeRepository(session).write(entries)  # as a replay would: nothing doubles
    assert (first.predictions_logged, again.predictions_logged, again.predictions_repeated) == (6, 0, 6)

    start_worker(PREDICTION_LOG_RETENTION_DAYS="30")
    bot = sender(dict(os.environ))
    try:
        report = bot.send_task("trades.prune_prediction_log", queue="trades").get(timeout=30)
    finally:
        bot.close()
    with engine.connect() as connection:
        # This test's entries only: an earlier test's worker may write its last ones late.
        kept = set(
            connection.scalars(
                text("SELECT prediction_id FROM prediction_log WHERE prediction_id LIKE 'p-%'")
            )
        )
    assert kept == {"p-0", "p-1", "p-29"}
    # drop_chunks on a hypertable (a chunk a day), a bounded DELETE on a plain table.
    assert report in ({"rows": 3}, {"chunks": 3})
    assert "prune-prediction-log" in celery_config(Settings())["beat_schedule"]


def test_trades_and_predictions_written_at_once_never_miss_each_other(clean, engine):
    """The race the advisory locks close: each side's transaction checks for the other
    before either commits. Many rounds of a trade and its prediction written concurrently."""
    now = datetime.now(UTC)
    rounds = 40
    barrier = threading.Barrier(2)

    def write_trades() -> None:
        with Session(engine) as session:
            for number in range(rounds):
                barrier.wait()
                record = TradeRecord.from_dict({**trade("race", number), "prediction_id": f"race-p-{number}"})
                TradeRepository(session).write([RecordEntry(record)])

    def write_predictions() -> None:
        with Session(engine) as session:
            for number in range(rounds):
                barrier.wait()
                TradeRepository(session).write([logged_entry(f"race-p-{number}", now, "v-race")])

    threads = [threading.Thread(target=write_trades), threading.Thread(target=write_predictions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with engine.connect() as connection:
        versions = connection.scalars(
            text("SELECT model_version FROM trade_history WHERE trade_id LIKE 'race-%'")
        ).all()
    assert versions == ["v-race"] * rounds


def test_a_logged_integer_beyond_64_bits_is_served_as_it_was_logged(http, engine):
    """jsonb holds integers orjson cannot write: the answer falls back, exact, not a 500."""
    huge = 10**30
    entry = logged_entry("p-huge", datetime.now(UTC), features=[[huge, 1.5, -(2**70)]])
    with Session(engine) as session:
        TradeRepository(session).write([entry])
    response = http.get("/api/v1/ml/predictions/p-huge")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert json.loads(response.get_data(as_text=True))["features"] == [[huge, 1.5, -(2**70)]]


def test_predictions_waiting_for_the_log_set_off_no_garbage_collection(clean, engine):
    """What waits for the log's thread is each entry's JSON, bytes the collector does not
    track: thousands of served predictions held for the next flush run none of the
    collections that pause every thread of a predict process, and the flush writes them
    as they were served (a missing value as null), sending their JSON as it is, with none
    either."""
    from tasks import app as worker_app
    from tasks.contract import Call
    from tasks.worker.app import worker_settings
    from tasks.worker.prediction_log import PredictionLogWriter, Served

    writer = PredictionLogWriter(worker_app.flask_app, worker_settings())  # not started: flushed here
    now = datetime.now(UTC)
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        for number in range(3000):  # as a predict process serves: each answer's objects made, then dropped
            features = np.array([[float(number), np.nan]])
            call = Call(f"gc-{number}", None, (), {}, request_id=f"r-{number}")
            writer.record(
                [Served(call, now, "xgb.json", "v1", "xgboost", features, 1, {"predictions": [0.5]}, 0.3)]
            )
    finally:
        gc.callbacks.remove(count)
    # Kept as objects, these 3,000 set off 21 young collections; another thread of
    # this process may set off one.
    assert len(collections) <= 1, collections

    # Nor does writing them: the thread sends their JSON on as it is (read back into
    # objects, the 3,000 set off 19 collections, 18 young and a middle, as they were written).
    collections.clear()
    gc.callbacks.append(count)
    try:
        writer.flush()
    finally:
        gc.callbacks.remove(count)
    assert len(collections) <= 2, collections
    with engine.connect() as connection:
        assert (
            connection.scalar(text("SELECT count(*) FROM prediction_log WHERE prediction_id LIKE 'gc-%'"))
            == 3000
        )
        row = connection.execute(
            text("SELECT features, predictions, request_id FROM prediction_log WHERE prediction_id = 'gc-7'")
        ).one()
    assert tuple(row) == ([[7.0, None]], [0.5], "r-7")
