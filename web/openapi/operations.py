"""Every route of the app, as the OpenAPI document describes it.

One entry per Flask rule and method, naming the pydantic types that validate its input
(the same ones the handlers use) and those of its answers. `/healthz`, `/readyz` and
`/metrics` are described here from the shared contract; their handlers live in
`web/health.py` and `web/metrics.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter

from db.record import TradeId, TradeRecord, TradeUpdate
from web.ml import PredictRequest
from web.openapi import responses as r
from web.schemas import StatsQuery, TradeQuery

JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    """One documented status: its schema (a pydantic type, or a raw schema for other media)."""

    description: str
    model: type | None = None
    media: dict[str, dict[str, Any]] | None = None  # media type -> raw schema
    headers: dict[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True)
class Route:
    rule: str  # the Flask rule, e.g. "/api/v1/trades/<trade_id>"
    method: str
    operation_id: str
    summary: str
    tag: str
    answers: dict[int, Answer]
    errors: tuple[int, ...] = ()  # statuses answered with the JSON error body
    body: type | None = None
    query: type[BaseModel] | None = None
    path: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> schema
    headers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    secured: bool = True  # needs the bearer token when API_TOKEN is set
    description: str = ""


TRADE_ID_PATH = {"trade_id": TypeAdapter(TradeId).json_schema()}
MODEL_NAME_PATH = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255, "examples": ["xgboost_model"]}
}
JOB_ID_PATH = {"job_id": {"type": "string", "format": "uuid"}}
LOCATION = {"Location": "where to read the result"}
BINARY = {"type": "string", "format": "binary"}
HTML = {"text/html": {"type": "string"}}
_POINTS = {"type": "array", "items": {"type": "object", "required": ["at"]}}
PERFORMANCE = {
    "type": "object",
    "required": ["totals", "bucket", "per_bucket", "equity"],
    "properties": {
        "totals": {"type": "object"},
        "bucket": {"type": "string"},
        "per_bucket": _POINTS,
        "equity": _POINTS,
    },
}

ROUTES: tuple[Route, ...] = (
    # -- trade journal ------------------------------------------------------------
    Route(
        rule="/api/v1/trades",
        method="POST",
        operation_id="recordTrade",
        summary="Journal a trade",
        tag="trades",
        answers={202: Answer("enqueued as `trades.record`", r.TradeAccepted, headers=LOCATION)},
        errors=(400, 401, 413, 422, 503),
        body=TradeRecord,
        description="Validates the record and enqueues it; a worker writes it, once, to the journal. "
        "`trade_id` and `timestamp` are generated when missing. With the broker unavailable the "
        "record waits in this server's outbox (`status: spooled`); 503 `journal_unavailable` only "
        "when that outbox's disk refuses it too.",
    ),
    Route(
        rule="/api/v1/trades/<trade_id>",
        method="PATCH",
        operation_id="updateTrade",
        summary="Update a trade (close, PnL, fees)",
        tag="trades",
        answers={202: Answer("enqueued as `trades.update`", r.TradeAccepted, headers=LOCATION)},
        errors=(400, 401, 413, 422, 503),
        body=TradeUpdate,
        path=TRADE_ID_PATH,
        description="An update that arrives before its trade waits for it. `updated_at` (default: "
        "now) orders it: per field, the newest change wins, whatever order updates arrive in.",
    ),
    Route(
        rule="/api/v1/trades",
        method="GET",
        operation_id="listTrades",
        summary="List trades, newest first",
        tag="trades",
        answers={200: Answer("the trades", r.TradeList)},
        errors=(400, 401, 503),
        query=TradeQuery,
    ),
    Route(
        rule="/api/v1/trades/stats",
        method="GET",
        operation_id="tradeStats",
        summary="Trade statistics",
        tag="trades",
        answers={200: Answer("count, win rate, PnL and fees; per bucket when asked", r.StatsResponse)},
        errors=(400, 401, 503),
        query=StatsQuery,
    ),
    Route(
        rule="/api/v1/trades/<trade_id>",
        method="GET",
        operation_id="getTrade",
        summary="One trade",
        tag="trades",
        answers={200: Answer("the trade", r.Trade)},
        errors=(400, 401, 404, 503),
        path=TRADE_ID_PATH,
    ),
    # -- model serving ------------------------------------------------------------
    Route(
        rule="/api/v1/ml/models",
        method="GET",
        operation_id="listModels",
        summary="List the models of MODEL_DIR",
        tag="ml",
        answers={200: Answer("the models", r.ModelList)},
        errors=(401, 503),
    ),
    Route(
        rule="/api/v1/ml/models/<name>",
        method="GET",
        operation_id="getModel",
        summary="One model",
        tag="ml",
        answers={200: Answer("the model", r.ModelInfo)},
        errors=(400, 401, 404, 503),
        path=MODEL_NAME_PATH,
        description="`name` is the file name, or its stem when only one file has it.",
    ),
    Route(
        rule="/api/v1/ml/predict",
        method="POST",
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
            )
        },
        description="`features`: rows of numbers for tree models (one prediction per row); for an "
        "LSTM one sequence `[[...], ...]` (time x features) or a batch of them `[[[...]]]`. "
        "Waits up to PREDICT_TIMEOUT_S; then 504 with `details.job_id` and `details.status_url` "
        "(the job goes on). 422 when `model_type` disagrees with the model or the input's shape "
        "does not fit it; 503 when Redis (broker, results) is down, or `model_loading` (with "
        "`Retry-After`) while a model file just copied in is not loaded yet.",
    ),
    Route(
        rule="/api/v1/ml/jobs/<job_id>",
        method="GET",
        operation_id="getJob",
        summary="A prediction job's state",
        tag="ml",
        answers={200: Answer("the job; `result` once succeeded, `error` once failed", r.Job)},
        errors=(401, 404, 503),
        path=JOB_ID_PATH,
        description="404 for an id never issued here, or expired.",
    ),
    # -- this document ------------------------------------------------------------
    Route(
        rule="/api/v1/openapi.json",
        method="GET",
        operation_id="openapi",
        summary="This OpenAPI document",
        tag="docs",
        answers={200: Answer("OpenAPI 3.1", media={JSON: {"type": "object"}})},
        secured=False,
    ),
    Route(
        rule="/api/v1/docs/",
        method="GET",
        operation_id="docs",
        summary="Interactive documentation (Swagger UI)",
        tag="docs",
        answers={200: Answer("the page", media={"text/html": {"type": "string"}})},
        secured=False,
        description="`/api/v1/docs` redirects here.",
    ),
    Route(
        rule="/api/v1/docs/<path:path>",
        method="GET",
        operation_id="docsAsset",
        summary="The documentation page's assets",
        tag="docs",
        answers={
            200: Answer(
                "a file of the Swagger UI distribution",
                media={kind: BINARY for kind in ("text/html", "text/css", "text/javascript", "image/png")},
            )
        },
        errors=(404,),
        path={"path": {"type": "string", "examples": ["swagger-ui.css"]}},
        secured=False,
    ),
    # -- dashboard (web/dashboard.py): HTML for browsers ------------------------------
    # With API_TOKEN set these need the dashboard's session cookie (from POST /login),
    # not the bearer token; without it they are open, like the API.
    Route(
        rule="/",
        method="GET",
        operation_id="dashboard",
        summary="The dashboard (or, with API_TOKEN set and no session, its login form)",
        tag="dashboard",
        answers={200: Answer("the page", media=HTML)},
        secured=False,
    ),
    Route(
        rule="/login",
        method="POST",
        operation_id="dashboardLogin",
        summary="Log in to the dashboard with the API token (form field `token`)",
        tag="dashboard",
        answers={
            303: Answer("to the dashboard, with the session cookie", headers=LOCATION),
            401: Answer("not the API token: the form again", media=HTML),
        },
        secured=False,
    ),
    Route(
        rule="/logout",
        method="POST",
        operation_id="dashboardLogout",
        summary="End the dashboard's session",
        tag="dashboard",
        answers={303: Answer("to the dashboard", headers=LOCATION)},
        secured=False,
    ),
    Route(
        rule="/dashboard/trades",
        method="GET",
        operation_id="dashboardTrades",
        summary="The trades panel (HTML), newest first",
        tag="dashboard",
        answers={200: Answer("the panel", media=HTML)},
        errors=(400, 401, 503),
        query=TradeQuery,
        secured=False,
    ),
    Route(
        rule="/dashboard/models",
        method="GET",
        operation_id="dashboardModels",
        summary="The models panel (HTML)",
        tag="dashboard",
        answers={200: Answer("the panel", media=HTML)},
        errors=(401, 503),
        secured=False,
    ),
    Route(
        rule="/dashboard/health",
        method="GET",
        operation_id="dashboardHealth",
        summary="The health panel (HTML): readiness checks and the spool backlog",
        tag="dashboard",
        answers={200: Answer("the panel", media=HTML)},
        errors=(401,),
        secured=False,
    ),
    Route(
        rule="/dashboard/performance.json",
        method="GET",
        operation_id="dashboardPerformance",
        summary="The charts' data: totals, PnL per bucket (default `1 day`) and the equity curve",
        tag="dashboard",
        answers={200: Answer("totals and two series (times in Unix seconds)", media={JSON: PERFORMANCE})},
        errors=(400, 401, 503),
        query=StatsQuery,
        secured=False,
    ),
    Route(
        rule="/dashboard/static/<path:filename>",
        method="GET",
        operation_id="staticFile",
        summary="The dashboard's script, styles and vendored chart library",
        tag="dashboard",
        answers={200: Answer("the file", media={"application/octet-stream": BINARY})},
        errors=(404,),
        path={"filename": {"type": "string"}},
        secured=False,
    ),
    # -- operations (shared contract) -------------------------------------------------
    Route(
        rule="/healthz",
        method="GET",
        operation_id="liveness",
        summary="Liveness",
        tag="operations",
        answers={200: Answer("the process answers", r.Liveness)},
        secured=False,
        description="Touches no dependency.",
    ),
    Route(
        rule="/readyz",
        method="GET",
        operation_id="readiness",
        summary="Readiness",
        tag="operations",
        answers={
            200: Answer("database, broker, workers and models ready", r.Readiness),
            503: Answer("not ready; `checks` says which part failed", r.Readiness),
        },
        secured=False,
    ),
    Route(
        rule="/metrics",
        method="GET",
        operation_id="metrics",
        summary="Prometheus metrics",
        tag="operations",
        answers={200: Answer("Prometheus text format", media={"text/plain": {"type": "string"}})},
        secured=False,
        description="Includes the workers' metrics (prometheus_client multiprocess mode).",
    ),
)
