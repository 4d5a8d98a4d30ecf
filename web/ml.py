"""/api/v1/ml: list models, predict (waiting or not), poll jobs.

The web process never loads a model: it lists MODEL_DIR (file facts, sidecars) and reads
what the predict workers reported about the versions they loaded. It checks what it
can (the name, the type, the input's shape when a worker has described the model) so
that a bad request is answered without a round trip, and leaves the rest to the worker.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

import orjson
from flask import Blueprint, current_app, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Strict, StringConstraints

from db import database
from models import (
    EXPLAINABLE_TYPES,
    ExplanationUnsupported,
    ModelFile,
    ModelStore,
    check_type,
    features_array,
)
from tasks.contract import BROKER_ERRORS
from tasks.observability import timeline
from tasks.web_clients import ModelReports, PredictionClient, PredictionTimeout
from web.errors import ApiError, broker_unavailable
from web.inputs import body_as
from web.model_states import Answering, answering, model_states
from web.model_versions import pins, version_file
from web.openapi import responses as r
from web.openapi.declare import LOCATION, Answer, documented
from web.settings import current_settings

log = logging.getLogger(__name__)

blueprint = Blueprint("ml", __name__)

MODEL_NAME_PATH = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255, "examples": ["xgboost_model"]}
}
JOB_ID_PATH = {"job_id": {"type": "string", "format": "uuid"}}
ROUTING_KEY = "X-Routing-Key"
MAX_ROUTING_KEY = 256
ROUTING_HEADER = {
    ROUTING_KEY: (
        "a canary's sticky key (a symbol, an account): the same key is answered by the same side "
        "of the model's release; without it each request is drawn at random",
        {"type": "string", "maxLength": MAX_ROUTING_KEY, "examples": ["BTCUSDT"]},
    )
}


def routing_key() -> str | None:
    key = request.headers.get(ROUTING_KEY)
    if key is not None and len(key) > MAX_ROUTING_KEY:
        raise ApiError(400, "invalid_header", f"{ROUTING_KEY} takes at most {MAX_ROUTING_KEY} characters")
    return key or None


DESCRIBED = ("n_features", "feature_names", "input_kind", "sequence_length", "fixed_sequence_length")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]
    model_type: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=32)] | None = None
    features: Annotated[list[Any], Strict()]
    explain: Annotated[bool, Strict()] = False
    model_version: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)] | None = None


for _down in BROKER_ERRORS:  # down, silent, or refusing writes: all the same to a caller
    blueprint.register_error_handler(_down, broker_unavailable)


def _store() -> ModelStore:
    return current_app.extensions["model_store"]


def _client() -> PredictionClient:
    return current_app.extensions["predictions"]


def model_entry(model: Answering, reports: ModelReports) -> dict[str, Any]:
    """The facts of the version that answers for a name, what the workers reported about
    it, and the load error of a file that does not load (the dashboard's too)."""
    file = model.file
    entry = {"n_features": None, **file.to_dict()}
    description = reports.description(file.name, file.version)
    entry["loaded"] = description is not None
    for key in DESCRIBED:
        if description is not None and description.get(key) is not None:
            entry[key] = description[key]
    if model.pinned:
        entry["pinned"] = True
    if model.load_error is not None:
        entry["load_error"] = model.load_error
    return entry


def listed_entries() -> list[dict[str, Any]]:
    """Every name of MODEL_DIR some version answers for, or that is a model file."""
    reports = _client().model_reports()
    states = model_states(_store(), reports, pins(database.session))
    return [
        model_entry(Answering(state.file, state.load_error, state.pinned), reports)
        for state in states
        if state.file is not None
    ]


def serving_file(name: str) -> ModelFile:
    """The file of the version that answers for `name` (the last that loaded, while the
    file on disk does not)."""
    return answering(_store(), name, _client().model_reports()).file


@blueprint.get("/models")
@documented(
    operation_id="listModels",
    summary="List the models of MODEL_DIR",
    tag="ml",
    answers={200: Answer("the models", r.ModelList)},
    errors=(401, 503),
)
def list_models():
    return jsonify(models=listed_entries())


@blueprint.get("/models/<name>")
@documented(
    operation_id="getModel",
    summary="One model",
    tag="ml",
    answers={200: Answer("the model", r.ModelInfo)},
    errors=(400, 401, 404, 503),
    path=MODEL_NAME_PATH,
    description="`name` is the file name, or its stem when only one file has it.",
)
def get_model(name: str):
    reports = _client().model_reports()
    return jsonify(model_entry(answering(_store(), name, reports, pins(database.session)), reports))


@blueprint.post("/predict")
@documented(
    operation_id="predict",
    summary="Predict",
    tag="ml",
    answers={
        200: Answer("the prediction (synchronous)", r.Prediction),
        202: Answer(
            "queued (with `Prefer: respond-async`); poll `status_url`",
            r.JobAccepted,
            headers={**LOCATION, "Preference-Applied": "`respond-async`"},
        ),
    },
    errors=(400, 401, 404, 413, 422, 503, 504),
    body=PredictRequest,
    headers={
        "Prefer": (
            "`respond-async`: answer 202 with a job id at once instead of waiting",
            {"type": "string", "examples": ["respond-async"]},
        ),
        **ROUTING_HEADER,
    },
    description="`features`: rows of numbers for tree models (one prediction per row); for an "
    "LSTM one sequence `[[...], ...]` (time x features) or a batch of them `[[[...]]]`. "
    "`explain: true` adds `contributions` (tree models): per row, each feature's contribution "
    "and the bias last, the libraries' own (XGBoost `pred_contribs`, LightGBM `pred_contrib`); "
    "422 `explanation_unsupported` for the LSTM. Every answer carries its `prediction_id` (the "
    "job's id), under which the prediction is logged (`GET /predictions/<prediction_id>`). "
    "Waits up to PREDICT_TIMEOUT_S; then 504 with `details.job_id` and `details.status_url` "
    "(the job goes on). 422 when `model_type` disagrees with the model or the input's shape "
    "does not fit it; 503 when Redis (broker, results) is down, or `model_loading` (with "
    "`Retry-After`) while a model file just copied in is not loaded yet. `model_version`: "
    "that kept version answers (`role: pinned`; 404 `version_not_found` for one not kept); "
    "otherwise the model's release decides (`role`: `champion`, or `challenger` for a canary's share).",
)
def predict():
    body = body_as(PredictRequest.model_validate)
    timeline.mark("parsed")
    key = routing_key()
    file = serving_file(body.model_name)
    if body.model_version is not None:
        file = version_file(file.name, body.model_version)
    check_type(file.type, body.model_type)
    if body.explain and file.type not in EXPLAINABLE_TYPES:
        raise ExplanationUnsupported.for_type(file.type)
    description = _client().model_reports().description(file.name, file.version)
    routing = {"model_version": body.model_version, "routing_key": key}
    if "respond-async" in request.headers.get("Prefer", "").lower():
        features_array(description or file.to_dict(), body.features)  # an early 422; the worker checks again
        job_id = _client().submit(file.name, body.features, body.model_type, explain=body.explain, **routing)
        response = jsonify(job_id=job_id, status_url=_status_url(job_id))
        response.status_code = 202
        response.headers["Location"] = _status_url(job_id)
        response.headers["Preference-Applied"] = "respond-async"
        return response
    # Checked once, here: the worker takes the resolved name and the array as they are.
    checked = features_array(description or file.to_dict(), body.features)
    timeline.mark("checked")
    try:
        payload = _client().predict(
            file.name,
            checked,
            body.model_type,
            current_settings().predict_timeout_s,
            explain=body.explain,
            **routing,
        )
    except PredictionTimeout as timeout:
        status_url = _status_url(timeout.job_id)
        raise ApiError(
            504,
            "prediction_timeout",
            f"no answer within {current_settings().predict_timeout_s:g}s; "
            "the job goes on, poll its status_url",
            {"job_id": timeout.job_id, "status_url": status_url},
        ) from None
    # orjson: the hot path's encoding costs a tenth of the standard library's.
    response = current_app.response_class(orjson.dumps(payload), mimetype="application/json")
    timeline.mark("encoded")
    return response


@blueprint.get("/jobs/<job_id>")
@documented(
    operation_id="getJob",
    summary="A prediction job's state",
    tag="ml",
    answers={200: Answer("the job; `result` once succeeded, `error` once failed", r.Job)},
    errors=(401, 404, 503),
    path=JOB_ID_PATH,
    description="404 for an id never issued here, or expired.",
)
def get_job(job_id: str):
    try:
        job = _client().job(str(uuid.UUID(job_id)))
    except ValueError:
        job = None
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r} was issued here (or it has expired)")
    body: dict[str, Any] = {"job_id": job.job_id, "status": job.status}
    if job.result is not None:
        body["result"] = job.result
    if job.error is not None:
        body["error"] = {"status": job.error.status, **job.error.to_dict()}
    return jsonify(body)


def _status_url(job_id: str) -> str:
    return url_for("ml.get_job", job_id=job_id)
