"""`make demo`: the demo bot (`demo.bot`) against the stack `make run` started.

    python -m devstack.demo [demo.bot options]

`make run` may have started its private Redis (when no broker was configured and none
answered at the default address); a second terminal does not know that, so this finds
the broker the same way and hands it to the bot, with the web server's URL.
"""

from __future__ import annotations

import os
import sys

import click

from config import get_settings
from devstack.embedded import REDIS_PORT
from tasks.contract import REDIS_HINT, is_redis_url, redis_problem
from tasks.web_clients import broker_problem

PRIVATE_REDIS = f"redis://127.0.0.1:{REDIS_PORT}"


def broker_environment() -> dict[str, str]:
    """The broker variables that reach `make run`'s broker; {} when the settings already do."""
    settings = get_settings()
    configured = "celery_broker_url" in settings.model_fields_set
    if not is_redis_url(settings.celery_broker_url):
        # RabbitMQ is never started privately; `make run` may have started the results' Redis.
        if (problem := broker_problem(settings.celery_broker_url)) is not None:
            click.secho(f"{problem}\n  Start the stack with `make run` first", err=True, fg="red")
            raise SystemExit(1)
        results_configured = "celery_result_backend" in settings.model_fields_set
        if redis_problem(settings.celery_result_backend) is None or results_configured:
            return {}
        return {"CELERY_RESULT_BACKEND": f"{PRIVATE_REDIS}/1"}
    problem = redis_problem(settings.celery_broker_url)
    if problem is None:
        return {}
    if not configured and redis_problem(f"{PRIVATE_REDIS}/0") is None:
        return {"CELERY_BROKER_URL": f"{PRIVATE_REDIS}/0", "CELERY_RESULT_BACKEND": f"{PRIVATE_REDIS}/1"}
    click.secho(f"{problem}\n  Start the stack with `make run` first, or {REDIS_HINT}", err=True, fg="red")
    raise SystemExit(1)


def main() -> None:
    env = {**os.environ, **broker_environment()}
    web = get_settings().service_urls()["web"]
    # The bot's own options come last, so an explicit --url wins.
    bot = [sys.executable, "-m", "demo.bot", "--url", web, *sys.argv[1:]]
    os.execve(sys.executable, bot, env)  # noqa: S606 - our own interpreter, no shell


if __name__ == "__main__":
    main()
