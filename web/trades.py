"""/api/v1/trades: journal trades over HTTP, and read the journal back."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, url_for
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from db import TRADE_ID, TradeId, TradeRecord, TradeUpdate, trade_as_dict
from tasks.client import Enqueued, JournalUnavailable, TradeJournal
from web import reads
from web.errors import ApiError, database_unavailable, error_response, invalid
from web.inputs import body_as, query
from web.openapi import responses as r
from web.openapi.declare import LOCATION, Answer, documented
from web.schemas import StatsQuery, TradeQuery

log = logging.getLogger(__name__)

blueprint = Blueprint("trades", __name__)

TRADE_ID_PATH = {"trade_id": TypeAdapter(TradeId).json_schema()}


# Writes go through the broker (or the outbox); only reads need the database.
blueprint.register_error_handler(SQLAlchemyError, database_unavailable)


@blueprint.errorhandler(JournalUnavailable)
def _journal_unavailable(error: JournalUnavailable):
    log.error("trade not journaled: %s", error)
    response = error_response(
        503, "journal_unavailable", "neither the broker nor this server's outbox takes the trade; try again"
    )
    response[0].headers["Retry-After"] = "5"
    return response


def _journal() -> TradeJournal:
    return current_app.extensions["trade_journal"]


def _trade_id(trade_id: str) -> str:
    try:
        return TRADE_ID.validate_python(trade_id)
    except ValidationError as exc:
        raise invalid(exc, 400, "trade_id", root="trade_id") from exc


def _accepted(enqueued: Enqueued):
    body = {
        "trade_id": enqueued.trade_id,
        "job_id": enqueued.job_id,
        "status": "spooled" if enqueued.spooled else "queued",
    }
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = url_for("trades.get_trade", trade_id=enqueued.trade_id)
    return response


@blueprint.post("")
@documented(
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
)
def record_trade():
    return _accepted(_journal().record_trade(body_as(TradeRecord.from_dict)))


@blueprint.patch("/<trade_id>")
@documented(
    operation_id="updateTrade",
    summary="Update a trade (close, PnL, fees)",
    tag="trades",
    answers={202: Answer("enqueued as `trades.update`", r.TradeAccepted, headers=LOCATION)},
    errors=(400, 401, 413, 422, 503),
    body=TradeUpdate,
    path=TRADE_ID_PATH,
    description="An update that arrives before its trade waits for it. `updated_at` (default: "
    "now) orders it: per field, the newest change wins, whatever order updates arrive in.",
)
def update_trade(trade_id: str):
    trade_id = _trade_id(trade_id)
    update = body_as(TradeUpdate.from_dict)
    return _accepted(_journal().update_trade(trade_id, **update.to_dict()))


@blueprint.get("")
@documented(
    operation_id="listTrades",
    summary="List trades, newest first",
    tag="trades",
    answers={200: Answer("the trades", r.TradeList)},
    errors=(400, 401, 503, 504),
    query=TradeQuery,
)
def list_trades():
    filters = query(TradeQuery)
    trades = reads.repository().list(**filters.model_dump())
    return jsonify(trades=[trade_as_dict(trade) for trade in trades], count=len(trades))


@blueprint.get("/stats")
@documented(
    operation_id="tradeStats",
    summary="Trade statistics: counts, win rate, PnL, fees and risk",
    tag="trades",
    answers={200: Answer("statistics of the whole; per bucket, per group when asked", r.StatsResponse)},
    errors=(400, 401, 503, 504),
    query=StatsQuery,
    description="Counts, win rate, total and average PnL, fees, profit factor, maximum drawdown, "
    "Sharpe and Sortino ratios (per trade, of `pnl_pct`) of the trades matching the filters, "
    "computed by the database. With `bucket`, the same per time bucket of the opening time "
    "(`buckets`); with `group_by`, per model version, model or symbol (`groups`, sorted by "
    "key, trades without a model last), each group with its own `buckets` when `bucket` is "
    "given too.",
)
def trade_stats():
    filters = query(StatsQuery)
    stats = reads.repository().stats(**filters.model_dump())
    for part in (stats, *stats.get("groups", [])):
        for bucket in part.get("buckets", []):
            bucket["start"] = bucket["start"].isoformat()
    return jsonify(stats)


@blueprint.get("/<trade_id>")
@documented(
    operation_id="getTrade",
    summary="One trade",
    tag="trades",
    answers={200: Answer("the trade", r.Trade)},
    errors=(400, 401, 404, 503, 504),
    path=TRADE_ID_PATH,
)
def get_trade(trade_id: str):
    trade = reads.repository().get(_trade_id(trade_id))
    if trade is None:
        raise ApiError(404, "not_found", f"no trade {trade_id!r}")
    return jsonify(trade_as_dict(trade))
