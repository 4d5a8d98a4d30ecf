"""Per-feature contributions of tree models are the libraries' own, served as in-process.

Every model here is trained in the test by XGBoost or LightGBM, saved by the library's own
save function and loaded through `ModelStore`; the adapter's `contributions` are compared
with the library's `pred_contribs` / `pred_contrib` for the same file, and each row's
contributions (the bias last) must add up to the raw margin. Models of other types refuse.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lightgbm
import numpy as np
import pytest
import torch
import xgboost

from models import ExplanationUnsupported, ModelError, ModelStore, features_array
from models.lstm import LSTMForecaster, save_checkpoint
from tests.support.model_zoo import labels_of, random_rows

# torch 2.13 deprecates TorchScript (torch.jit); it is still one of the formats served.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")

SAME = 1e-5  # the adapter against the library called directly
SUMS = 1e-4  # a row's contributions against its raw margin
WIDTH = 4
CLASSES = 3


def rows(n: int, seed: int, nan_share: float = 0.0) -> np.ndarray:
    return random_rows(n, WIDTH, seed, nan_share, decimals=4)


TRAIN = rows(60, seed=0, nan_share=0.1)
# Missing values here and there, one row missing everything, one with none missing.
QUERY = rows(12, seed=1, nan_share=0.25)
QUERY[0] = np.nan
QUERY[1] = rows(1, seed=2)[0]

# Categorical: feature 1 holds category codes 0..3.
CATEGORICAL_TYPES = ["q", "c", "q", "q"]
CAT_TRAIN = TRAIN.copy()
CAT_TRAIN[:, 1] = np.arange(len(TRAIN)) % 4
CAT_QUERY = QUERY.copy()
CAT_QUERY[2:, 1] = np.arange(len(QUERY) - 2) % 4  # rows 0 and 1 keep NaN and a plain value
CAT_QUERY[1, 1] = 2.0

XGB_PARAMS = {"max_depth": 3, "eta": 0.3}
XGB_MODELS = {
    "xgb_reg": ({"objective": "reg:squarederror"}, TRAIN, np.nan_to_num(TRAIN[:, 0] * 2 + TRAIN[:, 2])),
    "xgb_binary": ({"objective": "binary:logistic"}, TRAIN, labels_of(TRAIN)),
    "xgb_multi": ({"objective": "multi:softprob", "num_class": CLASSES}, TRAIN, labels_of(TRAIN, CLASSES)),
    "xgb_cat": ({"objective": "binary:logistic"}, CAT_TRAIN, labels_of(TRAIN)),
}
GBM_PARAMS = {"verbose": -1, "num_leaves": 5, "min_data_in_leaf": 3, "min_data_in_bin": 1}
GBM_MODELS = {
    "gbm_reg": ({"objective": "regression"}, np.nan_to_num(TRAIN[:, 0] * 2 + TRAIN[:, 2])),
    "gbm_binary": ({"objective": "binary"}, labels_of(TRAIN)),
    "gbm_multi": ({"objective": "multiclass", "num_class": CLASSES}, labels_of(TRAIN, CLASSES)),
}


def xgb_matrix(name: str, data: np.ndarray) -> xgboost.DMatrix:
    if name == "xgb_cat":
        return xgboost.DMatrix(data, feature_types=CATEGORICAL_TYPES, enable_categorical=True)
    return xgboost.DMatrix(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small models (60 rows, a few trees), each saved by its library's own save function."""
    folder = tmp_path_factory.mktemp("explain")
    for name, (params, data, target) in XGB_MODELS.items():
        matrix = xgb_matrix(name, data)
        matrix.set_label(target)
        booster = xgboost.train({**XGB_PARAMS, **params}, matrix, 5)
        booster.save_model(folder / f"{name}.json")
        booster.save_model(folder / f"{name}.ubj")
    for name, (params, target) in GBM_MODELS.items():
        booster = lightgbm.train({**GBM_PARAMS, **params}, lightgbm.Dataset(TRAIN, target), 5)
        booster.save_model(folder / f"{name}.txt")
    linear = lightgbm.train(
        {**GBM_PARAMS, "objective": "regression", "linear_tree": True},
        lightgbm.Dataset(TRAIN, np.nan_to_num(TRAIN[:, 0])),
        3,
    )
    linear.save_model(folder / "gbm_linear.txt")
    torch.manual_seed(0)
    script = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6 * WIDTH, 1)).eval())
    torch.jit.save(script, folder / "lstm_script.pt")
    save_checkpoint(LSTMForecaster(input_size=WIDTH, hidden_size=4, num_layers=1), folder / "lstm.pt")
    return folder


