"""The operators' dashboard at `/`: trades, performance, models, the models' performance
per version, their releases and health on one page.

The page and its panels are rendered here (Jinja templates); a small script re-fetches
each panel's HTML and the charts' JSON every few seconds. It reads what the API reads:
the journal's repository, the model store and what the predict workers reported.

A browser cannot send a bearer header when it navigates, so when API_TOKEN is set the
page asks for the token once and keeps the login in Flask's signed session cookie
(HttpOnly, SameSite=Strict), signed with WEB_SECRET_KEY or a key derived from API_TOKEN.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Flask, current_app, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.exc import OperationalError

from config import Settings
from db import database, logged_model_names, no_trades, served_versions, trade_as_dict
from web import reads, release_panel
from web.auth import API_PREFIX
from web.errors import ApiError, database_unavailable, error_response
from web.inputs import query
from web.ml import listed_entries
from web.openapi.declare import BINARY, HTML, JSON, LOCATION, Answer, Documented, declare_endpoint, documented
from web.schemas import PerformanceQuery, TradeQuery
from web.settings import current_settings
from web.stack_status import flower_url, stack_status

log = logging.getLogger(__name__)

# The app serves no static files of its own; the dashboard's live under /dashboard/static.
blueprint = Blueprint("dashboard", __name__, static_folder="static", static_url_path="/dashboard/static")

REFRESH_S = 5
TRADES_SHOWN = 50
SESSION_FLAG = "dashboard_user"
OPEN_ENDPOINTS = {"dashboard.page", "dashboard.login", "dashboard.static"}
# The OpenAPI document lists these routes as open (no bearer token) with their 401: with
# API_TOKEN set they need the session cookie from POST /login instead.

# What /dashboard/performance.json answers, for the OpenAPI document.
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
# What /dashboard/model-performance.json answers: per model, an equity curve per version.
_VERSION = {"anyOf": [{"type": "string"}, {"type": "null"}]}
MODEL_CURVES = {
    "type": "object",
    "required": ["models"],
    "properties": {
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["model_name", "versions"],
                "properties": {
                    "model_name": {"type": "string"},
                    "versions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["model_version", "equity"],
                            "properties": {"model_version": _VERSION, "equity": _POINTS},
                        },
                    },
                },
            },
        }
    },
}


def register(app: Flask) -> None:
    """Mount the dashboard at `/` with a session cookie it can trust."""
    app.secret_key = _secret_key(current_settings(app))
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.session_interface = DashboardSessions()
    app.register_blueprint(blueprint)
    release_panel.install(app)  # the comparisons this process keeps
    # Flask's own view serves the static files: it cannot carry a decorator.
    declare_endpoint(
        app,
        "dashboard.static",
        Documented(
            operation_id="staticFile",
            summary="The dashboard's script, styles and vendored chart library",
            tag="dashboard",
            answers={200: Answer("the file", media={"application/octet-stream": BINARY})},
            errors=(404,),
            path={"filename": {"type": "string"}},
        ),
    )


class DashboardSessions(SecureCookieSessionInterface):
    """The login cookie is the dashboard's: API calls (a bearer token) skip verifying it."""

    def open_session(self, app, request):
        if request.path.startswith(API_PREFIX + "/"):
            return None  # Flask hands the request a null session
        return super().open_session(app, request)


def _secret_key(settings: Settings) -> str:
    if settings.web_secret_key is not None:
        return settings.web_secret_key.get_secret_value()
    if settings.api_token is not None:
        # Every web process derives the same key, and the token itself never signs anything.
        token = settings.api_token.get_secret_value().encode()
        return hmac.new(token, b"tradebot dashboard session", hashlib.sha256).hexdigest()
    return secrets.token_hex(32)  # no token: the dashboard is open and no login is kept


def _token_required() -> bool:
    return current_settings().api_token is not None


