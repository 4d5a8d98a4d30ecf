"""The worker's Celery app, bound to a minimal Flask app the way Flask's Celery pattern does.

Tasks run inside a Flask app context (for Flask-SQLAlchemy). The Flask app here is built
from `config` and `db` only, never from the web factory, so a worker never loads routes.
Both apps keep the settings they were built with; worker code reads them through
`worker_settings()`, never `config.get_settings()`.
"""

from __future__ import annotations

from celery import Celery, Task
from flask import Flask

import tasks.observability.logs  # noqa: F401  (connects the logging signals of workers and beat)
from celeryconfig import celery_config
from config import Settings, get_settings
from db import database, flask_config

TASK_MODULES = ("tasks.worker.trades", "tasks.worker.ml", "tasks.worker.broker_dead_letters")
SETTINGS_KEY = "settings"


class FlaskTask(Task):
    """A task whose body runs inside the Flask app context."""

    def __call__(self, *args, **kwargs):
        with self.app.flask_app.app_context():
            return super().__call__(*args, **kwargs)


def create_worker_flask_app(settings: Settings | None = None) -> Flask:
    if settings is None:
        settings = get_settings()
    app = Flask("tasks")
    app.extensions[SETTINGS_KEY] = settings
    app.config.from_mapping(flask_config(settings.database_url, settings.database_statement_timeout_s))
    database.init_app(app)
    return app


def create_celery_app(flask_app: Flask | None = None, settings: Settings | None = None) -> Celery:
    """The worker's app on `settings`: by default `flask_app`'s, else `get_settings()`."""
    if flask_app is None:
        flask_app = create_worker_flask_app(settings)
    if settings is None:
        settings = flask_app.extensions.get(SETTINGS_KEY) or get_settings()
    flask_app.extensions[SETTINGS_KEY] = settings  # one set of settings for both apps
    celery_app = Celery("tasks", task_cls=FlaskTask, include=TASK_MODULES)
    celery_app.config_from_object(celery_config(settings))
    celery_app.flask_app = flask_app
    flask_app.extensions["celery"] = celery_app
    return celery_app


def worker_settings(celery_app: Celery | None = None) -> Settings:
    """The settings `celery_app` was built with; by default `tasks.app`'s, the app that
    `celery -A tasks` runs and the task modules register with."""
    if celery_app is None:
        from tasks import app as celery_app  # built on first access (tasks/__init__.py)
    return celery_app.flask_app.extensions[SETTINGS_KEY]
