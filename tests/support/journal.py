"""Sending to the journal by name, and reading it back (rows, dead letters), for assertions."""

import json
from pathlib import Path

from celery import Celery
from sqlalchemy import text
from sqlalchemy.engine import Engine


def sender(env: dict[str, str]) -> Celery:
    """A Celery app that knows nothing of the project: it sends tasks by name, in JSON."""
    app = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"], set_as_current=False)
    app.conf.task_serializer = "json"
    return app


def dead_letters(env: dict[str, str]) -> list[dict]:
    """The dead letters the workers of `env` wrote."""
    path = Path(env["SPOOL_DIR"]) / "dead-letter" / "active.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def journal_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT count(*) AS rows, count(DISTINCT trade_id) AS distinct_ids,"
                " count(*) FILTER (WHERE closed) AS closed FROM trade_history"
            )
        ).one()
    return {"rows": row.rows, "distinct_ids": row.distinct_ids, "closed": row.closed}


def rows_reach(engine: Engine, rows: int, closed: int | None = None):
    """A condition for wait_for: the journal holds `rows` rows (and `closed` closed ones)."""

    def reached() -> bool:
        counts = journal_counts(engine)
        return counts["rows"] >= rows and (closed is None or counts["closed"] >= closed)

    return reached
