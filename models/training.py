"""Small deterministic demo models, so a fresh installation has something to serve.

Trained on synthetic data (a made-up relation between five market features and the
next move), saved with each library's own save function: they show the serving path
end to end and are worth nothing for trading. The ML libraries are imported when
training starts, not when this module is imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy

FEATURE_NAMES = ["return_1", "return_5", "volatility", "rsi", "volume_z"]
SEQUENCE_LENGTH = 20
_SEED = 7
_ROWS = 2000
_SEQUENCES = 512
# The retrained XGBoost variant (`train_retrained_xgboost`): another draw of the synthetic
# data, shallower trees, more rounds.
_RETRAINED_SEED = 8


def train_demo(
    directory: Path | str,
    progress: Callable[[str], None] = print,
    types: Collection[str] = ("xgboost", "lightgbm", "lstm"),
) -> list[Path]:
    """Train the demo models of `types` (XGBoost, LightGBM, LSTM) into `directory`; their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trainers = {
        "xgboost": lambda: _xgboost(directory / "xgboost_model.json", progress),
        "lightgbm": lambda: _lightgbm(directory / "lightgbm_model.txt", progress),
        "lstm": lambda: _lstm(directory / "lstm_model.pt", progress),
    }
    return [train() for kind, train in trainers.items() if kind in types]


def train_retrained_xgboost(path: Path | str, progress: Callable[[str], None] = print) -> Path:
    """A retrained variant of the demo XGBoost model into `path` (with its sidecar): the same
    five features and the same made-up relation, fitted on another draw of the synthetic
    data with shallower trees and more rounds, so its probabilities differ from the demo
    model's a little and stay sensible. `make demo` keeps it as the shadow challenger of
    xgboost_model.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _xgboost(
        path,
        progress,
        seed=_RETRAINED_SEED,
        max_depth=3,
        rounds=80,
        description="demo XGBoost classifier, retrained (another data draw, 80 rounds of depth 3): "
        "probability that the next move is up",
    )


def _rows(seed: int = _SEED) -> tuple[numpy.ndarray, numpy.ndarray]:
    rng = numpy.random.default_rng(seed)
    features = rng.normal(size=(_ROWS, len(FEATURE_NAMES)))
    signal = 0.8 * features[:, 0] + 0.5 * features[:, 1] - 0.3 * features[:, 2] + 0.2 * features[:, 4]
    labels = (signal + rng.normal(scale=0.5, size=_ROWS) > 0).astype(numpy.float64)
    return features, labels


def _xgboost(
    path: Path,
    progress: Callable[[str], None],
    *,
    seed: int = _SEED,
    max_depth: int = 4,
    rounds: int = 50,
    description: str = "demo XGBoost classifier: probability that the next move is up",
) -> Path:
    progress(f"training {path.name} ...")
    import xgboost

    features, labels = _rows(seed)
    train = xgboost.DMatrix(features, label=labels, feature_names=FEATURE_NAMES)
    params = {"objective": "binary:logistic", "max_depth": max_depth, "eta": 0.1, "seed": seed, "nthread": 2}
    booster = xgboost.train(params, train, num_boost_round=rounds)
    _sidecar(path, "xgboost", description)
    # save_raw is what save_model writes for a .json name; the temporary name has no .json.
    _atomic(path, lambda temporary: temporary.write_bytes(booster.save_raw(raw_format="json")))
    return path


def _lightgbm(path: Path, progress: Callable[[str], None]) -> Path:
    progress(f"training {path.name} ...")
    import lightgbm

    features, labels = _rows()
    train = lightgbm.Dataset(features, label=labels, feature_name=FEATURE_NAMES)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "learning_rate": 0.1,
        "seed": _SEED,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
    }
    booster = lightgbm.train(params, train, num_boost_round=50)
    _sidecar(path, "lightgbm", "demo LightGBM classifier: probability that the next move is up")
    _atomic(path, lambda temporary: booster.save_model(str(temporary)))
    return path


def _lstm(path: Path, progress: Callable[[str], None]) -> Path:
    progress(f"training {path.name} ...")
    import torch

    from models.lstm import LSTMForecaster, save_checkpoint

    torch.manual_seed(_SEED)
    rng = numpy.random.default_rng(_SEED)
    sequences = rng.normal(size=(_SEQUENCES, SEQUENCE_LENGTH, len(FEATURE_NAMES))).astype(numpy.float32)
    targets = 0.5 * sequences[:, -5:, 0].mean(axis=1) + 0.2 * sequences[:, -1, 1]
    inputs = torch.from_numpy(sequences)
    expected = torch.from_numpy(targets.astype(numpy.float32)).unsqueeze(1)
    model = LSTMForecaster(input_size=len(FEATURE_NAMES), hidden_size=16, num_layers=1, output_size=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_function = torch.nn.MSELoss()
    for _ in range(8):
        for start in range(0, _SEQUENCES, 64):
            optimizer.zero_grad()
            loss = loss_function(model(inputs[start : start + 64]), expected[start : start + 64])
            loss.backward()
            optimizer.step()
    model.eval()
    _sidecar(
        path,
        "lstm",
        f"demo LSTM regressor: next return from a sequence of {len(FEATURE_NAMES)} features; "
        f"trained on {SEQUENCE_LENGTH} time steps, takes any length",
        sequence_length=SEQUENCE_LENGTH,
        fixed_sequence_length=False,
    )
    _atomic(path, lambda temporary: save_checkpoint(model, temporary))
    return path


def _sidecar(path: Path, type: str, description: str, **extra: Any) -> None:
    meta = {
        "type": type,
        "feature_names": FEATURE_NAMES,
        "n_features": len(FEATURE_NAMES),
        "description": description,
        **extra,
    }
    # Written before its model, so the store never sees the model without it.
    payload = (json.dumps(meta, indent=2) + "\n").encode()
    _atomic(path.with_name(path.name + ".meta.json"), lambda temporary: temporary.write_bytes(payload))


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through `write` into `<name>.tmp`, fsync, then rename over `path`."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
