"""The demo models `make run` trains, for tests that serve them."""

from __future__ import annotations

from pathlib import Path


def train_demo_tree_models(directory: Path) -> set[str]:
    """XGBoost and LightGBM, as `flask models train-demo` writes them (the LSTM is left out:
    loading torch in a worker is slow); their names."""
    from models.training import train_demo

    paths = train_demo(directory, progress=lambda _: None, types=("xgboost", "lightgbm"))
    return {path.name for path in paths}
