"""Model releases on the real stack: two threads-pool predict workers (as compose starts
them), a web server of two processes, a trades worker, PostgreSQL and Redis.

One model name goes through what an operator does with it: its file replaced (the old
versions stay servable), a shadow challenger (logged beside the champion, the file replaced
again meanwhile), a sticky canary (every web process and worker agreeing within a tick),
a promotion refused while a worker lacks the challenger, a promotion, a rollback under
load without a failed request, and the history of all of it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import xgboost
from sqlalchemy import text

from tests.support.http import call
from tests.support.model_zoo import LABELS, TRAIN, version_of
from tests.support.processes import WebServer, flask, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROW = [[0.1, -0.2, 0.3, 0.5, -1.0]]
NAME = "m.json"
TICK_S = 2.0  # the workers' model watch (tasks.worker.model_watch.WATCH_EVERY_S)


def model_bytes(rounds: int, features: int = 5) -> bytes:
    rows = np.resize(TRAIN, (len(TRAIN), features))
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(rows, LABELS), rounds
    )
    return bytes(booster.save_raw(raw_format="json"))


def drop_in(models: Path, content: bytes) -> str:
    staged = models / f".{NAME}.part"
    staged.write_bytes(content)
    os.replace(staged, models / NAME)
    return version_of(models / NAME)


def predict(web: WebServer, key: str | None = None, **body) -> tuple[int, dict]:
    headers = {"X-Routing-Key": key} if key is not None else None
    answer = call(
        f"{web.url}/api/v1/ml/predict", "POST", {"model_name": NAME, "features": ROW, **body}, headers
    )
    return answer.status, answer.json()


def api(web: WebServer, method: str, path: str, body=None) -> tuple[int, dict]:
    answer = call(f"{web.url}/api/v1/ml/models/{NAME}/{path}", method, body)
    return answer.status, answer.json()


def start_stack(tmp_path, workers, start_web, processes: int) -> tuple[WebServer, Path, str]:
    """MODEL_DIR holding m.json, `processes` predict workers and web processes (the
    prediction log is written by the predict workers: no trades worker is needed)."""
    models = tmp_path / "models"
    models.mkdir()
    first = drop_in(models, model_bytes(3))
    for _ in range(processes):
        workers("predict", pool="threads", MODEL_DIR=str(models))
    web = start_web(workers=processes, MODEL_DIR=str(models))
    wait_for(lambda: predict(web)[0] == 200, 60, "a first prediction")
    return web, models, first


@pytest.fixture
def stack(clean, tmp_path, workers, start_web):
    return start_stack(tmp_path, workers, start_web, processes=2)


@pytest.fixture
def small_stack(clean, tmp_path, workers, start_web):
    return start_stack(tmp_path, workers, start_web, processes=1)


def shadow_pairs(engine, challenger: str) -> list[tuple[str, str, str]]:
    """(shadow_of, champion's version, shadow's version) of every logged shadow of `challenger`."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT s.shadow_of, c.model_version, s.model_version FROM prediction_log s"
                    " JOIN prediction_log c ON c.prediction_id = s.shadow_of"
                    " WHERE s.role = 'shadow' AND s.model_version = :challenger AND c.role = 'champion'"
                ),
                {"challenger": challenger},
            )
        )


