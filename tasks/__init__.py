"""Celery tasks, the worker's Celery app and the bot-side client.

`celery -A tasks worker` finds the app as `tasks.app`. It is built on first access, so
that a bot importing `tasks.client` does not build a worker's Flask app.
"""

from typing import Any

_celery_app = None


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        global _celery_app
        if _celery_app is None:
            from tasks.factory import create_celery_app

            _celery_app = create_celery_app()
        return _celery_app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
