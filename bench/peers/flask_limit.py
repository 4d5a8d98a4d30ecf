"""The in-process limit of `make bench-peers`: a bare Flask app that predicts in the web
process, with every model of MODEL_DIR loaded before it serves.

    gunicorn --chdir bench/peers "flask_limit:create_app()"
    granian --interface wsgi --factory --working-dir bench/peers flask_limit:create_app

Runs in the project's environment. It serves several models, the project's LSTM checkpoint
among them, the way bench/peers/plan_fastapi.py serves them (one sequence, or a batch of
them). No
token, request id, access line, metrics or shape check: what a design that predicts
where the request arrives costs at least, which an out-of-process design cannot beat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, abort, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)
    models = {path.name: _load(path) for path in sorted(Path(os.environ["MODEL_DIR"]).iterdir())}
    models = {name: model for name, model in models.items() if model is not None}

    @app.post("/api/v1/ml/predict")
    def predict():
        body = request.get_json(force=True)
        kind, model = models.get(body["model_name"]) or abort(404)
        if kind == "xgboost":
            predictions = model.inplace_predict(np.asarray(body["features"], dtype=np.float64))
        else:
            predictions = _lstm_predict(model, body["features"])
        return jsonify(predictions=predictions.tolist(), model_name=body["model_name"], model_type=kind)

    return app


def _load(path: Path) -> tuple[str, Any] | None:
    if path.suffix == ".json" and not path.name.endswith(".meta.json"):
        import xgboost

        booster = xgboost.Booster(model_file=str(path))
        booster.set_param({"nthread": 1})
        return "xgboost", booster
    if path.suffix == ".pt":
        import torch

        from models.lstm import load_checkpoint

        # One thread per process, as the predict worker runs torch (models/threads.py).
        torch.set_num_threads(1)
        return "lstm", load_checkpoint(path)
    return None


def _lstm_predict(model: Any, features: list) -> np.ndarray:
    import torch

    batch = np.asarray(features, dtype=np.float32)
    with torch.inference_mode():
        return model(torch.from_numpy(batch if batch.ndim == 3 else batch[None]))[:, 0].numpy()
