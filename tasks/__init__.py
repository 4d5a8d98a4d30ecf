"""Celery: the worker's app and tasks, and the clients that send to them.

Each package serves one process, or says it is shared:

- `tasks.client`: the bot's (and the web's trade routes') TradeJournal;
- `tasks.web_clients`: the web's predictions, job look-ups and readiness probes;
- `tasks.worker`: the worker and beat (the tasks, the journal's write path, the lane);
- `tasks.contract`: shared; what crosses a process boundary (names, codecs, clients);
- `tasks.observability`: shared; logs, metrics, request ids;
- `tasks.internals`: shared; the only code that touches libraries' private internals.

`celery -A tasks worker` finds the app as `tasks.app`. It is built on first access, so
that a bot importing `tasks.client` does not build a worker's Flask app.
"""

from typing import Any

_celery_app = None


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        global _celery_app
        if _celery_app is None:
            from tasks.worker.app import create_celery_app

            _celery_app = create_celery_app()
        return _celery_app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
