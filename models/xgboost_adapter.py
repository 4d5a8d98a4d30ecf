"""XGBoost models saved by `Booster.save_model` (or `XGBModel.save_model`) as .json or .ubj."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy
import xgboost

from models.base import Adapter
from models.xgboost_native import predict_dense


class XGBoostAdapter(Adapter):
    type = "xgboost"
    input_kind = "rows"

    def __init__(self, booster: xgboost.Booster, format: str):
        # One thread per prediction: a worker process serves one request at a time, and
        # the pool of worker processes, not threads inside one, uses the cores.
        booster.set_param({"nthread": 1})
        self.booster = booster
        self.format = format
        self.n_features = booster.num_features()
        self.feature_names = list(booster.feature_names) if booster.feature_names else None
        self._feature_types = list(booster.feature_types) if booster.feature_types else None
        self._categorical = bool(self._feature_types and "c" in self._feature_types)
        self._facts = _facts(booster)

    @classmethod
    def load(cls, path: Path) -> XGBoostAdapter:
        booster = xgboost.Booster(model_file=str(path))
        return cls(booster, "ubj" if path.suffix.lower() == ".ubj" else "json")

    def predict(self, features: numpy.ndarray) -> numpy.ndarray:
        if not self._categorical:
            # No DMatrix to build. The width is checked before (models.validation).
            return predict_dense(self.booster, features)
        return self.booster.predict(self._matrix(features))

    def contributions(self, features: numpy.ndarray) -> numpy.ndarray:
        # XGBoost's layout as it is: (rows, n_features + 1) with the bias last, or
        # (rows, classes, n_features + 1) for a multi-class model.
        return self.booster.predict(self._matrix(features), pred_contribs=True)

    def _matrix(self, features: numpy.ndarray) -> xgboost.DMatrix:
        return xgboost.DMatrix(
            features,
            missing=numpy.nan,
            nthread=1,
            # A booster trained with names insists that its input carry the same ones.
            feature_names=self.feature_names,
            feature_types=self._feature_types,
            enable_categorical=self._categorical,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._facts}


def _facts(booster: xgboost.Booster) -> dict[str, Any]:
    config = json.loads(booster.save_config())["learner"]
    params = config.get("learner_model_param", {})
    facts: dict[str, Any] = {
        "objective": config.get("objective", {}).get("name"),
        "num_class": int(params.get("num_class", 0)),
        "num_boosted_rounds": booster.num_boosted_rounds(),
    }
    booster_config = config.get("gradient_booster", {})
    # dart nests its tree parameters one level deeper than gbtree; gblinear has none.
    tree_params = booster_config.get("gbtree_model_param") or booster_config.get("gbtree", {}).get(
        "gbtree_model_param"
    )
    if tree_params and "num_trees" in tree_params:
        facts["num_trees"] = int(tree_params["num_trees"])
    return facts
