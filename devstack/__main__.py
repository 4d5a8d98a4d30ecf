"""`make run`: check PostgreSQL and Redis (or start private ones), prepare, run the Procfile.

    python -m devstack [--data-dir data]

A variable the user set (DATABASE_URL, CELERY_BROKER_URL, CELERY_RESULT_BACKEND, in the
environment or `.env`) must answer: if it does not, this says which and how to start it.
With a variable unset and nothing answering at its default, a private server starts
under the data directory instead (`devstack.embedded`), and stops when this does.
Then: create the database, migrate, bring the kept statistics up to date, train the demo
models if MODEL_DIR is empty, print the URLs and run every process of the Procfile under
honcho until Ctrl-C, SIGTERM or SIGHUP; one line says when `/readyz` answers 200
(`devstack.ready`). The web's access lines go to <data dir>/logs/access.log unless
ACCESS_LOG says otherwise. A stop is orderly (`devstack.stopping`): honcho stops the
processes, then the private servers stop, each stop said in a line, and the exit status is
0, so make adds no "Error 130/143".
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
from honcho.environ import parse_procfile
from sqlalchemy.engine import make_url

from config import Settings, get_settings
from db import postgres_hint, postgres_problem
from devstack.embedded import REDIS_PORT, EmbeddedPostgres, EmbeddedRedis
from devstack.ready import ReadyWatch
from devstack.stopping import Stop, Stopped
from tasks.contract import REDIS_HINT, is_redis_url, redis_problem
from tasks.web_clients import broker_problem

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
REDIS_VARIABLES = ("celery_broker_url", "celery_result_backend")
PREPARE = (
    ["create-database"],
    ["db", "upgrade"],
    ["stats", "refresh"],  # builds the kept statistics where a journal predates them
    ["models", "train-demo", "--if-empty"],
    ["urls"],
)


def _configured(settings: Settings, *fields: str) -> bool:
    # model_fields_set holds what came from the environment or .env, not the defaults.
    return any(field in settings.model_fields_set for field in fields)


def _fail(problem: str, hint: str) -> None:
    click.secho(f"{problem}\n  {hint}", err=True, fg="red")
    raise SystemExit(1)


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=ROOT / "data", show_default=True)
@click.option("--default-database-url", hidden=True, help="tests: where the unset default points")
@click.option("--default-broker-url", hidden=True, help="tests: where the unset default points")
@click.option("--redis-port", type=int, default=REDIS_PORT, show_default=True, help="of the private Redis")
def run(
    data_dir: Path, default_database_url: str | None, default_broker_url: str | None, redis_port: int
) -> None:
    """Start the whole stack for development; Ctrl-C stops all of it."""
    began = time.monotonic()
    stop = Stop()
    stop.install()
    settings = get_settings()
    env = dict(os.environ)
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    status = 1
    try:
        database_url = default_database_url or settings.database_url
        if (problem := postgres_problem(database_url)) is not None:
            if _configured(settings, "database_url"):
                _fail(problem, postgres_hint())
            postgres = EmbeddedPostgres(data_dir)
            started.append(postgres)
            env["DATABASE_URL"] = postgres.start(make_url(settings.database_url).database or "tradebot")
            click.secho(
                f"No PostgreSQL answers at the default address: started a private PostgreSQL 18 in "
                f"{postgres.pgdata} (plain tables, no TimescaleDB). Set DATABASE_URL to use your own.",
                fg="yellow",
            )
        broker_url = default_broker_url or settings.celery_broker_url
        if is_redis_url(broker_url):
            env.update(_redis_broker(settings, broker_url, data_dir, redis_port, started))
        else:
            env.update(_amqp_broker(settings, broker_url, data_dir, redis_port, started))
        if not _configured(settings, "access_log"):
            # One line per request through honcho's pipe would throttle the web under load.
            env["ACCESS_LOG"] = str(data_dir / "logs" / "access.log")
        for step in PREPARE:
            if _prepare(step, env):
                raise SystemExit(1)
        if env.get("ACCESS_LOG") not in (None, "", "-"):
            click.echo(f"The web's access lines: tail -f {env['ACCESS_LOG']}")
        _explain_granian_warning(settings)
        status = _run_procfile(env, data_dir, stop, ReadyWatch(settings.service_urls(), began, _say))
    except Stopped:
        _say(f"make run: stopped before the processes started (on {stop.name})")
        status = 0
    finally:
        stop.settle()
        for server in reversed(started):
            if (line := server.stop()) is not None:
                _say(f"make run: {line}")
    raise SystemExit(status)


def _say(line: str) -> None:
    # OSError: the terminal is gone (SIGHUP); the stop goes on, with no one to tell.
    with contextlib.suppress(OSError):
        click.secho(line, fg="green")


def _prepare(step: list[str], env: dict[str, str]) -> int:
    """One `flask --app web` step; a stop ends it too (Ctrl-C reaches it from the terminal
    as well; SIGTERM comes to this process only)."""
    child = subprocess.Popen([str(BIN / "flask"), "--app", "web", *step], env=env, cwd=ROOT)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()


def _explain_granian_warning(settings: Settings) -> None:
    """granian warns at start when a worker's threads outnumber twice the cores plus one
    (its `serve()`): true of an app that computes, not of this one, whose threads mostly
    wait for a predict worker. Said here, before the warning, so that it reads as meant."""
    cores = multiprocessing.cpu_count()
    if settings.web_threads > 2 * cores + 1:
        click.echo(
            f"The web's granian will warn that {settings.web_threads} threads per worker are many for "
            f"{cores} CPU cores: they are meant, a synchronous prediction waits in its thread "
            '(WEB_THREADS; README, "Web server").'
        )


def _redis_broker(
    settings, broker_url: str, data_dir: Path, redis_port: int, started: list
) -> dict[str, str]:
    """Nothing when the Redis broker answers; else a private Redis for broker and results,
    unless the operator configured one (then: how to start it)."""
    if (problem := redis_problem(broker_url)) is None:
        return {}
    if _configured(settings, *REDIS_VARIABLES):
        _fail(problem, REDIS_HINT)
    url = _private_redis(data_dir, redis_port, started)
    click.secho(
        f"No Redis answers at the default address: started a private Redis on {url} "
        f"(data in {data_dir / 'redis'}). Set CELERY_BROKER_URL to use your own.",
        fg="yellow",
    )
    return {"CELERY_BROKER_URL": f"{url}/0", "CELERY_RESULT_BACKEND": f"{url}/1"}


def _amqp_broker(settings, broker_url: str, data_dir: Path, redis_port: int, started: list) -> dict[str, str]:
    """A configured RabbitMQ must answer (it is never started here); the results (and the
    prediction lane) still need Redis: a private one when none is configured."""
    if (problem := broker_problem(broker_url)) is not None:
        click.secho(problem, err=True, fg="red")
        raise SystemExit(1)
    if (problem := redis_problem(settings.celery_result_backend)) is None:
        return {}
    if _configured(settings, "celery_result_backend"):
        _fail(problem, REDIS_HINT)
    url = _private_redis(data_dir, redis_port, started)
    click.secho(
        f"No Redis answers at the default result backend: started a private Redis on {url} "
        f"(data in {data_dir / 'redis'}). Set CELERY_RESULT_BACKEND to use your own.",
        fg="yellow",
    )
    return {"CELERY_RESULT_BACKEND": f"{url}/1"}


def _private_redis(data_dir: Path, redis_port: int, started: list) -> str:
    cache = EmbeddedRedis(data_dir, redis_port)
    started.append(cache)
    return cache.start()


def _run_procfile(env: dict[str, str], data_dir: Path, stop: Stop, ready: ReadyWatch) -> int:
    """honcho over the Procfile until a stop (exit status 0) or until a process ends by
    itself (honcho's status: that process's, or 1)."""
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # Every process writes its metrics under METRICS_DIR (Procfile); the whole stack
    # starts now, so files of earlier processes go.
    metrics_dir = get_settings().metrics_dir or data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    env["METRICS_DIR"] = str(metrics_dir)
    procfile = ROOT / "Procfile"
    honcho = stop.start_honcho([str(BIN / "honcho"), "start", "-f", str(procfile)], env=env, cwd=ROOT)
    ready.start()
    status = honcho.wait()  # a stop signal is passed on to honcho, which then ends
    ready.stop()
    names = _listed(parse_procfile(procfile.read_text()).processes)
    if stop.signal is not None:
        _say(f"make run: stopped {names} (on {stop.name})")
        return 0
    click.secho(
        f"make run: a process ended by itself (its last lines above say why), so honcho stopped {names}",
        fg="red",
    )
    return status or 1


def _listed(names) -> str:
    *most, last = names
    return f"{', '.join(most)} and {last}" if most else last


if __name__ == "__main__":
    run()
