"""The Flask application: `flask --app web ...` finds `create_app` here."""

import functools
import gc
from pathlib import Path

from flask import Flask
from flask_migrate import Migrate

from config import Settings, get_settings
from db import database, flask_config
from models import ModelArchive, ModelStore
from tasks.client import TradeJournal
from tasks.observability import timeline
from tasks.web_clients import PredictionClient
from web import (
    cli,
    dashboard,
    health,
    lineage,
    metrics,
    ml,
    openapi,
    preflight,
    queues_cli,
    releases,
    trades,
    v2,
)
from web.auth import require_token_for_api
from web.body_limit import BoundedBodies
from web.errors import register_error_handlers
from web.json_provider import OrjsonProvider
from web.request_log import log_requests
from web.settings import keep_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class WebApp(Flask):
    """Flask, with each function's `ensure_sync` answer kept: Flask asks `inspect` whether
    every hook and view is a coroutine on every request (nine times a prediction), and the
    app's functions never change kind."""

    @functools.cache  # noqa: B019 - one app per process, a bounded set of registered functions
    def ensure_sync(self, func):
        return super().ensure_sync(func)


def create_app(settings: Settings | None = None) -> Flask:
    """The web app, on `settings` (the environment's, `get_settings()`, when None)."""
    if settings is None:
        settings = get_settings()
    app = WebApp(__name__, static_folder=None)  # no static files: no /static route
    keep_settings(app, settings)  # web code reads these (`web.settings`), never get_settings()
    app.config.from_mapping(
        flask_config(settings.database_url, settings.web_statement_timeout_s),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
    )
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    # MAX_CONTENT_LENGTH holds for chunked bodies too (413), not only for a Content-Length.
    app.wsgi_app = BoundedBodies(app, app.wsgi_app)
    if settings.predict_timeline_dir is not None:  # a diagnostic (bench/timeline.py)
        timeline.start(settings.predict_timeline_dir, "web")
        app.wsgi_app = timeline.around(app.wsgi_app)
    database.init_app(app)
    Migrate(app, database, directory=str(MIGRATIONS))
    app.extensions["trade_journal"] = TradeJournal(settings.celery_broker_url, settings.spool_dir)
    app.extensions["model_store"] = ModelStore(settings.model_dir, allow_pickle=settings.allow_pickle_models)
    app.extensions["model_archive"] = ModelArchive(settings.model_archive, keep=settings.model_versions_kept)
    app.extensions["predictions"] = PredictionClient(
        settings.celery_broker_url,
        settings.celery_result_backend,
        longest_wait_s=settings.predict_timeout_s,
        expires_s=settings.predict_expires_s,
    )
    register_error_handlers(app)
    # Order matters: the request id is bound first, so every later hook's lines carry it.
    log_requests(app)
    metrics.measure_requests(app)
    require_token_for_api(app, open_paths=(openapi.DOCUMENT_URL, openapi.DOCS_URL))
    app.register_blueprint(metrics.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(trades.blueprint, url_prefix="/api/v1/trades")
    app.register_blueprint(ml.blueprint, url_prefix="/api/v1/ml")
    app.register_blueprint(lineage.blueprint, url_prefix="/api/v1/ml")
    app.register_blueprint(releases.blueprint, url_prefix="/api/v1/ml")
    v2.register(app)  # the Open Inference Protocol on the same port, token and workers
    openapi.register(app)
    dashboard.register(app)
    app.cli.add_command(cli.trades_cli)
    app.cli.add_command(cli.create_database)
    app.cli.add_command(cli.models_cli)
    app.cli.add_command(cli.stats_cli)
    app.cli.add_command(cli.storage_cli)
    app.cli.add_command(preflight.preflight)
    app.cli.add_command(preflight.urls)
    app.cli.add_command(queues_cli.queues_cli)
    # What is built so far lives as long as the process: the collector's passes skip it
    # (about a tenth of a request's CPU otherwise goes to rescanning it).
    gc.freeze()
    return app
