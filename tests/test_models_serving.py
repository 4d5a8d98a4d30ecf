"""Model files written by the libraries' own save functions are served exactly as in-process.

Every file here is made by XGBoost, LightGBM or PyTorch themselves (plus the project's
LSTM checkpoint), then served through `ModelStore`, and its predictions are compared with
the library's own predictions for the same file.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import lightgbm
import numpy as np
import pytest
import torch
import xgboost

from models import InputMismatch, ModelRefused, ModelStore, ModelTypeMismatch, ModelUnloadable
from models.lstm import LSTMForecaster, save_checkpoint
from tests.support.model_zoo import labels_of, random_rows

# torch 2.13 deprecates TorchScript (torch.jit); it is still one of the formats served.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch", "ignore::torch.jit.TracerWarning")

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6


def rows(n: int = 64, width: int = 5, seed: int = 1, nan_share: float = 0.0) -> np.ndarray:
    return random_rows(n, width, seed, nan_share)


class TinyLSTM(torch.nn.Module):
    def __init__(self, n_features: int = 4, hidden: int = 8, outputs: int = 2):
        super().__init__()
        self.lstm = torch.nn.LSTM(n_features, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of models, each saved by its library's own save function."""
    folder = tmp_path_factory.mktemp("zoo")
    train = rows(400, nan_share=0.1, seed=0)
    binary = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(train, labels_of(train)), 20
    )
    binary.save_model(folder / "xgb_binary.json")
    binary.save_model(folder / "xgb_binary.ubj")
    multi = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
        xgboost.DMatrix(train, labels_of(train, 3)),
        10,
    )
    multi.save_model(folder / "xgb_multi.json")
    multi.save_model(folder / "xgb_multi.ubj")
    named = xgboost.train(
        {"objective": "reg:squarederror"},
        xgboost.DMatrix(train, labels_of(train), feature_names=["a", "b", "c", "d", "e"]),
        5,
    )
    named.save_model(folder / "xgb_named.json")
    params = {"verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5}
    lgb_binary = lightgbm.train(
        {**params, "objective": "binary"}, lightgbm.Dataset(train, labels_of(train)), 20
    )
    lgb_binary.save_model(folder / "lgb_binary.txt")
    lgb_multi = lightgbm.train(
        {**params, "objective": "multiclass", "num_class": 3},
        lightgbm.Dataset(train, labels_of(train, 3)),
        10,
    )
    lgb_multi.save_model(folder / "lgb_multi.txt")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(TinyLSTM().eval()), folder / "lstm_script.pt")
    traced = torch.jit.trace(TinyLSTM(outputs=1).eval(), torch.zeros(1, 6, 4))
    torch.jit.save(traced, folder / "lstm_traced.pth")
    (folder / "lstm_traced.pth.meta.json").write_text(json.dumps({"n_features": 4, "type": "pytorch"}))
    forecaster = LSTMForecaster(input_size=3, hidden_size=8, num_layers=2, output_size=1, dropout=0.1).eval()
    save_checkpoint(forecaster, folder / "lstm_checkpoint.pt")
    with (folder / "booster.pkl").open("wb") as handle:
        pickle.dump(binary, handle)
    return folder


@pytest.fixture(scope="module")
def store(zoo: Path) -> ModelStore:
    return ModelStore(zoo, settle_s=0)


def assert_close(served: np.ndarray, expected: np.ndarray) -> None:
    assert served.shape == expected.shape
    assert float(np.max(np.abs(served - expected))) <= TOLERANCE


@pytest.mark.parametrize("name", ["xgb_binary.json", "xgb_binary.ubj", "xgb_multi.json", "xgb_multi.ubj"])
def test_xgboost_files_predict_like_the_library(store: ModelStore, zoo: Path, name: str):
    data = rows(50, nan_share=0.2)  # NaN is a missing value for trees
    expected = xgboost.Booster(model_file=str(zoo / name)).predict(xgboost.DMatrix(data))
    assert_close(store.load(name).predict(data.tolist()), expected)
    if "multi" in name:
        assert expected.shape == (50, 3)
        assert store.load(name).adapter.describe()["num_class"] == 3


def test_xgboost_feature_names_come_from_the_booster(store: ModelStore, zoo: Path):
    data = rows(10)
    reference = xgboost.Booster(model_file=str(zoo / "xgb_named.json"))
    expected = reference.predict(xgboost.DMatrix(data, feature_names=["a", "b", "c", "d", "e"]))
    model = store.load("xgb_named")
    assert model.adapter.feature_names == ["a", "b", "c", "d", "e"]
    assert_close(model.predict(data.tolist()), expected)


@pytest.mark.parametrize("name", ["lgb_binary.txt", "lgb_multi.txt"])
def test_lightgbm_files_predict_like_the_library(store: ModelStore, zoo: Path, name: str):
    data = rows(50, nan_share=0.2)
    expected = lightgbm.Booster(model_file=str(zoo / name)).predict(data)
    model = store.load(name)
    assert_close(model.predict(data.tolist()), expected)
    facts = model.adapter.describe()
    assert facts["n_features"] == 5
    assert facts["feature_names"] is None  # LightGBM's invented Column_i are not names


