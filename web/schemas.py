"""Query-string schemas of the HTTP API (request bodies are `db.record` types)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from db import BUCKET_PATTERN, MAX_LIST_LIMIT, ModelName, Symbol, UtcDatetime


def _plus_restored(value: Any) -> Any:
    # An unencoded "+00:00" in a query string arrives as " 00:00".
    return value.replace(" ", "+") if isinstance(value, str) else value


QueryDatetime = Annotated[UtcDatetime, BeforeValidator(_plus_restored)]


class TradeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: Symbol | None = None
    since: QueryDatetime | None = None
    until: QueryDatetime | None = None
    closed: bool | None = None
    limit: int = Field(default=100, ge=1, le=MAX_LIST_LIMIT)


class PerformanceQuery(BaseModel):
    """The dashboard's charts: the trades of a symbol and a time window, per bucket."""

    model_config = ConfigDict(extra="forbid")

    symbol: Symbol | None = None
    since: QueryDatetime | None = None
    until: QueryDatetime | None = None
    bucket: str | None = Field(
        default=None,
        pattern=BUCKET_PATTERN.pattern,
        description="a time series: `15 minutes`, `4 hours`, `1 day`, `1 week` (on the opening time)",
    )


class StatsQuery(PerformanceQuery):
    model_name: ModelName | None = Field(default=None, description="only the trades of this model")
    closed: bool | None = Field(
        default=None, description="only the closed trades (true) or the open ones (false)"
    )
    group_by: Literal["model_version", "model_name", "symbol"] | None = Field(
        default=None,
        description="statistics per group as well (`groups`): per model version (keys `model_name`, "
        "`model_version`), per model (`model_name`) or per `symbol`; trades without a model "
        "form a group with null keys",
    )
