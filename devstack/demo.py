"""`make demo`: the demo bot (`demo.bot`) against the stack `make run` started.

    python -m devstack.demo [demo.bot options]

`make run` may have started its private Redis (when no broker was configured and none
answered at the default address); a second terminal does not know that, so this finds
the broker the same way and hands it to the bot, with the web server's URL. Before the bot
starts, a retrained demo model becomes the shadow challenger of xgboost_model.json
(`devstack.demo_release`), and the bot prints the comparison every 30 s.
"""

from __future__ import annotations

import os
import sys

import click

from config import get_settings

# What `make demo` does is its first line, within a second: the broker's checks and the
# shadow set-up import Redis, kombu, Celery and the bot (most of a second more), so they
# are imported after it, where they are used.


def broker_environment() -> dict[str, str]:
    """The broker variables that reach `make run`'s broker; {} when the settings already do."""
    from devstack.embedded import REDIS_PORT
    from tasks.contract import REDIS_HINT, is_redis_url, redis_problem
    from tasks.web_clients import broker_problem

    private_redis = f"redis://127.0.0.1:{REDIS_PORT}"
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
        return {"CELERY_RESULT_BACKEND": f"{private_redis}/1"}
    problem = redis_problem(settings.celery_broker_url)
    if problem is None:
        return {}
    if not configured and redis_problem(f"{private_redis}/0") is None:
        return {"CELERY_BROKER_URL": f"{private_redis}/0", "CELERY_RESULT_BACKEND": f"{private_redis}/1"}
    click.secho(f"{problem}\n  Start the stack with `make run` first, or {REDIS_HINT}", err=True, fg="red")
    raise SystemExit(1)


def _option(args: list[str], name: str) -> str | None:
    """The value the bot will read for option `name` in `args` (the last one given)."""
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(name + "="):
            value = arg.partition("=")[2]
    return value


def main() -> None:
    args = sys.argv[1:]
    settings = get_settings()
    # The bot's own options come last, so an explicit --url wins; the set-up reads the same.
    web = _option(args, "--url") or settings.service_urls()["web"]
    click.echo(f"make demo: a demo bot against the stack at {web}")
    from devstack.demo_release import COMPARE_EVERY_S, MODEL, set_up_shadow

    env = {**os.environ, **broker_environment()}
    if not env.get("API_TOKEN") and settings.api_token is not None:
        env["API_TOKEN"] = settings.api_token.get_secret_value()  # from .env, as the web reads it
    bot = [sys.executable, "-m", "demo.bot", "--url", web]
    models = (_option(args, "--models") or MODEL).split(",")
    if "--help" not in args and MODEL in (name.strip() for name in models):
        token = _option(args, "--token") or env.get("API_TOKEN") or None
        if set_up_shadow(web, token, env):
            bot += ["--compare-every", str(COMPARE_EVERY_S), "--compare-model", MODEL]
    os.execve(sys.executable, [*bot, *args], env)  # noqa: S606 - our own interpreter, no shell


if __name__ == "__main__":
    main()