def test_torchscript_lstm_predicts_like_torch(store: ModelStore, zoo: Path):
    batch = np.random.default_rng(3).normal(size=(7, 12, 4)).astype(np.float32)
    with torch.no_grad():
        expected = torch.jit.load(str(zoo / "lstm_script.pt"))(torch.from_numpy(batch)).numpy()
    model = store.load("lstm_script.pt", model_type="pytorch")
    assert model.file.format == "torchscript"
    assert model.adapter.n_features is None  # no sidecar: unknown
    assert_close(model.predict(batch.tolist()), expected)
    # One sequence (time x features) is a batch of one.
    assert_close(model.predict(batch[0].tolist()), expected[:1])


def test_traced_lstm_gives_one_value_per_sequence_and_reads_its_sidecar(store: ModelStore, zoo: Path):
    batch = np.random.default_rng(4).normal(size=(5, 6, 4)).astype(np.float32)
    with torch.no_grad():
        expected = torch.jit.load(str(zoo / "lstm_traced.pth"))(torch.from_numpy(batch)).numpy()
    model = store.load("lstm_traced", model_type="torch")
    assert model.adapter.n_features == 4
    assert_close(model.predict(batch.tolist()), expected[:, 0])
    with pytest.raises(InputMismatch) as caught:
        model.predict(batch[:, :, :3].tolist())
    assert caught.value.details["expected"] == "(time, 4) or (batch, time, 4)"


def test_torchscript_rejecting_an_input_is_an_input_mismatch(store: ModelStore, zoo: Path):
    model = store.load("lstm_script.pt")  # n_features unknown, so torch itself refuses
    with pytest.raises(InputMismatch) as caught:
        model.predict(np.zeros((2, 5, 3)).tolist())
    assert "rejected input of shape [2, 5, 3]" in caught.value.message
    assert str(zoo) not in caught.value.message
    assert "Traceback" not in caught.value.message


