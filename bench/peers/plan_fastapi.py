"""The plan's design (its Task 4), a peer of `make bench-peers`: FastAPI, an APIRouter
under /api/v1/ml, a singleton model cache, the prediction made in the web process.

    uvicorn --workers 2 --app-dir bench/peers plan_fastapi:app     (MODEL_DIR from the environment)

Runs in the peers' environment (bench/requirements-peers.txt), never the project's.
Where the plan leaves a choice open, it takes the faster one, so the stack is measured
against the design at its best: an `async` route (no thread-pool hop), XGBoost's
`inplace_predict` (no DMatrix), one torch thread per process (two processes on two cores).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel


class PredictRequest(BaseModel):
    model_name: str
    model_type: str | None = None
    features: list[list[float]] | list[list[list[float]]]


class ModelCache:
    """One cache per process: each model file is loaded on first use and kept."""

    _instance: ModelCache | None = None

    def __new__(cls) -> ModelCache:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance._models = {}
            cls._instance._lock = threading.Lock()
        return cls._instance

    def get(self, name: str) -> tuple[str, Any]:
        with self._lock:
            if name not in self._models:
                self._models[name] = _load(Path(os.environ["MODEL_DIR"]) / Path(name).name)
            return self._models[name]


def _load(path: Path) -> tuple[str, Any]:
    if not path.is_file():
        raise HTTPException(404, f"no model {path.name}")
    if path.suffix == ".json":
        import xgboost

        booster = xgboost.Booster(model_file=str(path))
        booster.set_param({"nthread": 1})
        return "xgboost", booster
    import torch

    torch.set_num_threads(1)
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    model = LSTMModel(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return "lstm", model.eval()


def _lstm_class() -> type:
    import torch
    from torch import nn

    class LSTM(nn.Module):
        # The project's checkpoint layout (models/lstm.py): an nn.LSTM and a linear head
        # on the last time step.
        def __init__(self, input_size, hidden_size, num_layers, output_size, dropout):
            super().__init__()
            self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
            self.head = nn.Linear(hidden_size, output_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            return self.head(out[:, -1, :])

    return LSTM


def LSTMModel(**config: Any) -> Any:  # a class, built when torch is first needed
    return _lstm_class()(**config)


router = APIRouter(prefix="/api/v1/ml")


@router.post("/predict")
async def predict(request: PredictRequest) -> dict[str, Any]:
    kind, model = ModelCache().get(request.model_name)
    if kind == "xgboost":
        predictions = model.inplace_predict(np.asarray(request.features, dtype=np.float64))
    else:
        import torch

        batch = np.asarray(request.features, dtype=np.float32)
        with torch.inference_mode():
            predictions = model(torch.from_numpy(batch if batch.ndim == 3 else batch[None]))[:, 0].numpy()
    return {"predictions": predictions.tolist(), "model_name": request.model_name, "model_type": kind}


app = FastAPI()
app.include_router(router)
