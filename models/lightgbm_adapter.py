"""LightGBM models saved by `Booster.save_model` (or `LGBMModel.booster_.save_model`) as .txt."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightgbm
import numpy

from models.base import Adapter, ExplanationUnsupported


class LightGBMAdapter(Adapter):
    type = "lightgbm"
    input_kind = "rows"

    def __init__(self, booster: lightgbm.Booster, format: str, header: Iterable[str]):
        self.booster = booster
        self.format = format
        self.n_features = booster.num_feature()
        names = booster.feature_name()
        # LightGBM invents Column_0, Column_1, ... when trained without names: not names.
        invented = [f"Column_{index}" for index in range(len(names))]
        self.feature_names = list(names) if names and names != invented else None
        self._facts = _facts(booster, header)
        # One model per class and iteration for multiclass objectives, one otherwise.
        self._outputs = booster.num_model_per_iteration()
        self._linear_trees = bool(booster.params.get("linear_tree"))

    @classmethod
    def load(cls, path: Path) -> LightGBMAdapter:
        booster = lightgbm.Booster(model_file=str(path))
        with path.open(encoding="utf-8", errors="replace") as handle:
            return cls(booster, "txt", _header_lines(handle))

    @classmethod
    def from_booster(cls, booster: lightgbm.Booster, format: str) -> LightGBMAdapter:
        return cls(booster, format, _header_lines(booster.model_to_string().splitlines()))

    def predict(self, features: numpy.ndarray) -> numpy.ndarray:
        # One thread: the pool of worker processes, not threads inside one, uses the cores.
        return self.booster.predict(features, num_threads=1)

    def contributions(self, features: numpy.ndarray) -> numpy.ndarray:
        if self._linear_trees:
            raise ExplanationUnsupported(
                "LightGBM computes no per-feature contributions for models with linear trees "
                "(linear_tree); this model has them",
                {"type": self.type, "linear_tree": True},
            )
        values = self.booster.predict(features, pred_contrib=True, num_threads=1)
        if self._outputs > 1:
            # LightGBM gives (rows, classes * (n_features + 1)), class after class: shaped
            # like XGBoost's (rows, classes, n_features + 1), the bias last in each class.
            values = values.reshape(len(features), self._outputs, -1)
        return values

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._facts}


def _header_lines(lines: Iterable[str]) -> list[str]:
    header = []
    for line in lines:
        if not line.strip() or line.startswith("Tree="):
            break
        header.append(line.rstrip("\r\n"))
    return header


def _facts(booster: lightgbm.Booster, header: Iterable[str]) -> dict[str, Any]:
    fields = dict(line.split("=", 1) for line in header if "=" in line)
    objective = fields.get("objective", "").split(" ", 1)[0] or None
    facts: dict[str, Any] = {"objective": objective, "num_trees": booster.num_trees()}
    if fields.get("num_class", "").isdigit():
        facts["num_class"] = int(fields["num_class"])
    return facts
