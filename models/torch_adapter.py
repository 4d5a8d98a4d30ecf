"""PyTorch .pt/.pth files: the project's LSTM checkpoint or a TorchScript module.

Both are zip archives and `models.formats` tells them apart by their members. Either
takes one sequence per row of a (batch, time, features) float32 tensor and gives one
prediction per sequence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy
import torch

from models.base import Adapter, InputMismatch, ModelUnloadable
from models.formats import torch_archive_kind
from models.lstm import load_checkpoint
from models.threads import limit_threads

_ERROR_PREFIX = re.compile(r"^[\w.]*(Error|Exception): ")
_PATHS = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\][^\s'\"]+")


class TorchAdapter(Adapter):
    type = "lstm"
    input_kind = "sequences"

    def __init__(self, module: torch.nn.Module, format: str, config: dict[str, Any] | None = None):
        self.module = module.eval()
        self.format = format
        self.config = config
        self.n_features = config["input_size"] if config else None

    @classmethod
    def load(cls, path: Path) -> TorchAdapter:
        limit_threads()
        if torch_archive_kind(path) == "torchscript":
            return cls(torch.jit.load(str(path), map_location="cpu"), "torchscript")
        model = load_checkpoint(path)
        return cls(model, "checkpoint", dict(model.config))

    def predict(self, features: numpy.ndarray) -> numpy.ndarray:
        batch = torch.from_numpy(numpy.ascontiguousarray(features, dtype=numpy.float32))
        try:
            with torch.inference_mode():
                output = self.module(batch)
        except (RuntimeError, torch.jit.Error) as exc:  # a module refusing an input it does not take
            raise InputMismatch(
                f"the model rejected input of shape {list(batch.shape)}: {_last_line(exc)}",
                {"expected": self._expected(), "received": list(batch.shape)},
            ) from exc
        if not isinstance(output, torch.Tensor) or output.dim() == 0 or output.shape[0] != batch.shape[0]:
            shape = list(output.shape) if isinstance(output, torch.Tensor) else ""
            raise ModelUnloadable(
                "the model's output is not one tensor with one row per input sequence "
                f"(got {type(output).__name__}{shape})"
            )
        result = output.detach().to(torch.float32).reshape(batch.shape[0], -1).numpy()
        return result[:, 0] if result.shape[1] == 1 else result

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        if self.config:
            facts["config"] = dict(self.config)
        return facts

    def _expected(self) -> str:
        width = self.n_features if self.n_features is not None else "n_features"
        return f"(batch, time, {width})"


def _last_line(error: Exception) -> str:
    # TorchScript errors end with the Python-level message after a dump of the
    # serialized code; keep that last line, without anything that looks like a path.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = _ERROR_PREFIX.sub("", lines[-1] if lines else "error")
    return _PATHS.sub("<path>", last)[:300]