def test_project_lstm_checkpoint_predicts_like_the_module(store: ModelStore, zoo: Path):
    torch.manual_seed(0)
    module = LSTMForecaster(input_size=3, hidden_size=8, num_layers=2, output_size=1, dropout=0.1).eval()
    module.load_state_dict(torch.load(zoo / "lstm_checkpoint.pt", weights_only=True)["state_dict"])
    batch = np.random.default_rng(5).normal(size=(4, 9, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()[:, 0]
    model = store.load("lstm_checkpoint")
    assert model.file.format == "checkpoint"
    assert model.adapter.describe()["config"]["num_layers"] == 2
    assert_close(model.predict(batch.tolist()), expected)


def test_descriptions_are_json(store: ModelStore):
    for file in store.list():
        if file.format != "pickle":
            described = store.load(file.name).describe()
            assert json.loads(json.dumps(described)) == described
            assert described["input_kind"] == ("sequences" if file.type == "lstm" else "rows")


def test_checkpoints_load_only_plain_weights(tmp_path: Path):
    marker = tmp_path / "pwned"
    module = LSTMForecaster(input_size=2, hidden_size=4, num_layers=1)
    bad_config = {**module.config, "hidden_size": "4"}
    checkpoints = {
        "module.pt": {"format": "tradebot-lstm", "version": 1, "payload": WritesMarker(marker)},
        "state_dict.pt": module.state_dict(),
        "config.pt": {"format": "tradebot-lstm", "version": 1, "config": bad_config, "state_dict": {}},
        "weights.pt": {"format": "tradebot-lstm", "version": 1, "config": {**module.config, "hidden_size": 5}}
        | {"state_dict": module.state_dict()},
        "version.pt": {"format": "tradebot-lstm", "version": 99},
    }
    for name, content in checkpoints.items():
        torch.save(content, tmp_path / name)
    store = ModelStore(tmp_path, settle_s=0)
    assert {file.name for file in store.list()} == set(checkpoints)
    messages = {}
    for name in checkpoints:
        with pytest.raises(ModelUnloadable) as caught:
            store.load(name)
        messages[name] = caught.value.message
    assert not marker.exists()
    assert "Python objects besides tensors" in messages["module.pt"]
    assert "not a tradebot-lstm checkpoint" in messages["state_dict.pt"]
    assert "hidden_size must be an integer" in messages["config.pt"]
    assert "weights do not match" in messages["weights.pt"]
    assert "unsupported checkpoint version" in messages["version.pt"]


def test_types_and_formats_are_told_by_content(store: ModelStore):
    found = {file.name: (file.type, file.format) for file in store.list()}
    assert found == {
        "booster.pkl": ("xgboost", "pickle"),
        "lgb_binary.txt": ("lightgbm", "txt"),
        "lgb_multi.txt": ("lightgbm", "txt"),
        "lstm_checkpoint.pt": ("lstm", "checkpoint"),
        "lstm_script.pt": ("lstm", "torchscript"),
        "lstm_traced.pth": ("lstm", "torchscript"),
        "xgb_binary.json": ("xgboost", "json"),
        "xgb_binary.ubj": ("xgboost", "ubj"),
        "xgb_multi.json": ("xgboost", "json"),
        "xgb_multi.ubj": ("xgboost", "ubj"),
        "xgb_named.json": ("xgboost", "json"),
    }


def test_a_given_model_type_must_match(store: ModelStore):
    with pytest.raises(ModelTypeMismatch) as caught:
        store.load("xgb_binary.json", model_type="lightgbm")
    assert caught.value.status == 422
    assert caught.value.details == {"expected": "xgboost", "received": "lightgbm"}
    with pytest.raises(ModelTypeMismatch):
        store.load("lgb_binary.txt", model_type="sklearn")


def test_listing_imports_no_ml_library(zoo: Path):
    code = f"""
import json, sys
import models, models.base, models.store, models.validation
from models import ModelRefused
from models import ModelStore
from models import features_array
store = ModelStore({str(zoo)!r})
listed = {{file.name: file.to_dict()["type"] for file in store.list()}}
store.resolve("xgb_named")
try:
    store.load("booster.pkl")
except ModelRefused:
    pass
features_array(store.resolve("lgb_binary").to_dict(), [[1, 2, 3, 4, 5]])
imported = [name for name in ("torch", "xgboost", "lightgbm") if name in sys.modules]
print(json.dumps({{"listed": len(listed), "imported": imported}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"listed": 11, "imported": []}


# -- pickles -------------------------------------------------------------------------


class WritesMarker:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class CallsGetpid:
    """A harmless stand-in for a payload: refers to a function of `os`."""

    def __reduce__(self):
        return (os.getpid, ())


def test_a_pickle_is_refused_unless_allowed(store: ModelStore):
    with pytest.raises(ModelRefused) as caught:
        store.load("booster.pkl")
    assert caught.value.status == 422
    assert "ALLOW_PICKLE_MODELS" in caught.value.message


@pytest.mark.parametrize("disguised", [False, True])
def test_a_malicious_pickle_is_never_unpickled(tmp_path: Path, zoo: Path, disguised: bool):
    marker = tmp_path / "pwned"
    payload = WritesMarker(marker)
    if disguised:  # a real booster first, so its type reads as xgboost
        payload = [xgboost.Booster(model_file=str(zoo / "xgb_binary.json")), payload]
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "evil.pkl").write_bytes(pickle.dumps(payload))
    store = ModelStore(folder, settle_s=0)
    store.list()
    store.preload()
    with pytest.raises(ModelRefused):
        store.load("evil.pkl")
    with pytest.raises(ModelRefused):
        store.load("evil.pkl", model_type="xgboost")
    assert not marker.exists()


def test_allowed_pickles_of_boosters_load(tmp_path: Path, zoo: Path):
    booster = xgboost.Booster(model_file=str(zoo / "xgb_multi.json"))
    lgb = lightgbm.Booster(model_file=str(zoo / "lgb_binary.txt"))
    (tmp_path / "xgb.pkl").write_bytes(pickle.dumps(booster))
    (tmp_path / "lgb.pickle").write_bytes(pickle.dumps(lgb))
    store = ModelStore(tmp_path, allow_pickle=True, settle_s=0)
    data = rows(20, nan_share=0.1)
    assert_close(store.load("xgb").predict(data.tolist()), booster.predict(xgboost.DMatrix(data)))
    assert_close(store.load("lgb").predict(data.tolist()), lgb.predict(data))
    assert store.load("lgb").file.type == "lightgbm"


def test_allowed_pickle_of_an_xgb_classifier_loads(tmp_path: Path):
    data = rows(100)
    classifier = xgboost.XGBClassifier(n_estimators=5).fit(data, labels_of(data))
    (tmp_path / "classifier.pkl").write_bytes(pickle.dumps(classifier))
    served = ModelStore(tmp_path, allow_pickle=True, settle_s=0).load("classifier.pkl").predict(data.tolist())
    assert_close(served, classifier.get_booster().predict(xgboost.DMatrix(data)))


def test_allowed_pickles_still_resolve_only_model_classes(tmp_path: Path, zoo: Path):
    booster = xgboost.Booster(model_file=str(zoo / "xgb_binary.json"))
    (tmp_path / "mixed.pkl").write_bytes(pickle.dumps([booster, CallsGetpid()]))
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    store = ModelStore(tmp_path, allow_pickle=True, settle_s=0)
    with pytest.raises(ModelRefused, match=r"posix\.getpid is not part of a model"):
        store.load("mixed.pkl")
    with pytest.raises(ModelRefused, match="not a plain pickle"):
        store.load("other.pkl")
