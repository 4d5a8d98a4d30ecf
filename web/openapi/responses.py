"""Pydantic models of what the API answers: the OpenAPI document's response schemas.

Request bodies and query strings are validated by `db.record` and `web.schemas`; these
are the other half, the shapes the handlers return. The schemathesis test checks every
answer against them, so a handler that drifts from its documented shape fails it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from db import TradeId, TradeRecord


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable, e.g. `invalid_input`, `not_found`, `model_not_found`")
    message: str = Field(description="for people")
    details: Any = Field(
        default=None,
        description="what went wrong where: for a bad body or query, a list of `{field, message}`; "
        "for a prediction timeout, `{job_id, status_url}`; omitted when there is nothing to add",
    )


class ErrorResponse(BaseModel):
    """Every error, whatever its status."""

    error: ErrorInfo


# -- trades -----------------------------------------------------------------------


class TradeAccepted(BaseModel):
    """A record or an update taken in; a worker writes it to the journal."""

    trade_id: TradeId
    job_id: str = Field(description="the Celery task id of the write")
    status: Literal["queued", "spooled"] = Field(
        description="`spooled`: the broker was down; the web process keeps the message in its "
        "outbox and sends it once the broker answers"
    )


def _every_field_required(schema: dict[str, Any]) -> None:
    # A stored trade has every field; those not set are null.
    schema["required"] = list(schema["properties"])


@dataclass(config=ConfigDict(extra="forbid", json_schema_extra=_every_field_required), kw_only=True)
class Trade(TradeRecord):
    """A trade as stored in the journal: every field of the record, null where not set."""


class TradeList(BaseModel):
    trades: list[Trade] = Field(description="newest first")
    count: int = Field(ge=0)


class TradeStats(BaseModel):
    """Statistics of a set of trades (definitions in the README, "Trade statistics").

    PnL figures are null where there is nothing to compute them from, or beyond a double's range.
    """

    trades: int = Field(ge=0, description="trades matching the filters")
    closed: int = Field(ge=0, description="of them, closed")
    wins: int = Field(ge=0, description="of them, won")
    win_rate: float | None = Field(description="wins over trades with a known outcome; null without any")
    total_pnl: float | None = Field(description="sum of realized PnL (0 without any)")
    avg_pnl: float | None = Field(description="average realized PnL of the trades that have one")
    fees: float | None = Field(description="sum of fees (0 without any)")
    profit_factor: float | None = Field(
        description="closed trades: gross profit over gross loss; null without a loss"
    )
    max_drawdown: float | None = Field(
        description="closed trades in close order: the largest fall of cumulative realized PnL "
        "from its running peak (which starts at 0), as a non-negative number"
    )
    sharpe: float | None = Field(
        description="closed trades: mean over sample standard deviation of `pnl_pct`, per trade, "
        "not annualized; null below 2 trades or with no deviation"
    )
    sortino: float | None = Field(
        description="closed trades: mean of `pnl_pct` over its downside deviation (target 0); "
        "null below 2 trades or without a negative one"
    )


class StatsBucket(TradeStats):
    start: datetime = Field(description="start of the bucket, UTC")


class StatsGroup(TradeStats):
    """The trades of one group: its key fields (those of `group_by`), then its statistics."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str | None = Field(
        default=None,
        description="with `group_by` `model_name` or `model_version`; null: trades without a model",
    )
    model_version: str | None = Field(default=None, description="with `group_by` `model_version`")
    symbol: str | None = Field(default=None, description="with `group_by` `symbol`")
    buckets: list[StatsBucket] | None = Field(default=None, description="present when `bucket` is given")


class VersionPerformance(TradeStats):
    model_version: str | None = Field(description="null: trades recorded without a version")
    predictions: int = Field(ge=0, description="predictions of this version in the log")
    first_served: datetime | None
    last_served: datetime | None