def _logged_in() -> bool:
    return not _token_required() or session.get(SESSION_FLAG) is True


# A panel whose source is down (503) or too slow (504) says so and is asked again on the next refresh.
blueprint.register_error_handler(OperationalError, database_unavailable)


@blueprint.errorhandler(redis.RedisError)
def _redis_down(error: redis.RedisError):
    log.warning("dashboard: Redis does not answer: %s", error)
    return error_response(503, "broker_unavailable", "Redis (broker and results) does not answer; retrying")


@blueprint.before_request
def _check_login() -> None:
    if request.endpoint not in OPEN_ENDPOINTS and not _logged_in():
        raise ApiError(401, "unauthorized", "log in at / with the API token first")


@blueprint.get("/")
@documented(
    operation_id="dashboard",
    summary="The dashboard (or, with API_TOKEN set and no session, its login form)",
    tag="dashboard",
    answers={200: Answer("the page", media=HTML)},
)
def page():
    if not _logged_in():
        return render_template("dashboard/login.html", failed=False)
    return render_template(
        "dashboard/page.html",
        refresh_s=REFRESH_S,
        flower_url=flower_url(current_settings()),
        token_required=_token_required(),
    )


@blueprint.post("/login")
@documented(
    operation_id="dashboardLogin",
    summary="Log in to the dashboard with the API token (form field `token`)",
    tag="dashboard",
    answers={
        303: Answer("to the dashboard, with the session cookie", headers=LOCATION),
        401: Answer("not the API token: the form again", media=HTML),
    },
)
def login():
    token = current_settings().api_token
    if token is None:
        return redirect(url_for("dashboard.page"), 303)
    given = request.form.get("token", "").strip().encode()
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        return render_template("dashboard/login.html", failed=True), 401
    session.clear()
    session[SESSION_FLAG] = True
    return redirect(url_for("dashboard.page"), 303)


@blueprint.post("/logout")
@documented(
    operation_id="dashboardLogout",
    summary="End the dashboard's session",
    tag="dashboard",
    answers={303: Answer("to the dashboard", headers=LOCATION)},
)
def logout():
    session.clear()
    return redirect(url_for("dashboard.page"), 303)


@blueprint.get("/dashboard/trades")
@documented(
    operation_id="dashboardTrades",
    summary="The trades panel (HTML), newest first",
    tag="dashboard",
    answers={200: Answer("the panel", media=HTML)},
    errors=(400, 401, 503, 504),
    query=TradeQuery,
)
def trades_panel():
    filters = query(TradeQuery)
    if "limit" not in request.args:
        filters.limit = TRADES_SHOWN
    trades = reads.repository().list(**filters.model_dump())
    return render_template(
        "dashboard/trades.html", trades=[trade_as_dict(trade) for trade in trades], filters=filters
    )


@blueprint.get("/dashboard/models")
@documented(
    operation_id="dashboardModels",
    summary="The models panel (HTML)",
    tag="dashboard",
    answers={200: Answer("the panel", media=HTML)},
    errors=(401, 503),
)
def models_panel():
    return render_template("dashboard/models.html", models=listed_entries())


@blueprint.get("/dashboard/model-performance")
@documented(
    operation_id="dashboardModelPerformance",
    summary="The models performance panel (HTML): per model version, predictions served and "
    "the linked trades' win rate, PnL, drawdown and Sharpe",
    tag="dashboard",
    answers={200: Answer("the panel", media=HTML)},
    errors=(401, 503, 504),
)
def model_performance_panel():
    session = database.session
    repository = reads.repository()
    current = {file.name: file.version for file in current_app.extensions["model_store"].list()}
    models, idle = [], []
    for name in sorted(set(logged_model_names(session)) | set(current)):
        served = served_versions(session, name)
        traded = repository.stats_by_version(name)
        if not served and not traded:
            idle.append(name)  # a file of MODEL_DIR that served nothing yet
            continue
        versions = [
            {
                "model_version": version,
                "predictions": served.get(version, {}).get("predictions", 0),
                "last_served": release_panel.utc_text(served.get(version, {}).get("last_served")),
                **(traded.get(version) or no_trades()),
            }
            for version in sorted(set(served) | set(traded), key=lambda v: _served_order(served, v))
        ]
        models.append({"name": name, "current_version": current.get(name), "versions": versions})
    return render_template("dashboard/model_performance.html", models=models, idle=idle)


