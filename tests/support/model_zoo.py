"""A MODEL_DIR written by the libraries' own save functions, and what each file predicts in-process."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import lightgbm
import numpy as np
import torch
import xgboost

from models.lstm import LSTMForecaster, save_checkpoint

rng = np.random.default_rng(7)
TRAIN = rng.normal(size=(300, 5))
LABELS = (TRAIN[:, 0] + TRAIN[:, 1] > 0).astype(float)
ROWS = np.round(rng.normal(size=(4, 5)), 6)
ROWS[1, 2] = np.nan  # a missing value, legal for tree models
SEQUENCES = np.round(rng.normal(size=(3, 12, 5)), 6).astype(np.float32)
GBM_PARAMS = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}


class SmallLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(5, 8, batch_first=True)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :]).squeeze(-1)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Predictions equal within what a model's float arithmetic may differ by."""
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= 1e-6


def version_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def train_lightgbm(labels: np.ndarray = LABELS) -> lightgbm.Booster:
    return lightgbm.train(GBM_PARAMS, lightgbm.Dataset(TRAIN, labels), 20)


def build_zoo(folder: Path) -> dict[str, np.ndarray]:
    """Fill `folder` with one model per format; name -> in-process predictions."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    expected = {}

    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(TRAIN, LABELS), 20
    )
    for name in ("xgb.json", "xgb.ubj"):
        booster.save_model(folder / name)
        expected[name] = xgboost.Booster(model_file=str(folder / name)).predict(xgboost.DMatrix(ROWS))

    train_lightgbm().save_model(folder / "gbm.txt")
    expected["gbm.txt"] = lightgbm.Booster(model_file=str(folder / "gbm.txt")).predict(ROWS)

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(SmallLSTM().eval()), folder / "scripted.pt")
    with torch.inference_mode():
        expected["scripted.pt"] = torch.jit.load(folder / "scripted.pt")(torch.from_numpy(SEQUENCES)).numpy()

    lstm = LSTMForecaster(input_size=5, hidden_size=8, num_layers=1, output_size=1).eval()
    save_checkpoint(lstm, folder / "forecaster.pt")
    with torch.inference_mode():
        expected["forecaster.pt"] = lstm(torch.from_numpy(SEQUENCES)).numpy().reshape(len(SEQUENCES), -1)
    return expected


def random_rows(
    n: int, width: int, seed: int, nan_share: float = 0.0, decimals: int | None = None
) -> np.ndarray:
    """`n` rows of normal noise, a share of them missing (NaN), for training and querying."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, width))
    if decimals is not None:
        data = np.round(data, decimals)
    if nan_share:
        data[rng.random(size=data.shape) < nan_share] = np.nan
    return data


def labels_of(data: np.ndarray, classes: int = 2) -> np.ndarray:
    """Class labels 0..classes-1 that the first two features predict."""
    score = np.nan_to_num(data[:, 0] + 0.5 * data[:, 1])
    return np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])).astype(float)
