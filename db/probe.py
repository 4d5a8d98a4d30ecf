"""Whether PostgreSQL answers, asked with a short timeout, and how to start it if not
(`flask --app web preflight` and `make run` ask before anything else touches it)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

TIMEOUT_S = 2


def postgres_hint() -> str:
    clusters = Path("/etc/postgresql")  # Debian's layout: one folder per installed version
    versions = sorted(p.name for p in clusters.glob("*")) if clusters.is_dir() else []
    local = (
        f"sudo pg_ctlcluster {versions[-1]} main start"
        if versions
        else "sudo apt-get install postgresql (then: sudo pg_ctlcluster <version> main start)"
    )
    return (
        f"start it with `docker compose up -d db` (the compose file's TimescaleDB) or `{local}`, "
        "or point DATABASE_URL at a running server"
    )


def postgres_problem(database_url: str) -> str | None:
    # The server's maintenance database: the project's own may not be created yet.
    url = make_url(database_url).set(database="postgres")
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": TIMEOUT_S})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"PostgreSQL does not answer at {url.render_as_string(hide_password=True)}: {reason}"
    finally:
        engine.dispose()
    return None
