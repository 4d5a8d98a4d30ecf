"""The worker's Celery app, bound to a minimal Flask app the way Flask's Celery pattern does.

Tasks run inside a Flask app context (for Flask-SQLAlchemy). The Flask app here is built
from `config` and `db` only, never from the web factory, so a worker never loads routes.
"""

from celery import Celery, Task
from flask import Flask

import tasks.observability.logs  # noqa: F401  (connects the logging signals of workers and beat)
from config import get_settings
from db.extension import database, flask_config

TASK_MODULES = ("tasks.worker.trades", "tasks.worker.ml")


class FlaskTask(Task):
    """A task whose body runs inside the Flask app context."""

    def __call__(self, *args, **kwargs):
        with self.app.flask_app.app_context():
            return super().__call__(*args, **kwargs)


def create_worker_flask_app() -> Flask:
    app = Flask("tasks")
    settings = get_settings()
    app.config.from_mapping(flask_config(settings.database_url, settings.database_statement_timeout_s))
    database.init_app(app)
    return app


def create_celery_app(flask_app: Flask | None = None) -> Celery:
    flask_app = flask_app or create_worker_flask_app()
    celery_app = Celery("tasks", task_cls=FlaskTask, include=TASK_MODULES)
    celery_app.config_from_object("celeryconfig")
    celery_app.flask_app = flask_app
    flask_app.extensions["celery"] = celery_app
    return celery_app
