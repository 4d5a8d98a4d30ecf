"""Pickled XGBoost/LightGBM models, served only when ALLOW_PICKLE_MODELS is set.

Unpickling runs code chosen by whoever wrote the file, so the store never reaches this
module unless the operator allowed pickles. Even then the unpickler resolves only the
classes of the ML libraries and a few harmless builtins, which stops the usual payloads
(`os.system`, `builtins.eval`, ...). That narrows the risk; it does not remove it: allow
pickles only from a trusted source.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

from models.base import Adapter, ModelRefused

# Classes of these packages may be built (their constructors only store parameters);
# numpy, scipy and pandas are not among them: numpy.memmap or pandas.HDFStore write files.
_CLASS_PACKAGES = ("xgboost", "lightgbm", "sklearn")
_BUILTINS = ("bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list")
_GLOBALS = {
    ("builtins", name) for name in (*_BUILTINS, "object", "range", "set", "slice", "str", "tuple")
} | {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
}


class _ModelUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _GLOBALS:
            return super().find_class(module, name)
        if module.split(".", 1)[0] in _CLASS_PACKAGES:
            found = super().find_class(module, name)
            # A class of the package itself: not a function, not a class it re-exports.
            if isinstance(found, type) and found.__module__.split(".", 1)[0] in _CLASS_PACKAGES:
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a model")


def load_pickled(path: Path) -> Adapter:
    try:
        with path.open("rb") as handle:
            obj = _ModelUnpickler(handle).load()
    except pickle.UnpicklingError as exc:
        raise ModelRefused(f"{path.name}: refused to unpickle: {exc}") from exc
    adapter = wrap(obj)
    if adapter is None:
        raise ModelRefused(
            f"{path.name}: the pickle holds a {type(obj).__name__}, "
            "not an XGBoost or LightGBM model (Booster, XGBModel, LGBMModel)"
        )
    return adapter


def wrap(obj: Any) -> Adapter | None:
    """The adapter for an unpickled model object, or None if it is not one we serve."""
    # Unpickling imported the model's library, so sys.modules tells which it may be.
    xgboost = sys.modules.get("xgboost")
    if xgboost is not None and isinstance(obj, xgboost.Booster | xgboost.XGBModel):
        from models.xgboost_adapter import XGBoostAdapter

        booster = obj if isinstance(obj, xgboost.Booster) else obj.get_booster()
        return XGBoostAdapter(booster, "pickle")
    lightgbm = sys.modules.get("lightgbm")
    if lightgbm is not None and isinstance(obj, lightgbm.Booster | lightgbm.LGBMModel):
        from models.lightgbm_adapter import LightGBMAdapter

        booster = obj if isinstance(obj, lightgbm.Booster) else obj.booster_
        return LightGBMAdapter.from_booster(booster, "pickle")
    return None
