"""V2 inference requests: the pydantic model, and a JSON tensor turned into the rows (or
sequences) that `POST /api/v1/ml/predict` takes, checked against its shape and datatype."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from models import MAX_VALUES
from web.errors import ApiError

Datatype = Literal["FP32", "FP64", "INT32", "INT64", "BOOL"]
Name = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]
Dimension = Annotated[int, Strict(), Field(ge=0, le=MAX_VALUES)]
# JSON types each datatype takes (bool is an int subclass: kept apart on purpose).
ACCEPTED = {"FP32": {int, float}, "FP64": {int, float}, "INT32": {int}, "INT64": {int}, "BOOL": {bool}}
INT_RANGE = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
FLOAT32_MAX = float(numpy.finfo(numpy.float32).max)
BINARY_HEADER = "Inference-Header-Content-Length"
BINARY_REFUSED = (
    "the binary tensor data extension is not supported: send tensors as JSON `data` "
    "(tritonclient: set_data_from_numpy(..., binary_data=False))"
)


class InputTensor(BaseModel):
    # The protocol lets clients add fields (MLServer sends `parameters.content_type`): ignored.
    model_config = ConfigDict(extra="ignore")

    name: Name
    shape: Annotated[list[Dimension], Field(min_length=1, max_length=3)]
    datatype: Datatype
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Name
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Strict(), StringConstraints(max_length=255)] | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[InputTensor], Field(min_length=1)]
    outputs: list[RequestedOutput] | None = None


def bad_tensor(message: str) -> ApiError:
    return ApiError(400, "invalid_tensor", message)


def tensor_values(tensor: InputTensor, rank: int, n_features: int | None) -> list[Any]:
    """The tensor as nested lists of `rank` levels (rows, or batch x time x features)."""
    if (tensor.parameters or {}).get("binary_data_size") is not None:
        raise bad_tensor(BINARY_REFUSED)
    shape = tensor.shape
    if len(shape) != rank:
        expected = "[rows, features]" if rank == 2 else "[batch, time, features]"
        raise bad_tensor(
            f"input {tensor.name!r}: shape {shape} has {len(shape)} dimensions; this model takes {expected}"
        )
    if n_features is not None and shape[-1] != n_features:
        raise bad_tensor(
            f"input {tensor.name!r}: shape {shape} has {shape[-1]} features; the model takes {n_features}"
        )
    size = math.prod(shape)
    if size > MAX_VALUES:
        raise bad_tensor(
            f"input {tensor.name!r}: shape {shape} holds {size} values; at most {MAX_VALUES} per request"
        )
    flat = _flatten(tensor.data, shape, tensor.name)
    _check_types(flat, tensor.datatype, tensor.name)
    dtype = {"FP32": numpy.float32, "FP64": numpy.float64}.get(tensor.datatype, numpy.int64)
    try:
        with numpy.errstate(over="ignore"):
            array = numpy.array(flat, dtype=dtype)  # FP32: the values the client meant
    except OverflowError:  # an integer beyond a double, e.g. 10**400
        raise bad_tensor(f"input {tensor.name!r}: a number too large for {tensor.datatype}") from None
    return array.reshape(shape).tolist()


def _flatten(data: list[Any], shape: list[int], name: str) -> list[Any]:
    """Row-major values of `data`, flat as sent or nested exactly as `shape` says."""
    size = math.prod(shape)
    if not any(isinstance(value, list) for value in data):
        if len(data) != size:
            raise bad_tensor(f"input {name!r}: {len(data)} values for shape {shape} ({size} values)")
        return data
    level = [data]
    for depth, length in enumerate(shape):
        for item in level:
            if not isinstance(item, list) or len(item) != length:
                got = f"{len(item)} items" if isinstance(item, list) else "a single value"
                raise bad_tensor(
                    f"input {name!r}: data nested unlike shape {shape}: "
                    f"dimension {depth} has {got}, not {length}"
                )
        level = [value for item in level for value in item]
    if any(isinstance(value, list) for value in level):
        raise bad_tensor(f"input {name!r}: data nested deeper than shape {shape}")
    return level


def _check_types(values: list[Any], datatype: str, name: str) -> None:
    accepted = ACCEPTED[datatype]
    found = set(map(type, values))
    if not found <= accepted:
        wrong = next(value for value in values if type(value) not in accepted)
        kind = {"BOOL": "true or false", "INT32": "integers", "INT64": "integers"}.get(datatype, "numbers")
        raise bad_tensor(f"input {name!r} is {datatype}: its data must be {kind}, not {wrong!r}")
    if datatype in INT_RANGE:
        low, high = INT_RANGE[datatype]
        if values and not (low <= min(values) and max(values) <= high):
            raise bad_tensor(f"input {name!r}: a value beyond the {datatype} range")
    # Infinity is left to the model's checks (as /api/v1 answers it); ints compare exactly.
    elif datatype == "FP32" and any(
        abs(value) > FLOAT32_MAX and value not in (math.inf, -math.inf) for value in values
    ):
        raise bad_tensor(f"input {name!r}: a value beyond the FP32 range")
