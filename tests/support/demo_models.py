"""The demo models `make run` trains, for tests that serve them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def train_demo_tree_models(directory: Path) -> set[str]:
    """XGBoost and LightGBM, as `flask models train-demo` writes them (the LSTM is left out:
    loading torch in a worker is slow); their names."""
    from models.training import train_demo

    paths = train_demo(directory, progress=lambda _: None, types=("xgboost", "lightgbm"))
    return {path.name for path in paths}


@dataclass
class DemoServices:
    env: dict[str, str]
    models: set[str]
    web: Any  # a ready tests.support.processes.WebServer
    started: list = field(default_factory=list)  # stopped in reverse order on the way out


@contextmanager
def demo_services(folder: Path) -> Iterator[DemoServices]:
    """The demo models in `folder/models`, a predict worker that has loaded them and a web
    server; a caller appends what else it starts to `started`, all stopped on the way out."""
    from tests.conftest import RESULT_URL
    from tests.support.processes import WebServer, Worker

    models = train_demo_tree_models(folder / "models")
    env = {**os.environ, "MODEL_DIR": str(folder / "models"), "SPOOL_DIR": str(folder / "spool")}
    started: list = []
    try:
        predict = Worker(env, folder, queues="predict", pool="threads")
        started.append(predict)
        predict.wait_ready().wait_models_loaded(RESULT_URL, models)
        web = WebServer(env, folder)
        started.append(web)
        yield DemoServices(env, models, web.wait_ready(), started)
    finally:
        for service in reversed(started):
            service.stop()