def test_a_model_through_its_releases(stack, engine, env, tmp_path, workers):
    web, models, v1 = stack
    status, answer = predict(web)
    assert (status, answer["model_version"], answer["role"]) == (200, v1, "champion")
    v1_prediction = answer["predictions"]

    # The file replaced: the new version answers, the old one stays servable when asked for.
    v2 = drop_in(models, model_bytes(12))
    wait_for(lambda: predict(web)[1]["model_version"] == v2, 30, "the replacement to answer")
    status, pinned = predict(web, model_version=v1)
    assert (status, pinned["model_version"], pinned["role"], pinned["predictions"]) == (
        200,
        v1,
        "pinned",
        v1_prediction,
    )
    assert predict(web)[1]["predictions"] != v1_prediction
    status, versions = api(web, "GET", "versions")
    assert status == 200
    assert [entry["model_version"] for entry in versions["versions"]] == [v2, v1]
    assert [entry["current"] for entry in versions["versions"]] == [True, False]
    assert all(datetime.fromisoformat(entry["first_seen"]) for entry in versions["versions"])
    for unknown in ("0123456789abcdef", "../../etc/passwd", v1.upper()):
        status, error = predict(web, model_version=unknown)
        assert (status, error["error"]["code"]) == (404, "version_not_found"), unknown
    assert (
        call(f"{web.url}/v2/models/{NAME}/versions/{v1}/infer", "POST", v2_body()).json()["model_version"]
        == v1
    )
    # V2 tells of the kept version as of any other: its metadata, and ready once a worker holds it.
    assert call(f"{web.url}/v2/models/{NAME}/versions/{v1}").json()["versions"] == [v1]
    wait_for(lambda: call(f"{web.url}/v2/models/{NAME}/versions/{v1}/ready").status == 200, 10, "v1 ready")

    # A shadow: the champion answers, the challenger runs the same input afterwards, logged.
    status, release = api(
        web, "PUT", "release", {"challenger": v1, "mode": "shadow", "reason": "try v1 again"}
    )
    assert (status, release["champion"], release["challenger"], release["mode"]) == (200, v2, v1, "shadow")
    assert datetime.fromisoformat(release["challenger_since"]).utcoffset() == timedelta(0)

    def all_shadowed() -> set[str] | None:
        """Ten answers of the champion, each shadowed (both workers read the release)."""
        answered = [predict(web)[1] for _ in range(10)]
        assert {(a["model_version"], a["role"]) for a in answered} == {(v2, "champion")}
        ids = {a["prediction_id"] for a in answered}
        logged = lambda: ids <= {pair[0] for pair in shadow_pairs(engine, v1)}  # noqa: E731
        try:
            return wait_for(logged, 2, "the log's next writes") and ids
        except AssertionError:
            return None

    ids = wait_for(all_shadowed, TICK_S + 10, "every champion answer shadowed")
    assert {pair[1] for pair in shadow_pairs(engine, v1) if pair[0] in ids} == {v2}
    with engine.connect() as connection:  # a shadow's input is its champion's, kept once
        kept = "SELECT count(*) FILTER (WHERE features IS NOT NULL) FROM prediction_log WHERE role = :role"
        assert connection.execute(text(kept), {"role": "shadow"}).one()[0] == 0
        assert connection.execute(text(kept), {"role": "champion"}).one()[0] > 0

    # The file replaced while the shadow runs: the new file is the champion, shadowed alike.
    v3 = drop_in(models, model_bytes(25))
    wait_for(lambda: predict(web)[1]["model_version"] == v3, 30, "v3 to answer as champion")
    ids = {predict(web)[1]["prediction_id"] for _ in range(5)}
    wait_for(lambda: ids <= {pair[0] for pair in shadow_pairs(engine, v1)}, 20, "v3's answers shadowed by v1")
    assert api(web, "GET", "release")[1]["champion"] == v3
    status, compared = api(web, "GET", "compare")
    assert status == 200, compared
    assert compared["pairs"] >= 15 and compared["challenger"]["model_version"] == v1
    assert (compared["trades"], compared["verdict"]) == (0, "not enough evidence")
    assert 0 <= compared["agreement"] <= 1 and compared["threshold"] == 0.5
    assert datetime.fromisoformat(compared["since"]) == datetime.fromisoformat(release["challenger_since"])
    assert call(f"{web.url}/api/v1/ml/models/{NAME}/compare?since=yesterday").status == 400

    # A canary at 50 %: sticky per routing key, the same in every web process and worker.
    status, _ = api(
        web, "PUT", "release", {"challenger": v1, "mode": "canary", "percent": 50, "reason": "canary"}
    )
    assert status == 200
    changed = time.monotonic()
    keys = [f"SYM{n}" for n in range(24)]

    def split() -> dict[str, str] | None:
        sides: dict[str, set[str]] = {key: set() for key in keys}
        for _ in range(2):  # each key twice: both web processes and both workers in the mix
            for key in keys:
                status, answer = predict(web, key)
                assert status == 200, answer
                sides[key].add(f"{answer['role']}:{answer['model_version']}")
        if any(len(seen) != 1 for seen in sides.values()):
            return None
        chosen = {key: seen.pop() for key, seen in sides.items()}
        return chosen if set(chosen.values()) == {f"champion:{v3}", f"challenger:{v1}"} else None

    chosen = wait_for(split, 20, "every key to stick to one side")
    assert time.monotonic() - changed < 2 * TICK_S + 3  # a tick, and the time to ask 48 questions
    assert all(split_again == chosen[key] for key, split_again in ((k, sticky(web, k)) for k in keys[:6]))

    # A promotion needs the challenger on every live worker: one that cannot load it (its
    # archive is not the shared one) holds the promotion back until it is gone.
    lone = workers(
        "predict", pool="threads", MODEL_DIR=str(models), MODEL_ARCHIVE_DIR=str(tmp_path / "elsewhere")
    )
    lacking = f"{socket.gethostname()}:{lone.pid}"
    wait_for(lambda: lacking in held_by_workers(), 20, "the third worker to report what it holds")
    status, refused = api(web, "POST", "promote", {"reason": "too early"})
    assert (status, refused["error"]["code"]) == (409, "challenger_not_loaded")
    assert refused["error"]["details"]["lacking"] == [lacking]
    lone.stop()
    wait_for(lambda: api(web, "POST", "promote", {"reason": "v1 wins"})[0] == 200, 10, "the promotion")
    wait_for(
        lambda: predict(web, "SYM0")[1]["model_version"] == v1, 2 * TICK_S + 2, "v1 to answer as champion"
    )
    assert api(web, "GET", "release")[1] | {"challenger_since": None} == {
        "champion": v1,
        "pinned": True,
        "challenger": None,
        "mode": None,
        "percent": None,
        "guards": {},
        "challenger_since": None,
        "previous_champion": v3,
    }
    # The model's facts and /readyz name the pinned champion, not the file's version.
    info = call(f"{web.url}/api/v1/ml/models/{NAME}").json()
    assert (info["version"], info.get("pinned"), info["loaded"]) == (v1, True, True)
    readiness = call(f"{web.url}/readyz").json()["checks"]["models"]
    assert {"name": NAME, "version": v1} in readiness["loaded"]
    assert call(f"{web.url}/v2/models/{NAME}").json()["versions"][0] == v1  # the one that answers first

    # A rollback under load: no request fails, and every worker answers with the old
    # champion from its next read of the releases on (one tick).
    failures, answers, stop = [], [], threading.Event()

    def load() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status, answer = predict(web, f"K{len(answers) % 7}")
            (answers if status == 200 else failures).append((started, answer))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answers) > 40, 20, "load to run")
        status, release = api(web, "POST", "rollback", {"reason": "v1 misbehaves"})
        assert (status, release["champion"]) == (200, v3)
        settled = time.monotonic() + TICK_S + 1.0  # a tick, and a look's own time
        wait_for(lambda: sum(started > settled for started, _ in answers) > 60, 30, "load after a tick")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert {answer["model_version"] for started, answer in answers if started > settled} == {v3}
    status, error = api(web, "POST", "rollback", {"reason": "again"})
    assert (status, error["error"]["code"]) == (409, "nothing_to_change")

    # The command line, and the history of every change.
    command = ["models", "release", NAME, "--challenger", v1, "--mode", "shadow", "--reason", "from the cli"]
    done = flask(command, {**env, "MODEL_DIR": str(models)}, tmp_path)
    assert '"challenger": "' + v1 in done.stdout
    status, history = api(web, "GET", "releases")
    assert status == 200
    assert [(c["action"], c["from"], c["to"]) for c in history["changes"]] == [
        ("release", None, v1),
        ("rollback", v1, v3),
        ("promote", v3, v1),
        ("release", v1, v1),
        ("release", None, v1),
    ]
    assert history["changes"][0]["who"].startswith("cli:")
    assert all(datetime.fromisoformat(change["at"]) for change in history["changes"])
    assert {c["who"] for c in history["changes"][1:]} == {"api"}
    assert history["changes"][1]["reason"] == "v1 misbehaves"


