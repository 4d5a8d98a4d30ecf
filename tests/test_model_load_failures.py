"""A model file that does not load, on the real stack: a threads-pool predict worker (as
compose and `make run` start it), the web server, and files dropped into MODEL_DIR by
atomic rename. The bad file affects its own name only: the last good version keeps
answering, the error is shown, counted and in /readyz's details, and the stack stays ready.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.http import call
from tests.support.metrics import scrape, value
from tests.support.model_zoo import version_of
from tests.support.processes import WebServer, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROW = [[0.1, -0.2, 0.3, 0.5, -1.0]]
NOT_A_MODEL = b'{"weights": [1, 2, 3]}'


def drop_in(models: Path, name: str, content: bytes) -> None:
    """Write `content` beside the model and rename it over `name`, as the README says to."""
    staged = models / f".{name}.part"
    staged.write_bytes(content)
    os.replace(staged, models / name)


def zoo_file(name: str) -> bytes:
    return (Path(os.environ["MODEL_DIR"]) / name).read_bytes()


def model(web: WebServer, name: str) -> tuple[int, dict]:
    answer = call(f"{web.url}/api/v1/ml/models/{name}")
    return answer.status, answer.json()


def predict(web: WebServer, name: str) -> tuple[int, dict]:
    answer = call(f"{web.url}/api/v1/ml/predict", "POST", {"model_name": name, "features": ROW})
    return answer.status, answer.json()


def readiness(web: WebServer) -> tuple[int, dict]:
    answer = call(f"{web.url}/readyz")
    return answer.status, answer.json()


@pytest.fixture
def stack(clean, zoo, tmp_path, metrics_dir, workers, start_web):
    """MODEL_DIR with good.json and other.txt, a threads-pool predict worker and a trades
    worker, the web server; ready."""
    models = tmp_path / "models"
    models.mkdir()
    drop_in(models, "good.json", zoo_file("xgb.json"))
    drop_in(models, "other.txt", zoo_file("gbm.txt"))
    workers(
        "predict",
        pool="threads",
        MODEL_DIR=str(models),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir / "worker-predict"),
    )
    workers("trades")
    # One web process: what it has seen of the workers' reports only gets newer.
    web = start_web(workers=1, MODEL_DIR=str(models))
    wait_for(lambda: readiness(web)[0] == 200, 60, "/readyz to answer 200")
    return web, models


def test_a_replacement_that_does_not_load_leaves_the_last_good_version_serving(stack):
    web, models = stack
    good = version_of(models / "good.json")
    assert predict(web, "good.json")[1]["model_version"] == good

    drop_in(models, "good.json", NOT_A_MODEL)
    broken = version_of(models / "good.json")

    def load_error() -> dict | None:
        # From the rename on, before and after the worker has tried the file: the old version answers.
        status, answer = predict(web, "good.json")
        assert (status, answer.get("model_version")) == (200, good), answer
        return model(web, "good.json")[1].get("load_error")

    error = wait_for(load_error, 30, "GET good.json to show the replacement's load error")
    assert error["version"] == broken and error["code"] == "model_refused"
    assert "not an XGBoost JSON model" in error["message"]
    status, entry = model(web, "good.json")
    assert (status, entry["version"], entry["loaded"], entry["type"]) == (200, good, True, "xgboost")
    status, answer = predict(web, "good.json")
    assert (status, answer["model_version"]) == (200, good), answer

    # A model copied in afterwards loads and is reported like any other.
    drop_in(models, "new2.json", zoo_file("xgb.json") + b"\n")
    new2 = version_of(models / "new2.json")
    wait_for(lambda: model(web, "new2.json")[1]["loaded"], 30, "new2.json to be reported loaded")
    assert call(f"{web.url}/v2/models/new2.json/ready").status == 200
    assert call(f"{web.url}/v2/models/good.json/ready").json()["version"] == good
    assert predict(web, "new2.json")[1]["model_version"] == new2

    def ready_with_new2() -> dict | None:
        status, body = readiness(web)  # its report may be a second older than the model's entry
        names = {entry["name"] for entry in body["checks"]["models"]["loaded"]}
        return body["checks"]["models"] if status == 200 and "new2.json" in names else None

    checks = wait_for(ready_with_new2, 30, "/readyz to answer 200 with new2.json loaded")
    assert checks["ok"] is True and "missing" not in checks
    assert {entry["name"]: entry["version"] for entry in checks["loaded"]} == {
        "good.json": good,
        "new2.json": new2,
        "other.txt": version_of(models / "other.txt"),
    }
    assert checks["degraded"] == [{"name": "good.json", "serving": good, **error}]

    panel = call(f"{web.url}/dashboard/models").body.decode()
    assert f'data-load-error="{broken}"' in panel and "not an XGBoost JSON model" in panel
    health = call(f"{web.url}/dashboard/health").body.decode()
    assert 'data-degraded="good.json"' in health

    samples = scrape(web.url)
    assert value(samples, "model_load_failures_total", model="good.json", code="model_refused") == 1

    # A good file over the broken one: the error clears and the new version serves.
    drop_in(models, "good.json", zoo_file("xgb.json") + b"\n\n")
    fixed = version_of(models / "good.json")

    def fixed_serves() -> bool:
        status, entry = model(web, "good.json")
        return status == 200 and entry["version"] == fixed and entry["loaded"] and "load_error" not in entry

    wait_for(fixed_serves, 30, "the fixed good.json to load and its error to clear")
    assert predict(web, "good.json")[1]["model_version"] == fixed

    def ready_without_errors() -> bool:
        status, body = readiness(web)
        return status == 200 and "degraded" not in body["checks"]["models"]

    wait_for(ready_without_errors, 30, "/readyz to drop good.json's load error")


def test_a_new_name_whose_file_never_loads_is_out_alone(stack):
    web, models = stack
    drop_in(models, "broken.json", NOT_A_MODEL)
    half = zoo_file("xgb.json")
    drop_in(models, "half.json", half[: len(half) // 2])  # a model's start, cut short

    def both_degraded() -> dict | None:
        # Until a worker has tried half.json it counts as missing, as any new file does.
        status, body = readiness(web)
        degraded = body["checks"]["models"].get("degraded", [])
        return {entry["name"]: entry for entry in degraded} if status == 200 and len(degraded) == 2 else None

    degraded = wait_for(both_degraded, 30, "/readyz to answer 200 with both broken files degraded")
    assert degraded["broken.json"]["code"] == "model_refused"
    assert degraded["half.json"]["code"] == "model_unloadable"
    assert degraded["broken.json"]["serving"] is None and degraded["half.json"]["serving"] is None
    loaded = {entry["name"] for entry in readiness(web)[1]["checks"]["models"]["loaded"]}
    assert loaded == {"good.json", "other.txt"}

    def half_entry() -> dict | None:
        status, entry = model(web, "half.json")  # the model's entry may be a second behind /readyz
        return entry if status == 200 and "load_error" in entry else None

    entry = wait_for(half_entry, 30, "GET half.json to show its load error")
    assert (entry["loaded"], entry["load_error"]["code"]) == (False, "model_unloadable")
    status, error = model(web, "broken.json")
    assert (status, error["error"]["code"]) == (422, "model_refused")
    for name, code in (("broken.json", "model_refused"), ("half.json", "model_unloadable")):
        status, error = predict(web, name)
        assert (status, error["error"]["code"]) == (422, code), error
    assert predict(web, "good.json")[0] == 200

    shutil.copy(models / "good.json", models / ".fixed.part")
    os.replace(models / ".fixed.part", models / "half.json")
    wait_for(lambda: model(web, "half.json")[1]["loaded"], 30, "the fixed half.json to load")
    assert "load_error" not in model(web, "half.json")[1]
    assert predict(web, "half.json")[0] == 200
