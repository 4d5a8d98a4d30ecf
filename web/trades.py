"""/api/v1/trades: journal trades over HTTP, and read the journal back."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, url_for
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from db.extension import database
from db.record import TRADE_ID, TradeRecord, TradeUpdate
from db.repository import TradeRepository, trade_as_dict
from tasks.client import Enqueued, JournalUnavailable, TradeJournal
from tasks.contract.failures import brief
from web.errors import ApiError, error_response, invalid
from web.inputs import body_as, query
from web.schemas import StatsQuery, TradeQuery

log = logging.getLogger(__name__)

blueprint = Blueprint("trades", __name__)


@blueprint.errorhandler(SQLAlchemyError)
def _database_down(error: SQLAlchemyError):
    # Writes go through the broker (or the outbox); only reads need the database. Input
    # is checked before it reaches a query, so any database error here is the server's:
    # down, silent, read-only, mid-migration.
    log.warning("trade database unavailable: %s", brief(error))
    response = error_response(503, "database_unavailable", "the trade database does not answer; try again")
    response[0].headers["Retry-After"] = "5"
    return response


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
def record_trade():
    return _accepted(_journal().record_trade(body_as(TradeRecord.from_dict)))


@blueprint.patch("/<trade_id>")
def update_trade(trade_id: str):
    trade_id = _trade_id(trade_id)
    update = body_as(TradeUpdate.from_dict)
    return _accepted(_journal().update_trade(trade_id, **update.to_dict()))


@blueprint.get("")
def list_trades():
    filters = query(TradeQuery)
    trades = TradeRepository(database.session).list(**filters.model_dump())
    return jsonify(trades=[trade_as_dict(trade) for trade in trades], count=len(trades))


@blueprint.get("/stats")
def trade_stats():
    filters = query(StatsQuery)
    stats = TradeRepository(database.session).stats(**filters.model_dump())
    for bucket in stats.get("buckets", []):
        bucket["start"] = bucket["start"].isoformat()
    return jsonify(stats)


@blueprint.get("/<trade_id>")
def get_trade(trade_id: str):
    trade = TradeRepository(database.session).get(_trade_id(trade_id))
    if trade is None:
        raise ApiError(404, "not_found", f"no trade {trade_id!r}")
    return jsonify(trade_as_dict(trade))