def held_by_workers() -> dict[str, set[str]]:
    import redis

    from tasks.web_clients import live_workers

    return live_workers(redis.Redis.from_url(os.environ["CELERY_RESULT_BACKEND"]))


def sticky(web: WebServer, key: str) -> str:
    answer = predict(web, key)[1]
    return f"{answer['role']}:{answer['model_version']}"


def v2_body() -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 5], "data": ROW[0]}]}


def test_a_failing_canary_is_rolled_back_by_its_guards(small_stack):
    web, models, v1 = small_stack
    # A version that takes six features: every request it answers fails (422 to its caller).
    wide = drop_in(models, model_bytes(3, features=6))
    wait_for(lambda: predict(web)[0] == 422, 30, "the six-feature version to be served")
    assert drop_in(models, model_bytes(3)) == v1
    wait_for(lambda: predict(web)[0] == 200, 30, "v1 back")
    guards = {"max_error_rate": 0.2, "min_predictions": 10}
    change = {"challenger": wide, "mode": "canary", "percent": 50, "guards": guards, "reason": "wide"}
    status, release = api(web, "PUT", "release", change)
    assert (status, release["guards"]) == (200, guards)

    statuses = []

    def rolled_back() -> bool:
        statuses.append(predict(web)[0])
        return api(web, "GET", "release")[1]["challenger"] is None

    wait_for(rolled_back, 30, "the guards to roll the canary back")
    assert set(statuses) <= {200, 422} and 422 in statuses
    change = api(web, "GET", "releases")[1]["changes"][0]
    assert (change["action"], change["who"], change["from"], change["to"]) == ("guard", "guard", wide, v1)
    assert "error rate" in change["reason"]
    # Every worker routes by the rollback from its next tick on.
    wait_for(lambda: {predict(web)[0] for _ in range(20)} == {200}, TICK_S + 5, "no more canary errors")


