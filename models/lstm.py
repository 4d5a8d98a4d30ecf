"""The project's LSTM forecaster and its checkpoint format.

A checkpoint is `{"format": "tradebot-lstm", "version": 1, "config": {...}, "state_dict":
...}` written by `torch.save`: plain containers and tensors, so it loads with
`weights_only=True` (no code runs while reading it) and the module is rebuilt from the
config. A checkpoint never holds a pickled module.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from models.base import ModelUnloadable

CHECKPOINT_FORMAT = "tradebot-lstm"
CHECKPOINT_VERSION = 1
# Bounds that keep a hostile config from allocating a huge module.
_INT_LIMITS = {"input_size": 100_000, "hidden_size": 8192, "num_layers": 16, "output_size": 100_000}


class LSTMForecaster(nn.Module):
    """(batch, time, features) -> (batch, output_size), read from the last time step."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        output_size: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.config = {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "output_size": output_size,
            "dropout": float(dropout),
        }
        # nn.LSTM applies dropout between layers only; with one layer it would warn.
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


def save_checkpoint(model: LSTMForecaster, path: Path | str | BinaryIO) -> None:
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": dict(model.config),
            "state_dict": model.state_dict(),
        },
        path,
    )


def load_checkpoint(path: Path) -> LSTMForecaster:
    """The module of a checkpoint, in eval mode; ModelUnloadable if it is not a valid one."""
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise ModelUnloadable(
            f"{path.name}: the file holds Python objects besides tensors and plain containers, "
            "which are not loaded; save the weights with models.lstm.save_checkpoint"
        ) from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ModelUnloadable(
            f"{path.name}: a torch.save file, but not a {CHECKPOINT_FORMAT} checkpoint; "
            "save the module with torch.jit.save or models.lstm.save_checkpoint"
        )
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ModelUnloadable(f"{path.name}: unsupported checkpoint version {checkpoint.get('version')!r}")
    config = validate_config(checkpoint.get("config"), path.name)
    model = LSTMForecaster(**config)
    try:
        model.load_state_dict(checkpoint.get("state_dict"), strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelUnloadable(f"{path.name}: the weights do not match the checkpoint's config") from exc
    return model.eval()


def validate_config(config: Any, name: str) -> dict[str, Any]:
    if not isinstance(config, dict) or set(config) != {*_INT_LIMITS, "dropout"}:
        raise ModelUnloadable(
            f"{name}: checkpoint config must have exactly {', '.join([*_INT_LIMITS, 'dropout'])}"
        )
    for key, limit in _INT_LIMITS.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ModelUnloadable(f"{name}: checkpoint config {key} must be an integer from 1 to {limit}")
    dropout = config["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ModelUnloadable(f"{name}: checkpoint config dropout must be a number in [0, 1)")
    return dict(config)
