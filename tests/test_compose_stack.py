"""Every application service of docker-compose.yml, started here with its own command.

There is no Docker engine on the test machine, so the proof that the stack works is to
run each service's `command`, as `docker-compose config` renders it, as a local process
from the repository root, with the service's `environment` but the test run's database,
Redis databases, model and spool folders, and free ports. Each must become healthy:
migrate exits 0, the web answers /readyz, the workers a ping, Flower its API with the
credentials (and 401 without), and beat schedules trades.replay_spool, which Flower
sees run on the trades worker through the task events.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from celery import Celery

from tests.support.compose import ROOT, fill_template, rendered_services
from tests.support.processes import Service, free_port, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Where the test run's resources replace the stack's (db, redis, volumes). The local
# PostgreSQL has no TimescaleDB, so TIMESCALEDB (require in production) follows the run too.
TEST_OWNED = [
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "MODEL_DIR",
    "SPOOL_DIR",
    "TIMESCALEDB",
    "SPOOL_REPLAY_INTERVAL_S",
    "METRICS_DIR",
]


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def environment_of(service: dict, base: dict[str, str]) -> dict[str, str]:
    env = {**base, **{name: str(value) for name, value in service.get("environment", {}).items()}}
    env.update({name: base[name] for name in TEST_OWNED})
    if "PROMETHEUS_MULTIPROC_DIR" in env:  # the service's subdirectory, under the run's METRICS_DIR
        env["PROMETHEUS_MULTIPROC_DIR"] = str(
            Path(base["METRICS_DIR"]) / Path(env["PROMETHEUS_MULTIPROC_DIR"]).name
        )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return env


def request(url: str, credentials: str | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    headers = dict(headers or {})
    if credentials is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


@pytest.fixture
def stack(tmp_path, env, database_url, clean, zoo):
    env["METRICS_DIR"] = str(tmp_path / "metrics")
    services = rendered_services(fill_template(tmp_path / "production.env"))
    app_services = {name: service for name, service in services.items() if "build" in service}
    started: list[Service] = []

    def start(name: str, **overrides: str) -> Service:
        service_env = {**environment_of(app_services[name], env), **overrides}
        process = Service(command_of(app_services[name]), service_env, ROOT, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield app_services, start
    for process in reversed(started):
        process.stop()


def test_every_service_command_becomes_healthy(stack, env):
    services, start = stack
    assert sorted(services) == ["beat", "flower", "migrate", "web", "worker-predict", "worker-trades"]
    host = socket.gethostname()

    migrate = start("migrate")
    assert migrate.process.wait(120) == 0, migrate.log()

    web_port, flower_port = free_port(), free_port()
    start("web", WEB_BIND=f"127.0.0.1:{web_port}")
    start("worker-predict")
    start("worker-trades")
    beat = start("beat")
    flower = start("flower", FLOWER_ADDRESS="127.0.0.1", FLOWER_PORT=str(flower_port))

    control = Celery(broker=env["CELERY_BROKER_URL"], set_as_current=False)
    try:
        for worker in (f"predict@{host}", f"trades@{host}"):
            wait_for(
                lambda worker=worker: control.control.ping(destination=[worker], timeout=0.5),
                120,
                f"{worker} to answer a ping",
            )
    finally:
        control.close()

    web = f"http://127.0.0.1:{web_port}"
    body = wait_for(lambda: _ready(web), 120, "the web to answer /readyz with 200")
    checks = json.loads(body)["checks"]
    assert checks["workers"]["queues"] == {"predict": [f"predict@{host}"], "trades": [f"trades@{host}"]}
    # The compose environment's API_TOKEN guards the API; health stays open.
    assert request(f"{web}/api/v1/trades")[0] == 401

    credentials = services["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    flower_url = f"http://127.0.0.1:{flower_port}"
    wait_for(lambda: request(f"{flower_url}/healthcheck")[0] == 200, 60, "Flower to answer")
    assert request(f"{flower_url}/api/workers")[0] == 401
    assert request(f"{flower_url}/api/workers", "admin:wrong")[0] == 401
    assert request(flower_url + "/")[0] == 401

    def flower_workers() -> set[str]:
        status, body = request(f"{flower_url}/api/workers?refresh=1", credentials)
        return set(json.loads(body)) if status == 200 else set()

    workers = {f"predict@{host}", f"trades@{host}"}
    wait_for(lambda: workers <= flower_workers(), 60, "Flower to list the workers")

    # Beat schedules trades.replay_spool; the trades worker's task events show it in Flower.
    def replays_seen() -> list[dict]:
        status, body = request(f"{flower_url}/api/tasks?taskname=trades.replay_spool", credentials)
        tasks = json.loads(body).values() if status == 200 else []
        return [task for task in tasks if task.get("state") == "SUCCESS"]

    replay = wait_for(replays_seen, 60, "Flower to see beat's trades.replay_spool succeed")[0]
    assert replay["worker"] == f"trades@{host}"
    assert "beat: Starting..." in beat.log()
    assert flower.alive()

    # Each container writes its metric files to a directory of its own ({hostname} made
    # real); the web's /metrics reads them all.
    directories = {path.name for path in Path(env["METRICS_DIR"]).iterdir()}
    assert {f"{name}-{host}" for name in ("web", "worker-predict", "worker-trades")} <= directories
    status, body = request(f"{web}/metrics")
    assert status == 200
    assert b"celery_broker_up 1.0" in body


def _ready(url: str) -> bytes | None:
    status, body = request(f"{url}/readyz")
    return body if status == 200 else None


def test_flower_refuses_to_listen_beyond_loopback_without_credentials(env, tmp_path):
    # An empty address is every interface, Flower's own default.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "celery"), "-A", "tasks", "flower"],
        env={**env, "FLOWER_ADDRESS": "", "FLOWER_PORT": str(free_port()), "FLOWER_BASIC_AUTH": ""},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "without FLOWER_BASIC_AUTH" in result.stderr
    assert "Traceback" not in result.stderr