@pytest.fixture(scope="module")
def store(folder: Path) -> ModelStore:
    return ModelStore(folder, settle_s=0)


def served(store: ModelStore, name: str, data: np.ndarray) -> np.ndarray:
    """What the worker does: check the features as a request's, then ask the adapter."""
    model = store.load(name)
    return model.adapter.contributions(features_array(model.adapter, data.tolist()))


def check_layout(values: np.ndarray, margin: np.ndarray, n_rows: int, n_classes: int | None) -> None:
    expected_shape = (n_rows, WIDTH + 1) if n_classes is None else (n_rows, n_classes, WIDTH + 1)
    assert values.shape == expected_shape
    assert margin.shape == expected_shape[:-1]
    assert np.isfinite(values).all()
    # The bias is last: the column that is the same in every row (per class), and every
    # row's contributions, bias included, add up to its raw margin.
    bias = values[..., -1]
    assert np.allclose(bias, bias[0], atol=1e-6)
    assert float(np.max(np.abs(values.sum(axis=-1) - margin))) <= SUMS


@pytest.mark.parametrize("ext", ["json", "ubj"])
@pytest.mark.parametrize("name", list(XGB_MODELS))
def test_xgboost_contributions_are_the_librarys(store: ModelStore, folder: Path, name: str, ext: str):
    file = f"{name}.{ext}"
    data = CAT_QUERY if name == "xgb_cat" else QUERY
    reference = xgboost.Booster(model_file=str(folder / file))
    expected = reference.predict(xgb_matrix(name, data), pred_contribs=True)
    values = served(store, file, data)
    assert values.shape == expected.shape
    assert float(np.max(np.abs(values - expected))) <= SAME
    margin = reference.predict(xgb_matrix(name, data), output_margin=True)
    check_layout(values, margin, len(data), CLASSES if name == "xgb_multi" else None)


def test_xgboost_categorical_model_uses_its_categories(store: ModelStore):
    assert store.load("xgb_cat.json").adapter.booster.feature_types == CATEGORICAL_TYPES
    values = served(store, "xgb_cat.json", CAT_QUERY)
    # Rows that differ only in the category get different contributions from feature 1.
    varied = np.repeat(CAT_QUERY[1:2], 4, axis=0)
    varied[:, 1] = [0, 1, 2, 3]
    per_category = served(store, "xgb_cat.json", varied)[:, 1]
    assert len(set(np.round(per_category, 6))) > 1
    assert values.shape == (len(CAT_QUERY), WIDTH + 1)


def test_xgboost_contributions_keep_the_feature_names(tmp_path: Path):
    names = ["a", "b", "c", "d"]
    booster = xgboost.train(XGB_PARAMS, xgboost.DMatrix(TRAIN, labels_of(TRAIN), feature_names=names), 3)
    booster.save_model(tmp_path / "named.json")
    model = ModelStore(tmp_path, settle_s=0).load("named")
    assert model.adapter.feature_names == names
    expected = booster.predict(xgboost.DMatrix(QUERY, feature_names=names), pred_contribs=True)
    values = model.adapter.contributions(features_array(model.adapter, QUERY.tolist()))
    assert float(np.max(np.abs(values - expected))) <= SAME


