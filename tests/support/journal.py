"""Reading the journal back, for assertions."""

from sqlalchemy import text
from sqlalchemy.engine import Engine


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
