"""The model store: listing, safe names, sidecars, and models that change while they serve."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import lightgbm
import numpy as np
import pytest
import xgboost

from models import (
    InvalidModelName,
    ModelError,
    ModelLoading,
    ModelNotFound,
    ModelRefused,
    ModelStore,
    ModelUnloadable,
)
from tests.support.model_zoo import close

ROOT = Path(__file__).resolve().parents[1]
SETTLE_S = 0.2


def booster(seed: int, rounds: int = 8) -> xgboost.Booster:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(300, 5))
    target = (data[:, seed % 5] > 0).astype(float)
    return xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": seed}, xgboost.DMatrix(data, target), rounds
    )


def predictions(model: xgboost.Booster, data: np.ndarray) -> np.ndarray:
    return model.predict(xgboost.DMatrix(data))


def settled(path: Path) -> Path:
    """Date the file back, as if written a while ago."""
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    return models


# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/b", "a\\b", "..", ".", ".hidden", "x\x00.json", "", "m" * 256]
)
def test_unsafe_names_are_refused(folder: Path, name: str):
    settled_file = folder / "model.json"
    booster(0).save_model(settled_file)
    store = ModelStore(folder, settle_s=0)
    for call in (store.resolve, store.load):
        with pytest.raises(InvalidModelName) as caught:
            call(name)
        assert caught.value.status == 400
        assert caught.value.code == "invalid_model_name"


def test_a_symlink_out_of_the_directory_is_as_if_absent(tmp_path: Path, folder: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    booster(0).save_model(outside / "real.json")
    (folder / "escape.json").symlink_to(outside / "real.json")
    (folder / "relative.json").symlink_to(Path("..") / "outside" / "real.json")
    booster(1).save_model(folder / "inside.json")
    (folder / "alias.json").symlink_to("inside.json")
    store = ModelStore(folder, settle_s=0)
    assert [file.name for file in store.list()] == ["alias.json", "inside.json"]
    for name in ("escape.json", "escape", "relative.json"):
        with pytest.raises(ModelNotFound):
            store.load(name)
    assert store.load("alias").file.version == store.load("inside").file.version


def test_stems_resolve_only_when_unambiguous(folder: Path):
    booster(0).save_model(folder / "model.json")
    booster(0).save_model(folder / "model.ubj")
    booster(1).save_model(folder / "single.json")
    store = ModelStore(folder, settle_s=0)
    assert store.resolve("single").name == "single.json"
    assert store.resolve("model.ubj").format == "ubj"
    with pytest.raises(ModelNotFound) as caught:
        store.resolve("model")
    assert caught.value.details == {"candidates": ["model.json", "model.ubj"]}
    assert "model.json, model.ubj" in caught.value.message
    data = np.random.default_rng(0).normal(size=(50, 2))
    trained = lightgbm.train({"verbose": -1}, lightgbm.Dataset(data, data[:, 0]), 2)
    trained.save_model(folder / "other.json.txt")
    assert store.resolve("other.json.txt").type == "lightgbm"
    with pytest.raises(ModelNotFound):  # a file name is not taken for a stem
        store.resolve("other.json")
    with pytest.raises(ModelNotFound) as unknown:
        store.load("nothing_here")
    assert unknown.value.status == 404


def test_listing_skips_what_is_not_a_model(folder: Path, caplog: pytest.LogCaptureFixture):
    model = booster(0)
    model.save_model(folder / "model.json")
    (folder / "model.json.meta.json").write_text('{"description": "d"}')
    for name in (".hidden.json", "next.json.tmp", "upload.json.part"):
        (folder / name).write_bytes(model.save_raw(raw_format="json"))
    (folder / "folder.json").mkdir()
    (folder / "notes.txt").write_text("not a model\n")
    (folder / "data.csv").write_text("a,b\n")
    (folder / "broken.pt").write_bytes(b"not a zip")
    caplog.set_level(logging.WARNING, logger="models")
    store = ModelStore(folder, settle_s=0)
    assert [file.name for file in store.list()] == ["model.json"]
    assert "notes.txt is not served" in caplog.text
    assert "broken.pt is not served" in caplog.text
    for name in ("model.json.meta.json", "next.json.tmp", "folder.json", "data.csv"):
        with pytest.raises(ModelNotFound):
            store.resolve(name)
    with pytest.raises(ModelRefused):  # there, but not a model: says why
        store.resolve("notes.txt")


def test_listing_needs_no_directory(tmp_path: Path):
    store = ModelStore(tmp_path / "missing")
    assert store.list() == []
    assert store.preload() == {}
    with pytest.raises(ModelNotFound):
        store.load("model.json")


# -- files and sidecars ----------------------------------------------------------------


def test_model_file_metadata_is_json_safe_and_pathless(folder: Path):
    booster(0).save_model(folder / "model.json")
    (folder / "model.json.meta.json").write_text(
        json.dumps({"type": "xgboost", "n_features": 5, "feature_names": list("abcde"), "description": "x"})
    )
    file = ModelStore(folder).resolve("model")
    facts = file.to_dict()
    text = json.dumps(facts)
    assert str(folder) not in text
    assert file.modified.tzinfo is UTC
    assert facts["size_bytes"] == (folder / "model.json").stat().st_size
    assert facts["size_mb"] == round(facts["size_bytes"] / 1_000_000, 3)
    assert len(facts["version"]) == 16
    assert facts["n_features"] == 5
    assert facts["feature_names"] == list("abcde")
    assert facts["description"] == "x"
    assert facts["input_kind"] == "rows"


def test_a_sidecar_sets_the_models_own_batching(folder: Path):
    booster(0).save_model(folder / "model.json")
    (folder / "model.json.meta.json").write_text('{"max_batch": 16, "batch_wait_s": 0.004}')
    facts = ModelStore(folder).resolve("model").to_dict()
    assert (facts["max_batch"], facts["batch_wait_s"]) == (16, 0.004)


@pytest.mark.parametrize(
    "sidecar",
    [
        "{not json",
        "[1, 2]",
        '{"n_features": "5"}',
        '{"feature_names": [1, 2]}',
        '{"type": "sklearn"}',
        '{"max_batch": 0}',
        '{"max_batch": 2.5}',
        '{"batch_wait_s": -1}',
        '{"batch_wait_s": 5}',
        '{"batch_wait_s": true}',
    ],
)
def test_a_broken_sidecar_is_ignored(folder: Path, sidecar: str, caplog: pytest.LogCaptureFixture):
    model = booster(0)
    model.save_model(folder / "model.json")
    (folder / "model.json.meta.json").write_text(sidecar)
    store = ModelStore(folder, settle_s=0)
    assert store.resolve("model.json").meta == {}
    assert "sidecar model.json.meta.json ignored" in caplog.text
    data = np.ones((2, 5))
    assert close(store.load("model").predict(data.tolist()), predictions(model, data))


def test_a_sidecar_type_that_contradicts_the_file_is_ignored(folder: Path, caplog: pytest.LogCaptureFixture):
    booster(0).save_model(folder / "model.json")
    (folder / "model.json.meta.json").write_text('{"type": "lstm", "description": "kept"}')
    store = ModelStore(folder, settle_s=0)
    file = store.resolve("model")
    assert (file.type, file.meta) == ("xgboost", {"description": "kept"})
    assert "type 'lstm' ignored" in caplog.text


def test_touching_a_file_keeps_its_version_and_loaded_model(folder: Path):
    path = folder / "model.json"
    booster(0).save_model(path)
    settled(path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    first = store.load("model.json")
    os.utime(path, (time.time() - 30, time.time() - 30))
    again = store.load("model.json")
    assert again is first
    assert store.loaded() == {"model.json": first.file.version}


# -- loading -------------------------------------------------------------------------


def test_a_file_still_being_written_is_loading_not_unloadable(folder: Path):
    booster(0).save_model(folder / "model.json")
    store = ModelStore(folder, settle_s=SETTLE_S)
    with pytest.raises(ModelLoading, match="still being written") as loading:
        store.load("model.json")
    assert loading.value.status == 503 and loading.value.details == {"retry_after_s": 1}
    wait_for(lambda: _loads(store, "model.json"))


def test_a_file_replaced_in_place_answers_with_its_old_version_until_the_new_one_loads(folder: Path):
    path = folder / "model.json"
    booster(0).save_model(path)
    settled(path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    old = store.load("model.json")
    booster(1).save_model(path)  # rewritten where it lies, not renamed in
    assert store.load("model.json") is old  # while it may still be being written
    wait_for(lambda: store.load("model.json") is not old)
    assert store.load("model.json").file.version != old.file.version


def _loads(store: ModelStore, name: str) -> bool:
    try:
        store.load(name)
    except ModelLoading:
        return False
    return True


def test_an_unloadable_file_says_so_without_server_details(folder: Path):
    data = booster(0).save_raw(raw_format="json")
    settled_path = folder / "model.json"
    settled_path.write_bytes(data[: len(data) // 2])
    settled(settled_path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    for _ in range(2):  # the second answer is the remembered failure
        with pytest.raises(ModelUnloadable) as caught:
            store.load("model.json")
        assert caught.value.status == 422
        assert "model.json cannot be loaded as a xgboost model" in caught.value.message
        assert str(folder) not in caught.value.message
        assert "workspace" not in caught.value.message


def test_a_replacement_that_is_no_model_leaves_the_old_version_serving_until_a_good_one(folder: Path):
    data = np.random.default_rng(0).normal(size=(4, 5))
    path = folder / "model.json"
    booster(0).save_model(path)
    settled(path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    old = store.load("model.json")
    staged = folder / ".model.json.part"
    staged.write_text('{"not": "a model"}')
    os.replace(staged, path)
    settled(path)

    assert store.load("model.json") is old  # asked by name, the old version answers
    assert (
        store.preload()["model.json"]
        == "model.json: not an XGBoost JSON model (as written by Booster.save_model)"
    )
    assert store.loaded() == {"model.json": old.file.version}
    version, error = store.failures()["model.json"]
    assert version != old.file.version and error.code == "model_refused"

    new = booster(1)
    staged.write_bytes(new.save_raw(raw_format="json"))
    os.replace(staged, path)
    settled(path)
    wait_for(
        lambda: store.preload() == {"model.json": None} and store.loaded()["model.json"] != old.file.version
    )
    assert close(store.load("model.json").predict(data.tolist()), predictions(new, data))
    assert store.failures() == {}


def test_a_file_that_never_loaded_is_a_failure_of_its_own_name_only(folder: Path):
    booster(0).save_model(folder / "good.json")
    (folder / "broken.json").write_text("{}")
    payload = booster(1).save_raw(raw_format="json")
    (folder / "half.json").write_bytes(payload[: len(payload) // 2])
    for path in folder.iterdir():
        settled(path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    report = store.preload()
    assert report["good.json"] is None
    assert "not an XGBoost JSON model" in report["broken.json"]
    assert "cannot be loaded" in report["half.json"]
    assert {name: error.code for name, (_, error) in store.failures().items()} == {
        "broken.json": "model_refused",
        "half.json": "model_unloadable",
    }
    assert list(store.loaded()) == ["good.json"]
    with pytest.raises(ModelRefused):
        store.load("broken.json")
    (folder / "broken.json").unlink()
    (folder / "half.json").unlink()
    store.preload()
    assert store.failures() == {}


def test_a_deleted_file_is_dropped(folder: Path):
    path = folder / "model.json"
    booster(0).save_model(path)
    settled(path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    store.load("model")
    path.unlink()
    with pytest.raises(ModelNotFound):
        store.load("model.json")
    assert store.loaded() == {}


def test_preload_reports_each_model_and_never_raises(folder: Path):
    model = booster(0)
    model.save_model(folder / "good.json")
    (folder / "refused.pkl").write_bytes(pickle.dumps(model))
    for path in folder.iterdir():
        settled(path)
    store = ModelStore(folder)
    report = store.preload()
    assert report["good.json"] is None
    assert "pickled models are refused" in report["refused.pkl"]
    assert list(store.loaded()) == ["good.json"]


def test_hot_reload_under_concurrent_predictions(tmp_path: Path, folder: Path):
    old, new = booster(1), booster(2)
    data = np.random.default_rng(0).normal(size=(16, 5))
    expected_old, expected_new = predictions(old, data), predictions(new, data)
    assert not close(expected_old, expected_new)
    path = folder / "model.json"
    old.save_model(path)
    settled(path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    old_version = store.load("model.json").file.version

    answers: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def keep_predicting() -> None:
        while not stop.is_set():
            try:
                result = store.load("model.json").predict(data.tolist())
            except BaseException as exc:
                failures.append(exc)
                return
            answers.append(
                "old" if close(result, expected_old) else "new" if close(result, expected_new) else "bad"
            )

    threads = [threading.Thread(target=keep_predicting) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: answers.count("old") >= 20)
        staging = tmp_path / "staging"
        staging.mkdir()
        new.save_model(staging / "model.json")
        os.replace(staging / "model.json", path)
        assert store.load("model.json").file.version == old_version  # not settled yet
        wait_for(lambda: store.loaded()["model.json"] != old_version)
        seen = len(answers)
        wait_for(lambda: len(answers) >= seen + 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert "bad" not in answers
    assert answers[-1] == "new"
    assert "new" in answers and "old" in answers
    after = answers[answers.index("new") :]
    assert after.count("old") <= len(threads)  # only calls already under way when it swapped


def test_a_half_written_file_never_serves(folder: Path):
    old, new = booster(1), booster(2)
    data = np.random.default_rng(0).normal(size=(4, 5))
    path = folder / "model.json"
    old.save_model(path)
    settled(path)
    store = ModelStore(folder, settle_s=SETTLE_S)
    old_version = store.load("model.json").file.version
    payload = new.save_raw(raw_format="json")
    with path.open("r+b") as handle:  # in place, as a careless copy would
        handle.truncate(0)
        handle.write(payload[: len(payload) // 2])
    written = time.time()
    while time.time() - written < 3 * SETTLE_S:  # before and well after it has settled
        assert close(store.load("model.json").predict(data.tolist()), predictions(old, data))
        time.sleep(0.02)
    assert store.loaded() == {"model.json": old_version}
    with path.open("r+b") as handle:  # the writer finishes
        handle.seek(0)
        handle.write(payload)
    wait_for(lambda: close(store.load("model.json").predict(data.tolist()), predictions(new, data)))
    assert store.loaded()["model.json"] != old_version


def test_errors_render_as_the_api_expects(folder: Path):
    with pytest.raises(ModelError) as caught:
        ModelStore(folder).load("missing.json")
    assert caught.value.to_dict() == {"code": "model_not_found", "message": "no model named 'missing.json'"}


def test_limit_threads_sets_one_thread_everywhere():
    code = """
import os
from models import limit_threads
limit_threads()
import torch
limit_threads()
limit_threads()
print(os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"], os.environ["OPENBLAS_NUM_THREADS"],
      torch.get_num_threads(), torch.get_num_interop_threads())
"""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1", "1", "1", "1"]
