"""The trade record type: what a bot journals, validated the same way everywhere.

`TradeRecord` is the plan's dataclass (with `to_dict`/`from_dict`); `TradeUpdate` is a
later change to it (close, exit price, PnL, fees, outcome). The HTTP API, the bot client,
the workers and the importer all validate through these two types, so a record that one
of them accepts, all of them accept. Plain standard library and pydantic only: a bot can
import this module without the rest of the project.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass

MAX_JSON_FIELD_BYTES = 16_384
MAX_FIELD_PATH = 8  # parts of a field's path an error names

# Fields a record fixes when the trade opens. A second record with the same trade_id
# must agree on all of them, or it is a conflict; the other fields may change later.
OPENING_FIELDS = (
    "symbol",
    "timestamp",
    "side",
    "order_type",
    "amount",
    "entry_price",
    "market_regime",
    "bull_confidence",
    "bear_confidence",
    "decision_confidence",
    "agent_votes",
    "signals",
    "prediction_id",
)
# The model version behind a trade's prediction: given by a bot that predicts elsewhere,
# else filled in from the prediction log (so not compared between two copies of a record).
LINEAGE_FIELDS = ("model_name", "model_version")
UPDATE_FIELDS = (
    "exit_price",
    "realized_pnl",
    "pnl_pct",
    "fees",
    "won",
    "closed",
    "close_timestamp",
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso_text_or_datetime(value: Any) -> Any:
    # Lax pydantic would read a bare number as a Unix time; the contract is ISO-8601.
    if isinstance(value, datetime | str):
        return value
    raise ValueError("must be an ISO-8601 date-time string with a UTC offset")


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        raise ValueError("must lie between 0001-01-01 and 9999-12-31 in UTC") from None


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters: PostgreSQL cannot store them")
    return value


def _strings_in(value: Any) -> Iterator[str]:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    """What PostgreSQL's jsonb can hold: finite numbers, no NUL, valid Unicode, bounded size."""
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError("must not contain NaN or infinite numbers") from exc
    try:
        size = len(encoded.encode())
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    if size > MAX_JSON_FIELD_BYTES:
        raise ValueError(f"must be at most {MAX_JSON_FIELD_BYTES} bytes of JSON")
    if any("\x00" in text for text in _strings_in(value)):
        raise ValueError("must not contain NUL (\\u0000) characters: PostgreSQL cannot store them")
    return value


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_text_or_datetime),
    Field(description="ISO-8601 with a UTC offset; stored in UTC"),
    AfterValidator(_to_utc),
]
TradeId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]
Symbol = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9/._:-]*$"),
]
PredictionId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]
ModelName = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=255), AfterValidator(_storable_text)
]
ModelVersion = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=64), AfterValidator(_storable_text)
]
ShortText = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=32), AfterValidator(_storable_text)
]
Positive = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Confidence = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
Flag = Annotated[bool, Strict()]
JsonObject = Annotated[dict[str, JsonValue], AfterValidator(_storable_json)]

_CONFIG = ConfigDict(extra="forbid")


def _stamp_outcome(fields: Any) -> None:
    """Fill what a close implies: when it happened, and whether it won."""
    if fields.closed and fields.close_timestamp is None:
        fields.close_timestamp = utc_now()
    if fields.won is None and fields.realized_pnl is not None and fields.closed:
        fields.won = fields.realized_pnl > 0


@dataclass(config=_CONFIG, kw_only=True)
class TradeRecord:
    """One trade as the bot opened it (and, optionally, closed it)."""

    symbol: Symbol
    side: Literal["buy", "sell"]
    amount: Positive
    entry_price: Positive
    trade_id: TradeId = Field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: UtcDatetime = Field(default_factory=utc_now)
    order_type: Literal["market", "limit"] = "market"
    exit_price: Positive | None = None
    realized_pnl: Finite | None = None
    pnl_pct: Finite | None = None
    fees: NonNegative | None = None
    market_regime: ShortText | None = None
    bull_confidence: Confidence | None = None
    bear_confidence: Confidence | None = None
    decision_confidence: Confidence | None = None
    won: Flag | None = None
    closed: Flag = False
    close_timestamp: UtcDatetime | None = None
    agent_votes: JsonObject | None = None
    signals: JsonObject | None = None
    # Lineage: the `prediction_id` of the prediction behind the trade (the model version is
    # then looked up in the prediction log), or the model's name and version directly.
    prediction_id: PredictionId | None = None
    model_name: ModelName | None = None
    model_version: ModelVersion | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TradeRecord:
        _stamp_outcome(self)
        if self.close_timestamp is not None and self.close_timestamp < self.timestamp:
            raise ValueError("close_timestamp must not be before timestamp")
        if self.model_version is not None and self.model_name is None:
            raise ValueError("model_version needs model_name")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (timestamps as ISO-8601 strings)."""
        return _RECORD.dump_python(self, mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> TradeRecord:
        """Validate a mapping; raises `pydantic.ValidationError` naming each bad field."""
        if isinstance(data, cls):
            return data
        return _RECORD.validate_python(data)

    def opening_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OPENING_FIELDS}


@dataclass(config=_CONFIG, kw_only=True)
class TradeUpdate:
    """A change to a recorded trade; only the fields given are changed."""

    exit_price: Positive | None = None
    realized_pnl: Finite | None = None
    pnl_pct: Finite | None = None
    fees: NonNegative | None = None
    won: Flag | None = None
    closed: Flag | None = None
    close_timestamp: UtcDatetime | None = None
    # When the bot made the change. The journal keeps, per field, the value of the newest
    # change, so an update replayed from a spool or redelivered late never overwrites a
    # newer one. The bot client stamps it when the bot does not.
    updated_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> TradeUpdate:
        if all(getattr(self, name) is None for name in UPDATE_FIELDS):
            raise ValueError(f"an update needs at least one of: {', '.join(UPDATE_FIELDS)}")
        _stamp_outcome(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields this update sets (and its `updated_at`), JSON-ready."""
        return _UPDATE.dump_python(self, mode="json", exclude_none=True)

    def stamped(self, at: datetime | None = None) -> TradeUpdate:
        """This update with its `updated_at` set (to `at`, or now) if it had none."""
        if self.updated_at is not None:
            return self
        return dataclasses.replace(self, updated_at=at or utc_now())

    @property
    def order(self) -> int:
        """Where this change stands among the trade's changes: `updated_at` in microseconds."""
        return stamp_of(self.updated_at) if self.updated_at is not None else 0

    @classmethod
    def from_dict(cls, data: Any) -> TradeUpdate:
        if isinstance(data, cls):
            return data
        return _UPDATE.validate_python(data)


_RECORD = TypeAdapter(TradeRecord)
_UPDATE = TypeAdapter(TradeUpdate)
TRADE_ID = TypeAdapter(TradeId)
PREDICTION_ID = TypeAdapter(PredictionId)


def stamp_of(moment: datetime) -> int:
    """A UTC moment as whole microseconds since the epoch: an order that compares exactly."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def describe_errors(error: ValidationError, root: str = "body") -> list[dict[str, str]]:
    """A JSON-safe list of `{"field", "message"}`, one per problem (`root`: the whole input)."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        location = [str(part) for part in item["loc"]]
        if len(location) > MAX_FIELD_PATH:  # deep JSON: where it starts is what helps
            location = [*location[:MAX_FIELD_PATH], "..."]
        field = ".".join(location) or root
        problems.append({"field": field, "message": item["msg"]})
    return problems
