"""/api/v1/ml predictions and performance: what the prediction log and the trades linked
to it say about each model version (read from the database; written by the workers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, jsonify
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from db import (
    PREDICTION_ID,
    PredictionId,
    database,
    logged_prediction,
    no_trades,
    served_versions,
)
from models import ModelNotFound, ModelStore, check_name
from web import reads
from web.errors import ApiError, database_unavailable, invalid
from web.openapi import responses as r
from web.openapi.declare import Answer, documented

blueprint = Blueprint("lineage", __name__)
blueprint.register_error_handler(SQLAlchemyError, database_unavailable)

PREDICTION_ID_PATH = {"prediction_id": TypeAdapter(PredictionId).json_schema()}
MODEL_NAME_PATH = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255, "examples": ["xgboost_model.json"]}
}


@blueprint.get("/predictions/<prediction_id>")
@documented(
    operation_id="getPrediction",
    summary="One logged prediction",
    tag="ml",
    answers={200: Answer("the prediction as the worker served it", r.LoggedPrediction)},
    errors=(400, 401, 404, 503, 504),
    path=PREDICTION_ID_PATH,
    description="`prediction_id` is the one every prediction answer carries (the job id). "
    "`features` are the input rows (at most PREDICTION_LOG_MAX_ROWS; null with "
    "PREDICTION_LOG_FEATURES=off); `contributions` where `explain` was asked; `trade_ids` the "
    "trades recorded with this prediction_id. 404 for an id never logged: the log is written "
    "a moment after the answer, so a prediction just made may take a second to appear.",
)
def get_prediction(prediction_id: str):
    try:
        prediction_id = PREDICTION_ID.validate_python(prediction_id)
    except ValidationError as exc:
        raise invalid(exc, 400, "prediction_id", root="prediction_id") from exc
    entry = logged_prediction(database.session, prediction_id)
    if entry is None:
        raise ApiError(404, "prediction_not_found", f"no prediction {prediction_id!r} is in the log")
    return jsonify(entry)


@blueprint.get("/models/<name>/performance")
@documented(
    operation_id="getModelPerformance",
    summary="Realized performance per model version",
    tag="ml",
    answers={
        200: Answer("per version: predictions served and the linked trades' statistics", r.ModelPerformance)
    },
    errors=(400, 401, 404, 503, 504),
    path=MODEL_NAME_PATH,
    description="`name` is a model file's name (its stem where unambiguous), or the `model_name` "
    "trades were recorded with. Per version: `predictions` logged, `first_served`, "
    "`last_served`, and the trade statistics (as `GET /api/v1/trades/stats`) of the trades "
    "linked to it. 404 when neither MODEL_DIR, the log nor the trades know the name.",
)
def model_performance(name: str):
    model_name, current_version = _model_of(name)
    served = served_versions(database.session, model_name)
    traded = reads.repository().stats_by_version(model_name)
    if not served and not traded and current_version is None:
        raise ApiError(
            404, "model_not_found", f"no model {name!r} in MODEL_DIR, the prediction log or the trades"
        )
    versions = []
    for version in sorted(set(served) | set(traded), key=lambda v: _first_served(served, v)):
        facts = served.get(version, {"predictions": 0, "first_served": None, "last_served": None})
        stats = traded.get(version) or no_trades()
        versions.append(
            {
                "model_version": version,
                "predictions": facts["predictions"],
                "first_served": facts["first_served"],
                "last_served": facts["last_served"],
                **stats,
            }
        )
    return jsonify(model_name=model_name, current_version=current_version, versions=versions)


def _model_of(name: str) -> tuple[str, str | None]:
    """The model's logged name and its current version in MODEL_DIR (None if not there)."""
    store: ModelStore = current_app.extensions["model_store"]
    try:
        file = store.resolve(name)
    except ModelNotFound:
        check_name(name)  # a path or a traversal is a 400, as for every model route
        return name, None
    return file.name, file.version


def _first_served(served: dict[str, dict[str, Any]], version: str | None) -> tuple:
    first = served.get(version, {}).get("first_served")
    return (first is None, first or datetime.max.replace(tzinfo=UTC), version or "")
