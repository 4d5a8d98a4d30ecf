"""Journal entries: a record or an update, as the writer applies them and the spool keeps them.

A spool line is one entry as JSON:
`{"kind": "record", "trade": {...}}`,
`{"kind": "update", "trade_id": "...", "updates": {...}}`, with an optional `"job_id"`, or
`{"kind": "prediction", "prediction": {...}}` (a prediction log entry, `db.prediction_log`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, Strict, StringConstraints

from db.jsonb import json_text
from db.record import TRADE_ID, ModelName, ModelVersion, PredictionId, TradeRecord, TradeUpdate, UtcDatetime


@dataclass(frozen=True)
class RecordEntry:
    record: TradeRecord
    job_id: str | None = None

    @property
    def trade_id(self) -> str:
        return self.record.trade_id

    @property
    def subject(self) -> str:
        return f"trade {self.trade_id}"

    def to_json(self) -> dict[str, Any]:
        return _with_job({"kind": "record", "trade": self.record.to_dict()}, self.job_id)


@dataclass(frozen=True)
class UpdateEntry:
    trade_id: str
    update: TradeUpdate
    job_id: str | None = None

    @property
    def subject(self) -> str:
        return f"update of trade {self.trade_id}"

    def to_json(self) -> dict[str, Any]:
        body = {"kind": "update", "trade_id": self.trade_id, "updates": self.update.to_dict()}
        return _with_job(body, self.job_id)


class LoggedPrediction(BaseModel):
    """A prediction log entry as a spool line holds it (checked again when replayed)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prediction_id: PredictionId
    created_at: UtcDatetime
    model_name: ModelName
    model_version: ModelVersion
    model_type: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=16)]
    rows: Annotated[int, Strict(), Field(ge=0)]
    predictions: list[JsonValue]
    latency_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    request_id: Annotated[str, Strict(), StringConstraints(max_length=128)] | None = None
    features: list[JsonValue] | None = None
    contributions: list[JsonValue] | None = None
    # Absent from lines spooled before releases: a champion's prediction.
    role: Literal["champion", "challenger", "shadow", "pinned"] | None = None
    shadow_of: PredictionId | None = None
    # A shadow's champion (its version and answer), for the kept comparison; not logged.
    champion_version: ModelVersion | None = None
    champion_predictions: list[JsonValue] | None = None


@dataclass(frozen=True)
class PredictionEntry:
    """One served prediction, for the log: the JSON of its fields (LoggedPrediction's).

    A predict process writes it once, as it answers, and the log's writer sends it on as
    it is (db.prediction_log.log_entries): read back into objects and written again at
    every flush, entries cost the process's threads the GIL and its collector work."""

    prediction_id: str
    document: bytes
    job_id: str | None = None

    @classmethod
    def of(cls, fields: dict[str, Any], job_id: str | None = None) -> PredictionEntry:
        """The entry of `fields`, JSON-ready but `created_at` (a datetime); a NaN (a missing
        value) becomes null, as jsonb has none."""
        return cls(fields["prediction_id"], json_text(fields).encode(), job_id)

    @property
    def subject(self) -> str:
        return f"prediction {self.prediction_id}"

    @property
    def fields(self) -> Mapping[str, Any]:
        """The fields as JSON holds them (`created_at` as ISO 8601 text; an integer beyond
        64 bits exact), read-only: the entry is its document."""
        return MappingProxyType(json.loads(self.document))

    def to_json(self) -> dict[str, Any]:
        """The spool line."""
        return {"kind": "prediction", "prediction": json.loads(self.document)}


Entry = RecordEntry | UpdateEntry | PredictionEntry
TradeEntry = RecordEntry | UpdateEntry


class UnstorableEntry(ValueError):
    """An entry that can never be stored as it is (beyond what field validation says)."""


def _with_job(body: dict[str, Any], job_id: str | None) -> dict[str, Any]:
    if job_id is not None:
        body["job_id"] = job_id
    return body


def entry_from_json(data: Any) -> Entry:
    """Parse a spooled entry; raises UnstorableEntry (or pydantic's ValidationError) if invalid."""
    if not isinstance(data, dict):
        raise UnstorableEntry("an entry must be a JSON object")
    job_id = data.get("job_id")
    if data.get("kind") == "record":
        return RecordEntry(TradeRecord.from_dict(data.get("trade")), job_id)
    if data.get("kind") == "update":
        trade_id = TRADE_ID.validate_python(data.get("trade_id"))
        return UpdateEntry(trade_id, TradeUpdate.from_dict(data.get("updates")), job_id)
    if data.get("kind") == "prediction":
        return PredictionEntry.of(LoggedPrediction.model_validate(data.get("prediction")).model_dump())
    raise UnstorableEntry(f"unknown entry kind {data.get('kind')!r}")