class ModelPerformance(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    current_version: str | None = Field(description="the version in MODEL_DIR now; null if the file is gone")
    versions: list[VersionPerformance] = Field(description="oldest first served first")


class StatsResponse(TradeStats):
    """The statistics of every matching trade, with buckets and groups when asked."""

    buckets: list[StatsBucket] | None = Field(default=None, description="present when `bucket` is given")
    groups: list[StatsGroup] | None = Field(
        default=None, description="present when `group_by` is given; sorted by key, nulls last"
    )


# -- model serving ----------------------------------------------------------------


class LoadError(BaseModel):
    """The file of MODEL_DIR under a model's name, which does not load."""

    version: str = Field(description="first 16 hex digits of the file's SHA-256")
    code: str = Field(description="`model_refused` (not a model, or a refused pickle) or `model_unloadable`")
    message: str


class ModelInfo(BaseModel):
    """A model file of MODEL_DIR; the worker-reported fields appear once a worker loaded it.
    While the file does not load, the version the workers kept answers and is described here,
    with the file's `load_error`."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    type: Literal["xgboost", "lightgbm", "lstm"]
    format: str
    input_kind: Literal["rows", "sequences"]
    size_mb: float
    size_bytes: int
    modified: datetime
    version: str = Field(description="first 16 hex digits of the file's SHA-256")
    loaded: bool = Field(description="a predict worker has loaded this version")
    n_features: int | None
    feature_names: list[str] | None = None
    description: str | None = None
    sequence_length: int | None = None
    fixed_sequence_length: bool | None = None
    max_batch: int | None = Field(
        default=None, description="from the sidecar: predictions one model call takes at most"
    )
    batch_wait_s: float | None = Field(
        default=None, description="from the sidecar: how long queueing callers wait for company"
    )
    load_error: LoadError | None = Field(
        default=None, description="the file on disk does not load; the version described answers meanwhile"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]


class Prediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    predictions: list[Any] = Field(
        description="one entry per row (tree models) or sequence (LSTM): a number, null for a "
        "non-finite value, or a list of them for multi-output models"
    )
    model_name: str
    model_type: Literal["xgboost", "lightgbm", "lstm"]
    model_version: str
    role: Literal["champion", "challenger", "pinned"] = Field(
        description="which side of the model's release answered: `challenger` for a canary's share, "
        "`pinned` when `model_version` asked for a version"
    )
    prediction_id: str = Field(description="the job's id; the prediction log keeps it under this id")
    contributions: list[Any] | None = Field(
        default=None,
        description="with `explain: true`: per row, each feature's contribution then the bias "
        "(per class for multi-class models)",
    )


class LoggedPrediction(BaseModel):
    """A prediction as the log keeps it."""

    model_config = ConfigDict(protected_namespaces=())

    prediction_id: str
    model_name: str
    model_version: str
    model_type: Literal["xgboost", "lightgbm", "lstm"]
    created_at: datetime = Field(description="when the worker served it, UTC")
    rows: int = Field(ge=0, description="rows (or sequences) predicted")
    predictions: list[Any]
    latency_ms: float = Field(ge=0, description="the worker's time, from taking the batch to the answer")
    request_id: str | None = Field(description="the HTTP request's X-Request-ID")
    features: list[Any] | None = Field(description="the input rows, at most PREDICTION_LOG_MAX_ROWS")
    contributions: list[Any] | None = Field(description="where `explain` was asked")
    role: Literal["champion", "challenger", "shadow", "pinned"] | None = Field(
        description="which side of the release answered; null for entries logged before releases (a champion)"
    )
    shadow_of: str | None = Field(description="a shadow prediction's champion `prediction_id`")
    trade_ids: list[str] = Field(description="trades recorded with this prediction_id")


# -- model versions and releases (handlers in web/releases.py) ------------------------


class KeptVersion(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str = Field(description="first 16 hex digits of the content's SHA-256")
    first_seen: datetime = Field(
        description="when a worker first kept it (the file's time for a version not kept yet)"
    )
    size_mb: float
    loaded: bool = Field(description="some predict worker holds it loaded")
    current: bool = Field(description="the content of the file in MODEL_DIR now")


class ModelVersions(BaseModel):
    versions: list[KeptVersion] = Field(description="newest first")


class Guards(BaseModel):
    """Limits past which the challenger is rolled back on its own (none by default)."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float | None = Field(default=None, ge=0, le=1, description="failed / answered")
    max_nonfinite_rate: float | None = Field(
        default=None, ge=0, le=1, description="non-finite outputs / answered"
    )
    max_p99_ms: float | None = Field(default=None, gt=0, description="the challenger's p99 model latency")
    min_predictions: int = Field(default=100, ge=1, description="predictions seen before a guard judges")


class Release(BaseModel):
    champion: str | None = Field(
        description="the version answering as champion (null: no file, nothing pinned)"
    )
    pinned: bool = Field(
        description="the champion was set by a promotion or rollback, not the file's content"
    )
    challenger: str | None
    mode: Literal["shadow", "canary"] | None
    percent: int | None = Field(description="a canary's share of requests, 1-100")
    guards: dict[str, Any]
    challenger_since: datetime | None = Field(
        description="when the challenger was set: the comparison's window"
    )
    previous_champion: str | None = Field(description="what a rollback without a challenger restores")


class ReleaseChange(BaseModel):
    at: datetime
    who: str = Field(
        description="`api` (the API token), `cli:<operating-system user>`, or `guard` (an automatic rollback)"
    )
    action: Literal["release", "promote", "rollback", "guard"]
    from_: str | None = Field(alias="from")
    to: str | None
    mode: Literal["shadow", "canary"] | None
    percent: int | None
    reason: str


class ReleaseHistory(BaseModel):
    changes: list[ReleaseChange] = Field(description="newest first")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str = Field(description="where to poll the job (also the `Location` header)")


class JobError(ErrorInfo):
    status: int = Field(description="the HTTP status a synchronous request would have had")


class Job(BaseModel):
    job_id: str
    status: Literal["pending", "running", "succeeded", "failed"]
    result: Prediction | None = Field(default=None, description="when succeeded")
    error: JobError | None = Field(default=None, description="when failed")


# -- operations (handlers in web/health.py and web/metrics.py) ----------------------


class Liveness(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    ok: bool
    error: str | None = None


class WorkerQueues(BaseModel):
    predict: list[str] = Field(description="names of the workers consuming the queue")
    trades: list[str]


class WorkersCheck(Check):
    queues: WorkerQueues


class LoadedModelVersion(BaseModel):
    name: str
    version: str


class DegradedModel(LoadError):
    name: str
    serving: str | None = Field(description="the version that answers meanwhile; null: none, the name is out")


class ModelsCheck(Check):
    loaded: list[LoadedModelVersion]
    missing: list[str] | None = None
    degraded: list[DegradedModel] | None = Field(
        default=None, description="files that do not load; never a reason to be unready"
    )


class JournalCheck(Check):
    held: int | None = Field(
        description="trades the workers hold unacknowledged: neither the database nor the spool takes them"
    )
    workers: dict[str, int] | None = Field(default=None, description="`worker:task` -> trades it holds")


class DisagreeingQueue(BaseModel):
    queue: str
    argument: str | None = Field(description="the queue argument RabbitMQ holds otherwise (None: not named)")
    fix: str = Field(description="the command that moves the queue's messages into the contract's queue")


class BrokerCheck(Check):
    disagreeing: list[DisagreeingQueue] | None = Field(
        default=None,
        description="RabbitMQ queues declared otherwise than this version declares them (a classic "
        "`trades` left by an older deployment): no worker consumes them until they are migrated",
    )


class UpkeepPart(Check):
    model_config = ConfigDict(extra="allow")


class MaintenanceCheck(Check):
    """Beat's upkeep; shown, never a reason to be unready (a lagging fold slows reads, it
    does not make them wrong)."""

    statistics: UpkeepPart | None = Field(
        default=None, description="the kept statistics: built, pending changes, lag_s, watermark"
    )
    columnstore: UpkeepPart | None = Field(
        default=None, description="per hypertable: chunks, compressed, due (TimescaleDB only)"
    )
    retention: UpkeepPart | None = Field(default=None, description="the prediction log's oldest entry")


class ReadinessChecks(BaseModel):
    database: Check
    broker: BrokerCheck
    workers: WorkersCheck
    models: ModelsCheck
    journal: JournalCheck
    maintenance: MaintenanceCheck


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: ReadinessChecks


class ComparedSide(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str | None = Field(description="the champion's when one was named, else null (any)")
    accuracy: float | None = Field(
        description="share of scored trades where the side was right at the threshold"
    )
    brier: float | None = Field(
        description="mean squared error against `won`; null for outputs outside [0, 1]"
    )
    log_loss: float | None


class Comparison(BaseModel):
    """A challenger against its champion over the shadow pairs of a window, and the closed
    trades linked to the champion's side of them."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    since: datetime
    until: datetime | None
    threshold: float = Field(description="the sidecar's `decision_threshold`, else 0.5")
    source: Literal["kept", "scan"] = Field(
        description="`kept`: the window is an experiment's (since its challenger was set, to now), "
        "read from its kept sums in milliseconds; `scan`: any other window, read from the log"
    )
    pairs: int = Field(description="row pairs: the same input, both predictions")
    agreement: float | None = Field(description="share of pairs on the same side of the threshold")
    mean_abs_diff: float | None
    correlation: float | None
    trades: int = Field(description="closed trades linked to the champion's predictions of those pairs")
    champion: ComparedSide
    challenger: ComparedSide
    taken: int = Field(description="trades the challenger would also have taken")
    declined: int = Field(description="trades the challenger would have declined")
    pnl_taken: float | None
    pnl_declined: float | None
    brier_diff: float | None = Field(
        description="challenger minus champion: below 0, the challenger is better"
    )
    brier_diff_ci: list[float] | None = Field(
        description="95 % paired (Poisson) bootstrap interval of `brier_diff`: each trade's weight "
        "in each resample a Poisson(1) draw seeded by its trade id"
    )
    verdict: Literal["challenger better", "champion better", "not enough evidence"]
    n: int = Field(description="scored trades the verdict rests on")
    resamples: int
