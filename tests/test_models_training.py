"""`train_demo`: three small models the store serves, fast and deterministic."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from models import ModelStore
from models.training import FEATURE_NAMES, train_demo

PLAN_EXAMPLE = [[1.5, 2.3, 0.8, 1.2, 0.5]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[str], float]:
    folder = tmp_path_factory.mktemp("demo") / "model_store"  # created by train_demo
    messages: list[str] = []
    started = time.monotonic()
    paths = train_demo(folder, progress=messages.append)
    return folder, paths, messages, time.monotonic() - started


def test_three_small_models_with_sidecars(demo):
    folder, paths, messages, seconds = demo
    assert [path.name for path in paths] == ["xgboost_model.json", "lightgbm_model.txt", "lstm_model.pt"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(path.name for path in paths), *(path.name + ".meta.json" for path in paths)]
    )  # no temporary file left behind
    assert all(path.stat().st_size < 1_000_000 for path in paths)
    assert messages == [f"training {path.name} ..." for path in paths]
    assert seconds < 20


def test_the_store_serves_them(demo):
    folder, _, _, _ = demo
    store = ModelStore(folder, settle_s=0)
    assert [(file.name, file.type, file.format) for file in store.list()] == [
        ("lightgbm_model.txt", "lightgbm", "txt"),
        ("lstm_model.pt", "lstm", "checkpoint"),
        ("xgboost_model.json", "xgboost", "json"),
    ]
    assert store.preload() == {"lightgbm_model.txt": None, "lstm_model.pt": None, "xgboost_model.json": None}


@pytest.mark.parametrize("name", ["xgboost_model", "lightgbm_model"])
def test_the_plan_example_predicts_on_the_tree_models(demo, name: str):
    model = ModelStore(demo[0], settle_s=0).load(name)
    prediction = model.predict(PLAN_EXAMPLE)
    assert prediction.shape == (1,)
    assert 0 <= prediction[0] <= 1  # a probability
    facts = model.adapter.describe()
    assert facts["n_features"] == 5
    assert facts["feature_names"] == FEATURE_NAMES
    assert facts["objective"].startswith("binary")


def test_the_lstm_takes_any_sequence_length(demo):
    model = ModelStore(demo[0], settle_s=0).load("lstm_model", model_type="pytorch")
    facts = model.describe()
    assert (facts["n_features"], facts["sequence_length"], facts["fixed_sequence_length"]) == (5, 20, False)
    rng = np.random.default_rng(0)
    assert model.predict(rng.normal(size=(20, 5)).tolist()).shape == (1,)
    assert model.predict(rng.normal(size=(3, 7, 5)).tolist()).shape == (3,)


def test_training_is_deterministic(demo, tmp_path: Path):
    again = train_demo(tmp_path, progress=lambda message: None)
    store, first = ModelStore(tmp_path, settle_s=0), ModelStore(demo[0], settle_s=0)
    for path in again:
        assert store.resolve(path.name).version == first.resolve(path.name).version
