"""ML model adapters, the model store and demo-model training (model serving).

`store` lists and loads the files of MODEL_DIR, `archive` keeps every version of them
that loaded (so a replaced or deleted file's versions stay servable), `base` holds the
errors and the adapter interface, `validation` checks request features; none of them
imports an ML library, so the web process can list models without torch, xgboost or
lightgbm. The adapters (`xgboost_adapter`, `lightgbm_adapter`, `torch_adapter`,
`pickle_adapter`) import their library and are imported only when a model of their type
is loaded.

Callers import from the package: `from models import ModelStore, ModelError`.
"""

from models.archive import KeptVersion, ModelArchive
from models.base import (
    EXPLAINABLE_TYPES,
    Adapter,
    ExplanationUnsupported,
    InputMismatch,
    InvalidModelName,
    ModelError,
    ModelLoading,
    ModelNotFound,
    ModelRefused,
    ModelTypeMismatch,
    ModelUnloadable,
    check_type,
    normalize_type,
)
from models.store import LoadedModel, ModelFile, ModelStore, check_name, is_version
from models.threads import limit_threads
from models.validation import MAX_ROWS, MAX_VALUES, features_array

__all__ = [
    "EXPLAINABLE_TYPES",
    "MAX_ROWS",
    "MAX_VALUES",
    "Adapter",
    "ExplanationUnsupported",
    "InputMismatch",
    "InvalidModelName",
    "KeptVersion",
    "LoadedModel",
    "ModelArchive",
    "ModelError",
    "ModelFile",
    "ModelLoading",
    "ModelNotFound",
    "ModelRefused",
    "ModelStore",
    "ModelTypeMismatch",
    "ModelUnloadable",
    "check_name",
    "check_type",
    "features_array",
    "is_version",
    "limit_threads",
    "normalize_type",
]