def test_release_requests_that_cannot_be_taken(small_stack):
    web, _, v1 = small_stack
    for body, code in (
        ({"challenger": v1, "reason": "no mode"}, "invalid_input"),
        ({"challenger": v1, "mode": "canary", "reason": "no percent"}, "invalid_input"),
        ({"challenger": v1, "mode": "canary", "percent": 0, "reason": "zero"}, "invalid_input"),
        ({"challenger": v1, "mode": "shadow", "reason": ""}, "invalid_input"),
        ({"challenger": v1, "mode": "bluegreen", "reason": "x"}, "invalid_input"),
        ({"challenger": 7, "mode": "shadow", "reason": "x"}, "invalid_input"),
        (
            {"challenger": v1, "mode": "shadow", "reason": "x", "guards": {"max_error_rate": float("nan")}},
            None,
        ),
        ({"challenger": "ffffffffffffffff", "mode": "shadow", "reason": "x"}, "version_not_found"),
    ):
        answer = call(f"{web.url}/api/v1/ml/models/{NAME}/release", "PUT", body)
        assert 400 <= answer.status < 500, (body, answer.status)
        if code is not None:
            assert answer.json()["error"]["code"] == code, (body, answer.json())
    assert call(f"{web.url}/api/v1/ml/models/nope.json/release").status == 404
    assert call(f"{web.url}/api/v1/ml/models/..%2Fetc/versions").status in (400, 404)
    status, error = api(web, "POST", "promote", {"reason": "nothing"})
    assert (status, error["error"]["code"]) == (409, "no_challenger")
    assert api(web, "GET", "releases") == (200, {"changes": []})
    huge = call(
        f"{web.url}/api/v1/ml/predict",
        "POST",
        {"model_name": NAME, "features": ROW},
        {"X-Routing-Key": "k" * 300},
    )
    assert (huge.status, huge.json()["error"]["code"]) == (400, "invalid_header")
    status, answer = predict(web)
    assert status == 200 and np.isfinite(answer["predictions"][0]), answer


def test_a_pinned_champion_no_worker_can_load_makes_the_stack_unready(small_stack, engine):
    """A release pins a version no longer kept (its copy gone: an operator's cleaning, a
    lost volume): the name cannot answer, and /readyz says which champion is missing."""
    web, _, v1 = small_stack

    def models_check() -> dict:
        return call(f"{web.url}/readyz").json()["checks"]["models"]

    wait_for(lambda: models_check()["ok"], 20, "the model to be loaded")
    gone = "0123456789abcdef"
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO model_release_state (model_name, champion) VALUES (:name, :champion)"),
            {"name": NAME, "champion": gone},
        )
    wait_for(lambda: not models_check()["ok"], 10, "/readyz to read the release")
    models = models_check()
    assert models["missing"] == [NAME] and models["loaded"] == []
    assert f"{NAME} (its pinned champion {gone})" in models["error"]
    info = call(f"{web.url}/api/v1/ml/models/{NAME}").json()
    assert info["version"] == v1 and info["load_error"]["version"] == gone and "pinned" not in info
