"""`flask --app web preflight` and `flask --app web urls`: the first and last words of `make run`.

The preflight asks PostgreSQL and Redis, with short timeouts, whether they answer, and
when one does not it says which and how to start it, instead of a traceback later.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from config import Settings, get_settings

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


REDIS_HINT = (
    "start it with `docker compose up -d redis` or `sudo apt-get install redis-server` "
    "(then: sudo service redis-server start), or point CELERY_BROKER_URL at a running Redis"
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


def redis_problem(broker_url: str) -> str | None:
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
    try:
        client.ping()
    except redis.RedisError as exc:
        where = make_url(broker_url).render_as_string(hide_password=True)
        return f"Redis does not answer at {where}: {exc}"
    finally:
        client.close()
    return None


@click.command("preflight")
def preflight() -> None:
    """Check that PostgreSQL (DATABASE_URL) and Redis (CELERY_BROKER_URL) answer."""
    settings = get_settings()
    problems = []
    if (problem := postgres_problem(settings.database_url)) is not None:
        problems.append(f"{problem}\n  {postgres_hint()}")
    if (problem := redis_problem(settings.celery_broker_url)) is not None:
        problems.append(f"{problem}\n  {REDIS_HINT}")
    for problem in problems:
        click.secho(problem, err=True, fg="red")
    if problems:
        raise SystemExit(1)
    click.echo("PostgreSQL and Redis answer")


def _visit(host: str) -> str:
    """Where a browser on this machine reaches a server bound to `host`."""
    try:
        every_interface = not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:  # a host name
        every_interface = False
    return "127.0.0.1" if every_interface else host


def service_urls(settings: Settings) -> dict[str, str]:
    host, _, port = settings.web_bind.rpartition(":")
    return {
        "web": f"http://{_visit(host)}:{port}",
        "flower": f"http://{_visit(settings.flower_address)}:{settings.flower_port}",
    }


@click.command("urls")
def urls() -> None:
    """Print where the web server and Flower listen."""
    found = service_urls(get_settings())
    click.echo(f"web:    {found['web']}  (health: {found['web']}/healthz, {found['web']}/readyz)")
    click.echo(f"flower: {found['flower']}")
    click.echo("Ctrl-C stops every process.")
