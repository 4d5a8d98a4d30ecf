"""What runs in the worker and beat processes: the Celery app bound to Flask, the task
modules (`trades`, `ml`), the journal's write path (`journal`, `batching`, `consumer`,
`dead_letters`, `held`), and the predict side's lane server, model watcher and outcomes.

`celery -A tasks worker` builds the app from here (`tasks.app`); importing this package
alone builds nothing.
"""

from tasks.worker.app import FlaskTask, create_celery_app, create_worker_flask_app

__all__ = ["FlaskTask", "create_celery_app", "create_worker_flask_app"]
