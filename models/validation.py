"""Check a request's `features` (parsed JSON) against a model before it reaches the library.

Tree models take rows: `[[f1, f2, ...], ...]`, one prediction per row; NaN is a missing
value they handle. Sequence models take one sequence `[[...], ...]` (time x features) or
a batch of them `[[[...]]]`, finite numbers only. Every problem is an InputMismatch that
says where it is and what was expected, so a library never sees input it would reject
with an obscure error. numpy only: the web process validates too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy

from models.base import INPUT_KINDS, InputMismatch

MAX_ROWS = 10_000  # rows, or sequences, per request
MAX_VALUES = 1_000_000  # numbers per request
_FLAT_EXAMPLE_VALUES = 8


def features_array(adapter_or_description: Any, features: Any) -> numpy.ndarray:
    """float64 (rows, features) for tree models; float32 (batch, time, features) for sequences."""
    spec = _spec(adapter_or_description)
    if isinstance(features, numpy.ndarray):
        return _array(features, spec)
    if spec["input_kind"] == "sequences":
        return _sequences(features, spec)
    return _rows(features, spec)


def _spec(source: Any) -> dict[str, Any]:
    get = source.get if isinstance(source, Mapping) else lambda key: getattr(source, key, None)
    kind = get("input_kind") or INPUT_KINDS.get(get("type") or "")
    if kind not in ("rows", "sequences"):
        raise ValueError(f"cannot tell the input kind of {source!r}")
    return {
        "input_kind": kind,
        "n_features": get("n_features"),
        "sequence_length": get("sequence_length"),
        "fixed_sequence_length": bool(get("fixed_sequence_length")),
    }


def _rows(features: Any, spec: dict[str, Any]) -> numpy.ndarray:
    width = spec["n_features"]
    row_text = f"rows of {width} numbers" if width else "rows of numbers"
    if not isinstance(features, list):
        _fail(f"features must be a list of {row_text}", f"a list of {row_text}", _json_type(features))
    if not features:
        _fail("features is empty; send at least one row", "at least one row", "an empty list")
    if not isinstance(features[0], list):
        example = _flat_example(features)
        _fail(
            f"features must be a list of rows; to send one row, wrap it in a list: {example}",
            f"a list of {row_text}",
            f"a flat list starting with {_json_type(features[0])}",
        )
    _limit(len(features), MAX_ROWS, "rows")
    _limit(len(features) * len(features[0]), MAX_VALUES, "numbers")
    if _plain_numbers(features):
        array = _convert(features, numpy.float64, "features")
        if not numpy.isinf(array).any():
            found = array.shape[1]
            if width is None or found == width:
                return array
    # Something is off, or the width is wrong: the walk below says what and where.
    found = _matrix(features, "features", "row", allow_nan=True)
    if width is not None and found != width:
        _fail(
            f"each row must have {width} values (the model's features), not {found}",
            f"rows of {width} values",
            f"rows of {found} values",
        )
    return _convert(features, numpy.float64, "features")


def _sequences(features: Any, spec: dict[str, Any]) -> numpy.ndarray:
    width = spec["n_features"]
    expected = f"(time, {width or 'features'}) or (batch, time, {width or 'features'})"
    if not isinstance(features, list) or not features:
        received = "an empty list" if features == [] else _json_type(features)
        _fail(
            "features must be one sequence [[...], ...] (time x features) or a batch [[[...]]]",
            expected,
            received,
        )
    first = features[0]
    if not isinstance(first, list):
        _fail(
            "features must be one sequence [[...], ...] (time x features) or a batch [[[...]]]; "
            f"a flat list is one time step: {_flat_example(features)}",
            expected,
            f"a flat list starting with {_json_type(first)}",
        )
    single = not (first and isinstance(first[0], list))
    batch = [features] if single else features
    _limit(len(batch), MAX_ROWS, "sequences")
    time_steps = len(batch[0]) if isinstance(batch[0], list) else 0
    step = batch[0][0] if time_steps else None
    # Rectangular is checked below, so the first sequence's shape gives the total.
    _limit(len(batch) * time_steps * (len(step) if isinstance(step, list) else 0), MAX_VALUES, "numbers")
    found_width = 0
    for index, sequence in enumerate(batch):
        place = "features" if single else f"features[{index}]"
        if not isinstance(sequence, list) or not sequence:
            _fail(f"{place} must be a non-empty list of time steps", "time steps", _describe(sequence), place)
        if len(sequence) != time_steps:
            _fail(
                f"every sequence must have the same number of time steps; {place} has {len(sequence)}, "
                f"features[0] has {time_steps}",
                f"{time_steps} time steps",
                f"{len(sequence)} time steps",
                place,
            )
        step_width = _matrix(sequence, place, "time step", allow_nan=False)
        if index and step_width != found_width:
            _fail(
                f"every time step must have the same number of values; {place} has {step_width}, "
                f"features[0] has {found_width}",
                f"{found_width} values per time step",
                f"{step_width} values per time step",
                place,
            )
        found_width = step_width
    if width is not None and found_width != width:
        _fail(
            f"each time step must have {width} values (the model's features), not {found_width}",
            expected,
            f"(batch, {time_steps}, {found_width})",
        )
    length = spec["sequence_length"]
    if spec["fixed_sequence_length"] and length and time_steps != length:
        _fail(
            f"this model takes sequences of exactly {length} time steps, not {time_steps}",
            f"(batch, {length}, {width or 'features'})",
            f"(batch, {time_steps}, {found_width})",
        )
    array = _convert(batch, numpy.float32, "features")
    if not numpy.isfinite(array).all():
        _fail(
            "features has values too large for float32",
            "finite numbers within float32 range",
            "a value beyond float32 range",
        )
    return array


def _array(array: numpy.ndarray, spec: dict[str, Any]) -> numpy.ndarray:
    """The rules of parsed JSON for an array (the web's checked rows on the direct lane, a
    Python caller's), checked by numpy at once: no walk over the values."""
    sequences = spec["input_kind"] == "sequences"
    if array.dtype.kind not in "fiu":  # bool, text, objects: not numbers
        _fail("features must hold numbers", "numbers", f"an array of {array.dtype}")
    if sequences and array.ndim == 2:
        array = array[None]  # one sequence: a batch of one
    rank = 3 if sequences else 2
    if array.ndim != rank or 0 in array.shape:
        expected = "(batch, time, features)" if sequences else "(rows, features)"
        _fail(f"features must have the shape {expected}", expected, f"an array of shape {list(array.shape)}")
    _limit(array.shape[0], MAX_ROWS, "sequences" if sequences else "rows")
    _limit(array.size, MAX_VALUES, "numbers")
    width, found = spec["n_features"], array.shape[-1]
    if width is not None and found != width:
        item = "time step" if sequences else "row"
        _fail(
            f"each {item} must have {width} values (the model's features), not {found}",
            f"{item}s of {width} values",
            f"{item}s of {found} values",
        )
    length = spec["sequence_length"]
    if sequences and spec["fixed_sequence_length"] and length and array.shape[1] != length:
        _fail(
            f"this model takes sequences of exactly {length} time steps, not {array.shape[1]}",
            f"(batch, {length}, {width or 'features'})",
            f"(batch, {array.shape[1]}, {found})",
        )
    dtype = numpy.float32 if sequences else numpy.float64
    if array.dtype != dtype or not array.flags.c_contiguous:  # the lane's rows already are (no copy)
        with numpy.errstate(over="ignore"):  # float32 overflow becomes inf, refused below
            array = numpy.ascontiguousarray(array, dtype=dtype)
    bad = ~numpy.isfinite(array) if sequences else numpy.isinf(array)
    if bad.any():
        at = "features" + "".join(f"[{index}]" for index in numpy.argwhere(bad)[0])
        _fail(
            f"{at} is not a finite number" + ("" if sequences else " (NaN is a missing value)"),
            "finite numbers" + ("" if sequences else " or NaN"),
            "NaN, infinity or a value beyond float32 range" if sequences else "infinity",
            at,
        )
    return array


def _plain_numbers(rows: list[Any]) -> bool:
    """Whether `rows` are equally long non-empty lists of ints and floats (bools and
    strings are not): set and map loop in C, where `_matrix` walks every value in Python."""
    if set(map(type, rows)) != {list} or len(set(map(len, rows))) != 1 or not rows[0]:
        return False
    return set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}


