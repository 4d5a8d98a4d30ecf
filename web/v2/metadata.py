"""What V2 says about a model: its versions (content hashes), platform and tensors.

The web never loads a model: the feature count and the sequence length come from what a
predict worker reported of the version, or the file's sidecar; what nobody has said yet
is -1, as the protocol writes a dimension it does not know.
"""

from __future__ import annotations

from typing import Any

from models import ModelFile
from web.errors import ApiError

PLATFORMS = {"xgboost": "xgboost", "lightgbm": "lightgbm", "lstm": "pytorch"}
INPUT_NAME = "input-0"  # any name is taken: a model has one input
OUTPUT_NAME = "predict"  # as MLServer's XGBoost and LightGBM runtimes call it
UNKNOWN = -1


def versions(file: ModelFile, reported: dict[str, dict[str, Any]]) -> list[str]:
    """The file's version first, then older ones a worker still reports loaded."""
    others = sorted(key.rpartition("@")[2] for key in reported if key.rpartition("@")[0] == file.name)
    return [file.version, *(version for version in others if version != file.version)]


def description(
    file: ModelFile, reported: dict[str, dict[str, Any]], version: str | None = None
) -> dict[str, Any]:
    """What a worker reported of the version, else the file's own facts (its sidecar)."""
    return reported.get(f"{file.name}@{version or file.version}") or file.to_dict()


def check_version(file: ModelFile, reported: dict[str, dict[str, Any]], version: str | None) -> None:
    if version is not None and version not in versions(file, reported):
        raise ApiError(
            404,
            "version_not_found",
            f"model {file.name!r} has no version {version!r}; its version is {file.version!r}",
        )


def input_datatype(file: ModelFile) -> str:
    return "FP32" if file.input_kind == "sequences" else "FP64"


def model_metadata(
    file: ModelFile, reported: dict[str, dict[str, Any]], version: str | None
) -> dict[str, Any]:
    described = description(file, reported, version)
    n_features = described.get("n_features") or UNKNOWN
    if file.input_kind == "sequences":
        length = described.get("sequence_length") if described.get("fixed_sequence_length") else None
        input_shape = [UNKNOWN, length or UNKNOWN, n_features]
    else:
        input_shape = [UNKNOWN, n_features]
    return {
        "name": file.name,
        "versions": [version] if version is not None else versions(file, reported),
        "platform": PLATFORMS[file.type],
        "inputs": [{"name": INPUT_NAME, "datatype": input_datatype(file), "shape": input_shape}],
        # One value per row or sequence; a model of several outputs answers [rows, outputs].
        "outputs": [{"name": OUTPUT_NAME, "datatype": input_datatype(file), "shape": [UNKNOWN]}],
    }


def output_tensor(predictions: list[Any], datatype: str) -> dict[str, Any]:
    shape = [len(predictions)]
    if predictions and isinstance(predictions[0], list):
        shape.append(len(predictions[0]))
        data = [value for row in predictions for value in row]
    else:
        data = predictions
    return {"name": OUTPUT_NAME, "datatype": datatype, "shape": shape, "data": data}
