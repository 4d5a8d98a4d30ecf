"""`flask --app web preflight` and `flask --app web urls`: the first and last words of `make run`.

The preflight asks PostgreSQL and the broker (Redis or RabbitMQ, then also the results'
Redis), with short timeouts, whether they answer, and when one does not it says which and
how to start it, instead of a traceback later.
"""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from db import postgres_hint, postgres_problem
from tasks.contract import REDIS_HINT, is_redis_url, redis_problem
from tasks.web_clients import broker_problem
from web.settings import current_settings


@click.command("preflight")
@with_appcontext  # reads the app's settings
def preflight() -> None:
    """Check that PostgreSQL (DATABASE_URL) and the broker (CELERY_BROKER_URL: Redis or
    RabbitMQ; with RabbitMQ also the results' Redis, CELERY_RESULT_BACKEND) answer."""
    settings = current_settings()
    problems = []
    if (problem := postgres_problem(settings.database_url)) is not None:
        problems.append(f"{problem}\n  {postgres_hint()}")
    if (problem := broker_problem(settings.celery_broker_url)) is not None:
        problems.append(problem)
    # On RabbitMQ the results (and the prediction lane) stay in Redis: that must answer too.
    on_redis = is_redis_url(settings.celery_broker_url)
    if not on_redis and (problem := redis_problem(settings.celery_result_backend)) is not None:
        problems.append(f"{problem}\n  {REDIS_HINT}")
    for problem in problems:
        click.secho(problem, err=True, fg="red")
    if problems:
        raise SystemExit(1)
    click.echo("PostgreSQL and Redis answer" if on_redis else "PostgreSQL, RabbitMQ and Redis answer")


@click.command("urls")
@with_appcontext
def urls() -> None:
    """Print where the web server and Flower listen."""
    found = current_settings().service_urls()
    click.echo(f"web:    {found['web']}  (health: {found['web']}/healthz, {found['web']}/readyz)")
    click.echo(f"flower: {found['flower']}")
    click.echo("Ctrl-C stops every process.")