def _served_order(served: dict[str, dict[str, Any]], version: str | None) -> tuple:
    """First served first; then the versions only trades name; trades without a version last."""
    first = served.get(version, {}).get("first_served")
    return (version is None, first is None, _epoch(first) if first else 0.0, version or "")


@blueprint.get("/dashboard/model-performance.json")
@documented(
    operation_id="dashboardModelCurves",
    summary="The models performance chart's data: per model, the equity curve of each version",
    tag="dashboard",
    answers={
        200: Answer(
            "per model, per version (oldest curve first) the cumulative realized PnL of its linked "
            "trades after each close, the last 500 (times in Unix seconds)",
            media={JSON: MODEL_CURVES},
        )
    },
    errors=(401, 503, 504),
)
def model_curves():
    repository = reads.repository()
    models = []
    for name in logged_model_names(database.session):
        curves = repository.equity_curves(name)
        if not curves:
            continue
        ordered = sorted(curves.items(), key=lambda item: (item[1][0]["at"], item[0] or ""))
        versions = [
            {
                "model_version": version,
                "equity": [{"at": _epoch(point["at"]), "equity": point["equity"]} for point in points],
            }
            for version, points in ordered
        ]
        models.append({"model_name": name, "versions": versions})
    return jsonify(models=models)


@blueprint.get("/dashboard/releases")
@documented(
    operation_id="dashboardReleases",
    summary="The releases panel (HTML): per model with a release, its champion, its challenger and "
    "mode, the shadow comparison (kept 30 s per process) and the last five changes",
    tag="dashboard",
    answers={200: Answer("the panel", media=HTML)},
    errors=(401, 503, 504),
)
def releases_panel():
    return render_template("dashboard/releases.html", **release_panel.panel(database.session))


@blueprint.get("/dashboard/health")
@documented(
    operation_id="dashboardHealth",
    summary="The health panel (HTML): readiness checks, messages waiting per queue and the spool backlog",
    tag="dashboard",
    answers={200: Answer("the panel", media=HTML)},
    errors=(401,),
)
def health_panel():
    return render_template(
        "dashboard/health.html", status=stack_status(), flower_url=flower_url(current_settings())
    )


@blueprint.get("/dashboard/performance.json")
@documented(
    operation_id="dashboardPerformance",
    summary="The charts' data: totals, PnL per bucket (default `1 day`) and the equity curve",
    tag="dashboard",
    answers={200: Answer("totals and two series (times in Unix seconds)", media={JSON: PERFORMANCE})},
    errors=(400, 401, 503, 504),
    query=PerformanceQuery,
)
def performance():
    """The charts' data: the equity curve (cumulative realized PnL) and PnL per day."""
    filters = query(PerformanceQuery)
    if filters.bucket is None:
        filters.bucket = "1 day"
    repository = reads.repository()
    stats = repository.stats(**filters.model_dump())
    per_bucket = stats.pop("buckets")
    equity = repository.equity_curve(symbol=filters.symbol, since=filters.since, until=filters.until)
    return jsonify(
        totals=stats,
        bucket=filters.bucket,
        per_bucket=[{"at": _epoch(row["start"]), "pnl": row["total_pnl"]} for row in per_bucket],
        equity=[{"at": _epoch(point["at"]), "equity": point["equity"]} for point in equity],
    )


def _epoch(moment: datetime) -> float:
    return moment.astimezone(UTC).timestamp()
