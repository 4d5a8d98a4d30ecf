"""The V2 routes: server health, model metadata and readiness, and inference.

Inference goes where `POST /api/v1/ml/predict` goes, `PredictionClient.predict` (the
lane, the workers' batching); the request is checked first against what is known of
the model so that a bad tensor is answered without a round trip.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Blueprint, current_app, jsonify, request

from db import database
from models import ModelFile, ModelStore, features_array
from tasks.contract import BROKER_ERRORS
from tasks.web_clients import PredictionClient, PredictionTimeout
from web.errors import ApiError, broker_unavailable
from web.health import ADVISORY, readiness
from web.inputs import body_as
from web.ml import routing_key
from web.model_states import answering
from web.model_versions import pins, version_file
from web.openapi.declare import Answer, documented
from web.settings import current_settings
from web.v2 import schemas as s
from web.v2.metadata import (
    OUTPUT_NAME,
    check_version,
    description,
    input_datatype,
    model_metadata,
    output_tensor,
)
from web.v2.tensors import BINARY_HEADER, BINARY_REFUSED, InferenceRequest, bad_tensor, tensor_values

log = logging.getLogger(__name__)

blueprint = Blueprint("v2", __name__)

NAME = {"name": {"type": "string", "minLength": 1, "maxLength": 255, "examples": ["xgboost_model.json"]}}
VERSION = {"version": {"type": "string", "description": "a content hash", "examples": ["3f2a9c0d1e4b5a67"]}}
ERRORS = {
    400: "a bad tensor, shape, datatype or JSON, or a bad model name",
    401: "missing or wrong bearer token (only when API_TOKEN is set)",
    404: "unknown model or version",
    413: "body larger than MAX_REQUEST_BYTES",
    503: "Redis (broker, results) down, or the model file not loaded yet",
    504: "no answer within PREDICT_TIMEOUT_S; the message names the job id (the job goes on)",
}


def _errors(*statuses: int) -> dict[int, Answer]:
    return {status: Answer(ERRORS[status], s.V2Error) for status in statuses}


for _down in BROKER_ERRORS:
    blueprint.register_error_handler(_down, broker_unavailable)


def _store() -> ModelStore:
    return current_app.extensions["model_store"]


def _client() -> PredictionClient:
    return current_app.extensions["predictions"]


def _answering(name: str) -> ModelFile:
    """The version that answers for `name`: the champion a release pins, else the file's, or
    the last that loaded while it does not."""
    return answering(_store(), name, _client().model_reports(), pins(database.session)).file


# -- server ---------------------------------------------------------------------------


@blueprint.get("/health/live")
@documented(
    operation_id="v2ServerLive",
    summary="V2 server liveness",
    tag="ml",
    answers={200: Answer("the process answers (as /healthz)", s.V2Live)},
)
def server_live():
    return jsonify(live=True)


@blueprint.get("/health/ready")
@documented(
    operation_id="v2ServerReady",
    summary="V2 server readiness",
    tag="ml",
    answers={
        200: Answer("ready: the checks of /readyz pass", s.V2Ready),
        503: Answer("not ready; /readyz says which check failed", s.V2Ready),
    },
)
def server_ready():
    # As /readyz: the advisory checks (beat's upkeep) are shown there, never a reason to be unready.
    ready = all(check["ok"] for name, check in readiness().report().items() if name not in ADVISORY)
    return jsonify(ready=ready), 200 if ready else 503


# -- models ---------------------------------------------------------------------------


def _version_view(name: str, version: str | None) -> tuple[ModelFile, dict[str, dict[str, Any]]]:
    """The file of the version asked for (a kept one too; 404 for one not kept) and what the
    workers reported: of the versions answering for file names, and, for a version asked
    for, of those held beside them (a release's, or one loaded on demand)."""
    file = _answering(name)
    reports = _client().model_reports()
    if version is None:
        return file, reports.loaded
    if version != file.version:
        file = version_file(file.name, version)
    return file, {**reports.beside, **reports.loaded}


def _metadata(name: str, version: str | None):
    file, reported = _version_view(name, version)
    check_version(file, reported, version)
    return jsonify(model_metadata(file, reported, version))


METADATA = {
    "tag": "ml",
    "answers": {200: Answer("the model's versions, platform and tensors", s.V2ModelMetadata)}
    | _errors(400, 401, 404, 503),
}


@blueprint.get("/models/<name>")
@documented(operation_id="v2ModelMetadata", summary="V2 model metadata", path=NAME, **METADATA)
def model(name: str):
    return _metadata(name, None)


@blueprint.get("/models/<name>/versions/<version>")
@documented(
    operation_id="v2ModelVersionMetadata",
    summary="V2 model metadata, one version",
    path=NAME | VERSION,
    **METADATA,
)
def model_version(name: str, version: str):
    return _metadata(name, version)


def _ready(name: str, version: str | None):
    file, reported = _version_view(name, version)
    check_version(file, reported, version)
    loaded = [key.rpartition("@")[2] for key in reported if key.rpartition("@")[0] == file.name]
    wanted = version or file.version
    if not loaded or (version is not None and version not in loaded):
        raise ApiError(
            400, "model_not_ready", f"no predict worker has loaded {file.name!r} version {wanted!r} yet"
        )
    return jsonify(name=file.name, version=wanted if wanted in loaded else loaded[0], ready=True)


READY = {
    "tag": "ml",
    "answers": {200: Answer("a predict worker has the model loaded", s.V2ModelReady)}
    | _errors(400, 401, 404, 503),
    "description": "400 while no predict worker has loaded it (the protocol: any 4xx is not ready).",
}


@blueprint.get("/models/<name>/ready")
@documented(operation_id="v2ModelReady", summary="V2 model readiness", path=NAME, **READY)
def model_ready(name: str):
    return _ready(name, None)


@blueprint.get("/models/<name>/versions/<version>/ready")
@documented(
    operation_id="v2ModelVersionReady",
    summary="V2 model readiness, one version",
    path=NAME | VERSION,
    **READY,
)
def model_version_ready(name: str, version: str):
    return _ready(name, version)


# -- inference ------------------------------------------------------------------------


INFER = {
    "tag": "ml",
    "answers": {200: Answer("the prediction", s.V2InferenceResponse)} | _errors(400, 401, 404, 413, 503, 504),
    "body": InferenceRequest,
    "description": "One input tensor (FP32, FP64, INT32, INT64 or BOOL; `data` flat row-major or "
    "nested as `shape`): [rows, features] for tree models, [batch, time, features] for the LSTM. "
    "One output, `predict`. JSON tensors only: the binary data extension is refused (400); a "
    "request for binary outputs is answered in JSON. Waits up to PREDICT_TIMEOUT_S, then 504.",
}


@blueprint.post("/models/<name>/infer")
@documented(operation_id="v2Infer", summary="V2 inference", path=NAME, **INFER)
def infer(name: str):
    return _infer(name, None)


@blueprint.post("/models/<name>/versions/<version>/infer")
@documented(operation_id="v2InferVersion", summary="V2 inference, one version", path=NAME | VERSION, **INFER)
def infer_version(name: str, version: str):
    return _infer(name, version)


def _infer(name: str, version: str | None):
    if request.headers.get(BINARY_HEADER) is not None:
        raise bad_tensor(BINARY_REFUSED)
    body = body_as(InferenceRequest.model_validate)
    file = _answering(name)
    reports = _client().model_reports()
    if version is not None and version != file.version:
        file = version_file(file.name, version)  # a kept version, asked for: it answers (404 if not kept)
    reported = {f"{file.name}@{file.version}": reports.description(file.name, file.version) or file.to_dict()}
    checked = _features(file, reported, body)
    settings = current_settings()
    try:
        payload = _client().predict(
            file.name,
            checked,
            None,
            settings.predict_timeout_s,
            model_version=version,
            routing_key=routing_key(),
        )
    except PredictionTimeout as timeout:
        raise ApiError(
            504,
            "prediction_timeout",
            f"no answer within {settings.predict_timeout_s:g}s; the job goes on: job_id {timeout.job_id} "
            f"(GET /api/v1/ml/jobs/{timeout.job_id})",
        ) from None
    if version is not None and payload["model_version"] != version:
        raise ApiError(503, "model_loading", f"version {version!r} of {file.name!r} is loading; try again")
    # orjson, as /api/v1/ml/predict: the hot path's encoding.
    answer = orjson.dumps(_answer(body, payload, input_datatype(file)))
    return current_app.response_class(answer, mimetype="application/json")


def _features(file: ModelFile, reported: dict[str, dict[str, Any]], body: InferenceRequest):
    """The rows (or sequences) to predict, checked as /api/v1/ml/predict checks them."""
    if len(body.inputs) != 1:
        names = ", ".join(repr(tensor.name) for tensor in body.inputs)
        raise bad_tensor(f"this model takes one input tensor; the request has {len(body.inputs)} ({names})")
    unknown = [output.name for output in body.outputs or () if output.name != OUTPUT_NAME]
    if unknown:
        raise bad_tensor(f"unknown output {unknown[0]!r}; this model has one output, {OUTPUT_NAME!r}")
    described = description(file, reported)
    rank = 3 if file.input_kind == "sequences" else 2
    features = tensor_values(body.inputs[0], rank, described.get("n_features"))
    # NaN and infinity as /api/v1 takes them: NaN a missing value for tree models, never infinity.
    return features_array(described, features)


def _answer(body: InferenceRequest, payload: dict[str, Any], datatype: str) -> dict[str, Any]:
    answer: dict[str, Any] = {} if body.id is None else {"id": body.id}
    answer |= {
        "model_name": payload["model_name"],
        "model_version": payload["model_version"],
        "outputs": [output_tensor(payload["predictions"], datatype)],
        "parameters": {"prediction_id": payload["prediction_id"]},
    }
    return answer