@pytest.mark.parametrize("name", list(GBM_MODELS))
def test_lightgbm_contributions_are_the_librarys(store: ModelStore, folder: Path, name: str):
    reference = lightgbm.Booster(model_file=str(folder / f"{name}.txt"))
    flat = reference.predict(QUERY, pred_contrib=True)
    values = served(store, f"{name}.txt", QUERY)
    multi = name == "gbm_multi"
    # LightGBM's multiclass layout is flat, class after class; the adapter's is XGBoost's.
    assert flat.shape == (len(QUERY), (CLASSES if multi else 1) * (WIDTH + 1))
    expected = flat.reshape(len(QUERY), CLASSES, WIDTH + 1) if multi else flat
    assert values.shape == expected.shape
    assert float(np.max(np.abs(values - expected))) <= SAME
    check_layout(values, reference.predict(QUERY, raw_score=True), len(QUERY), CLASSES if multi else None)


def test_both_libraries_give_multiclass_contributions_in_one_layout(store: ModelStore):
    xgb = served(store, "xgb_multi.json", QUERY)
    gbm = served(store, "gbm_multi.txt", QUERY)
    assert xgb.shape == gbm.shape == (len(QUERY), CLASSES, WIDTH + 1)


def test_a_row_of_missing_values_is_explained_by_the_bias_and_missing_branches(store: ModelStore):
    for name in ("xgb_binary.json", "xgb_multi.ubj", "gbm_binary.txt", "gbm_multi.txt"):
        values = served(store, name, QUERY[:1])  # every value NaN
        assert np.isfinite(values).all(), name
        single = served(store, name, QUERY)[:1]
        assert float(np.max(np.abs(values - single))) <= SAME, name


def test_predict_is_unchanged_by_explaining(store: ModelStore, folder: Path):
    for name in ("xgb_binary.json", "xgb_cat.ubj", "gbm_multi.txt"):
        model = store.load(name)
        before = model.predict(QUERY.tolist() if "cat" not in name else CAT_QUERY.tolist())
        served(store, name, CAT_QUERY if "cat" in name else QUERY)
        after = model.predict(QUERY.tolist() if "cat" not in name else CAT_QUERY.tolist())
        assert np.array_equal(before, after)


@pytest.mark.parametrize("name", ["lstm_script.pt", "lstm.pt"])
def test_lstm_models_refuse_to_explain(store: ModelStore, name: str):
    model = store.load(name)
    batch = np.zeros((2, 6, WIDTH), dtype=np.float32)
    with pytest.raises(ExplanationUnsupported) as caught:
        model.adapter.contributions(batch)
    error = caught.value
    assert isinstance(error, ModelError)
    assert error.status == 422
    assert error.code == "explanation_unsupported"
    assert "tree models (XGBoost, LightGBM)" in error.message
    assert "'lstm'" in error.message
    assert error.to_dict()["details"] == {"type": "lstm", "supported_types": ["xgboost", "lightgbm"]}


def test_lightgbm_linear_trees_refuse_to_explain(store: ModelStore):
    model = store.load("gbm_linear.txt")
    model.predict(QUERY.tolist())  # it serves predictions all the same
    with pytest.raises(ExplanationUnsupported) as caught:
        model.adapter.contributions(features_array(model.adapter, QUERY.tolist()))
    assert caught.value.status == 422
    assert "linear trees" in caught.value.message


def test_pickled_sklearn_wrappers_explain_as_their_boosters(tmp_path: Path):
    xgb = xgboost.XGBClassifier(n_estimators=4, max_depth=3).fit(TRAIN, labels_of(TRAIN, CLASSES))
    gbm = lightgbm.LGBMClassifier(n_estimators=4, **GBM_PARAMS).fit(TRAIN, labels_of(TRAIN, CLASSES))
    (tmp_path / "xgb.pkl").write_bytes(pickle.dumps(xgb))
    (tmp_path / "gbm.pkl").write_bytes(pickle.dumps(gbm))
    store = ModelStore(tmp_path, allow_pickle=True, settle_s=0)
    expected = {
        "xgb.pkl": xgb.get_booster().predict(xgboost.DMatrix(QUERY), pred_contribs=True),
        "gbm.pkl": gbm.booster_.predict(QUERY, pred_contrib=True).reshape(len(QUERY), CLASSES, WIDTH + 1),
    }
    for name, reference in expected.items():
        values = served(store, name, QUERY)
        assert values.shape == (len(QUERY), CLASSES, WIDTH + 1)
        assert float(np.max(np.abs(values - reference))) <= SAME, name
