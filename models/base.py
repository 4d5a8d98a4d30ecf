"""The errors of model serving and the interface every model adapter implements.

An adapter wraps one loaded model of one framework (MLServer-runtime style): it loads a
file, predicts on a validated numpy array and describes itself in JSON-safe terms. The
web process imports this module to list models, so it must never import an ML library.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy

log = logging.getLogger(__name__)

TYPES = ("xgboost", "lightgbm", "lstm")
TYPE_ALIASES = {"pytorch": "lstm", "torch": "lstm"}
INPUT_KINDS = {"xgboost": "rows", "lightgbm": "rows", "lstm": "sequences"}
EXPLAINABLE_TYPES = ("xgboost", "lightgbm")  # the types whose adapters give contributions


class ModelError(Exception):
    """An error an API user can act on; the web layer renders it as JSON.

    Messages name files by their name only: never a server path, never a traceback.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "model_error"

    def __init_subclass__(cls, status: int | None = None, code: str | None = None, **kwargs: Any):
        # Each error names its HTTP status and code in its class line.
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details

    def __copy__(self) -> ModelError:
        # The store re-raises a remembered load failure; a fresh instance keeps the
        # tracebacks of concurrent callers apart.
        clone = self.__class__.__new__(self.__class__)
        clone.__dict__.update(self.__dict__)
        clone.args = self.args
        return clone

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class ModelNotFound(ModelError, status=404, code="model_not_found"):
    """No model file of that name in MODEL_DIR."""


class InvalidModelName(ModelError, status=400, code="invalid_model_name"):
    """A name that is not a plain file name (a path, a traversal, a bad character)."""


class ModelRefused(ModelError, status=422, code="model_refused"):
    """A file the store will not load (a pickle without ALLOW_PICKLE_MODELS, an unknown format)."""


class ModelUnloadable(ModelError, status=422, code="model_unloadable"):
    """A file its library cannot load."""


class ModelLoading(ModelError, status=503, code="model_loading"):
    """The file is there but not loaded yet (still being written): the request is right,
    the server is not ready for it. `details["retry_after_s"]` says when to ask again."""


class ModelTypeMismatch(ModelError, status=422, code="model_type_mismatch"):
    """The request names a model type the file is not."""


class InputMismatch(ModelError, status=422, code="input_mismatch"):
    """Rows of the wrong shape or type for the model."""


class ExplanationUnsupported(ModelError, status=422, code="explanation_unsupported"):
    """Per-feature contributions asked of a model that cannot give them (not a tree model)."""

    @classmethod
    def for_type(cls, model_type: str, detail: str | None = None) -> ExplanationUnsupported:
        kind = f"{model_type!r} ({detail})" if detail else repr(model_type)
        return cls(
            "explanations (per-feature contributions) are for tree models (XGBoost, LightGBM), "
            f"not for this model of type {kind}",
            {"type": model_type, "supported_types": list(EXPLAINABLE_TYPES)},
        )


def normalize_type(name: str) -> str:
    """The canonical type for a type a caller names ("pytorch" and "torch" mean "lstm")."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = TYPE_ALIASES.get(key, key)
    if key not in TYPES:
        raise ValueError(f"unknown model type {name!r}; known types: {', '.join(TYPES)}")
    return key


def check_type(expected: str, given: str | None) -> None:
    """Raise ModelTypeMismatch unless `given` (optional, a caller's) names `expected`."""
    if given is None:
        return
    try:
        same = normalize_type(given) == expected
    except ValueError:
        same = False
    if not same:
        raise ModelTypeMismatch(
            f"the model is of type {expected!r}, not {given!r}; omit model_type or send {expected!r}",
            {"expected": expected, "received": given},
        )


class Adapter(ABC):
    """One loaded model. `predict` takes input already checked by `models.validation`."""

    type: ClassVar[str]
    input_kind: ClassVar[str]  # "rows" (tree models) or "sequences" (LSTM)

    format: str
    n_features: int | None = None
    feature_names: list[str] | None = None
    # Sequence models only: the length trained on, and whether inputs must have it.
    sequence_length: int | None = None
    fixed_sequence_length: bool = False

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Adapter: ...

    @abstractmethod
    def predict(self, features: numpy.ndarray) -> numpy.ndarray: ...

    def contributions(self, features: numpy.ndarray) -> numpy.ndarray:
        """Each feature's contribution to each row's raw prediction (the margin, before a
        link function such as the sigmoid), as the tree library computes it (SHAP values).

        `features` is checked by `models.validation` first; NaN is a missing value. The
        result is (rows, n_features + 1), the bias last, or for a model of several outputs
        (multi-class) (rows, outputs, n_features + 1); each row's (or output's) values sum
        to the raw prediction. Only tree models have them: the others raise
        ExplanationUnsupported.
        """
        raise ExplanationUnsupported.for_type(self.type, self.format)

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "type": self.type,
            "format": self.format,
            "input_kind": self.input_kind,
            "n_features": self.n_features,
            "feature_names": self.feature_names,
        }
        if self.input_kind == "sequences":
            facts["sequence_length"] = self.sequence_length
            facts["fixed_sequence_length"] = self.fixed_sequence_length
        return facts

    def apply_meta(self, meta: dict[str, Any], name: str) -> None:
        """Fill in what the file does not say from its sidecar; the file wins a conflict."""
        n_features = meta.get("n_features")
        if n_features is not None:
            if self.n_features is None:
                self.n_features = n_features
            elif n_features != self.n_features:
                log.warning(
                    "%s: sidecar n_features=%s ignored; the model has %s", name, n_features, self.n_features
                )
        names = meta.get("feature_names")
        if names is not None and self.feature_names is None:
            if self.n_features is None or len(names) == self.n_features:
                self.feature_names = list(names)
            else:
                log.warning(
                    "%s: sidecar feature_names ignored; %d names for %d features",
                    name,
                    len(names),
                    self.n_features,
                )
        if self.input_kind == "sequences" and meta.get("sequence_length") is not None:
            self.sequence_length = meta["sequence_length"]
            self.fixed_sequence_length = bool(meta.get("fixed_sequence_length", False))
