"""XGBoost's dense prediction, called through its C API as `Booster.inplace_predict` calls it.

The public wrapper's per-call set-up (input-type checks, a ctypes class built for the
output) costs more than a prediction of a few rows, so this module calls the same C
function with the same arguments through xgboost's private ctypes handles (`_LIB`,
`_check_call`, `make_jcargs`). It asserts the release series it was written for;
tests/test_internals.py compares it with `inplace_predict`.
"""

from __future__ import annotations

import ctypes

import numpy
import orjson
import xgboost
from xgboost.core import _LIB, _check_call, c_bst_ulong, make_jcargs

WRITTEN_FOR = "3.2"

if not xgboost.__version__.startswith(WRITTEN_FOR + "."):
    raise ImportError(
        f"{__name__} calls xgboost {WRITTEN_FOR}'s private C bindings, but {xgboost.__version__} is "
        f"installed: review {__name__} against it, then update WRITTEN_FOR"
    )

# inplace_predict's arguments for values, every tree, NaN as the missing value.
_VALUES = make_jcargs(
    type=0,
    training=False,
    iteration_begin=0,
    iteration_end=0,
    missing=numpy.nan,
    strict_shape=False,
    cache_id=0,
)


def predict_dense(booster: xgboost.Booster, features: numpy.ndarray) -> numpy.ndarray:
    """`booster.inplace_predict(features, missing=nan)`: the same C call with the same
    arguments, without the wrapper's per-call set-up (input-type checks, a ctypes class
    built for the output), which costs more than a prediction of a few rows."""
    data = numpy.ascontiguousarray(features, dtype=numpy.float64)
    shape = ctypes.POINTER(c_bst_ulong)()
    dims = c_bst_ulong()
    values = ctypes.POINTER(ctypes.c_float)()
    _check_call(
        _LIB.XGBoosterPredictFromDense(
            booster.handle,
            _interface(data),
            _VALUES,
            ctypes.c_void_p(),
            ctypes.byref(shape),
            ctypes.byref(dims),
            ctypes.byref(values),
        )
    )
    out_shape = tuple(int(shape[axis]) for axis in range(dims.value))
    # The values live in the booster's per-thread buffer, which the next call reuses.
    out = numpy.empty(out_shape, dtype=numpy.float32)
    ctypes.memmove(out.ctypes.data, values, out.nbytes)
    return out


def _interface(data: numpy.ndarray) -> bytes:
    """The array interface (version 3) of a C-contiguous float64 array, as XGBoost reads it:
    the JSON that xgboost's own `array_interface` writes, without the standard library's encoder."""
    pointer, read_only = data.__array_interface__["data"]
    return orjson.dumps(
        {"data": [pointer, read_only], "shape": data.shape, "strides": None, "typestr": "<f8", "version": 3}
    )