def _matrix(rows: list[Any], where: str, item: str, allow_nan: bool) -> int:
    """Check a list of equally long lists of numbers; returns their length."""
    width = len(rows[0]) if isinstance(rows[0], list) else 0
    for index, row in enumerate(rows):
        place = f"{where}[{index}]"
        if not isinstance(row, list) or not row:
            _fail(
                f"{place} must be a non-empty list of numbers",
                f"a {item}: a list of numbers",
                _describe(row),
                place,
            )
        if len(row) != width:
            _fail(
                f"every {item} must have the same number of values; {place} has {len(row)}, "
                f"{where}[0] has {width}",
                f"{width} values",
                f"{len(row)} values",
                place,
            )
        for column, value in enumerate(row):
            kind = type(value)
            # bool is an int subclass, and numbers as strings are not numbers: both refused.
            if kind is float:
                if value != value:  # NaN
                    if not allow_nan:
                        _fail(
                            f"{place}[{column}] is NaN; this model takes finite numbers only",
                            "a finite number",
                            "NaN",
                            f"{place}[{column}]",
                        )
                elif value in (math.inf, -math.inf):
                    _fail(
                        f"{place}[{column}] is infinite; send a finite number"
                        + (" (or NaN for a missing value)" if allow_nan else ""),
                        "a finite number" + (" or NaN" if allow_nan else ""),
                        "Infinity" if value > 0 else "-Infinity",
                        f"{place}[{column}]",
                    )
            elif kind is not int and (isinstance(value, bool) or not isinstance(value, int | float)):
                _fail(
                    f"{place}[{column}] must be a number, not {_json_type(value)}",
                    "a number",
                    _json_type(value),
                    f"{place}[{column}]",
                )
    return width


def _convert(values: list[Any], dtype: type, where: str) -> numpy.ndarray:
    try:
        if dtype is numpy.float64:  # Python's floats are float64: nothing overflows
            return numpy.array(values, dtype=dtype)
        with numpy.errstate(over="ignore"):  # float32 overflow becomes inf, refused by the caller
            return numpy.array(values, dtype=dtype)
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        _fail(f"{where} has a number too large to represent", "finite numbers", "a number beyond float range")


def _limit(count: int, limit: int, what: str) -> None:
    if count > limit:
        _fail(
            f"too many {what}: {count}; at most {limit} per request, split the request",
            f"at most {limit} {what}",
            f"{count} {what}",
        )


def _fail(message: str, expected: Any, received: Any, at: str | None = None) -> None:
    details: dict[str, Any] = {"expected": expected, "received": received}
    if at is not None:
        details["at"] = at
    raise InputMismatch(message, details)


def _flat_example(values: list[Any]) -> str:
    shown = ", ".join(repr(v) if isinstance(v, int | float) else "..." for v in values[:_FLAT_EXAMPLE_VALUES])
    return f"[[{shown}{', ...' if len(values) > _FLAT_EXAMPLE_VALUES else ''}]]"


def _describe(value: Any) -> str:
    return "an empty list" if value == [] else _json_type(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
