"""docker-compose.rabbitmq.yml over docker-compose.yml: RabbitMQ as the broker.

`docker-compose config` merges and validates the two files (no engine needed), and, as
tests/test_compose_stack.py does for the base file, the merged services' commands are run
here as local processes, against the machine's RabbitMQ (a vhost of the test's own) and
Redis for the results: the rabbitmq service's health check, and the stack becoming ready.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.compose import COMPOSE_FILE, PASSWORD, ROOT, fill_template
from tests.support.processes import Service, free_port, wait_for
from tests.test_compose_stack import command_of, environment_of, request

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OVERRIDE = ROOT / "docker-compose.rabbitmq.yml"
BROKER_USERS = ["migrate", "web", "worker-predict", "worker-trades", "beat", "flower"]


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(ROOT))}
    command = [
        binary,
        "-f",
        str(COMPOSE_FILE),
        "-f",
        str(OVERRIDE),
        "--env-file",
        str(env_file),
        "config",
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def merged(env_file: Path) -> dict:
    result = compose(env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return fill_template(tmp_path / "production.env")


def test_rabbitmq_is_healthchecked_persisted_and_local_only(env_file: Path) -> None:
    config = merged(env_file)
    rabbitmq = config["services"]["rabbitmq"]
    assert rabbitmq["image"] == "rabbitmq:3.13-alpine"
    assert rabbitmq["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert rabbitmq["restart"] == "unless-stopped"
    assert "rabbitmq_data:/var/lib/rabbitmq:rw" in rabbitmq["volumes"]
    assert "rabbitmq_data" in config["volumes"]
    # A fixed node name: a recreated container finds its queues on the volume.
    assert rabbitmq["hostname"] == "rabbitmq"
    assert rabbitmq["ports"] == ["127.0.0.1:5672:5672/tcp"]  # never beyond this host
    assert rabbitmq["environment"] == {"RABBITMQ_DEFAULT_USER": "tradebot", "RABBITMQ_DEFAULT_PASS": PASSWORD}


def test_every_broker_user_speaks_amqp_to_a_healthy_rabbitmq_and_keeps_redis(env_file: Path) -> None:
    services = merged(env_file)["services"]
    assert set(services) == {"db", "redis", "rabbitmq", *BROKER_USERS}
    for name in BROKER_USERS:
        service = services[name]
        environment = service["environment"]
        assert environment["CELERY_BROKER_URL"] == f"amqp://tradebot:{PASSWORD}@rabbitmq:5672//", name
        # Redis stays for the results and the prediction lane.
        assert environment["CELERY_RESULT_BACKEND"] == "redis://redis:6379/1", name
        assert service["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, name
        # The base file's settings survive the merge.
        assert environment["API_TOKEN"] == PASSWORD, name
    for name in ["web", "worker-predict", "worker-trades", "beat", "flower"]:
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    for name in ["web", "worker-predict", "worker-trades", "beat"]:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["db"] == {"condition": "service_healthy"}


def test_the_broker_password_comes_from_the_env_file_only(env_file: Path) -> None:
    raw = yaml.safe_load(OVERRIDE.read_text())
    assert raw["services"]["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"].startswith(
        "${RABBITMQ_DEFAULT_PASS:?"
    )

    lines = [
        line for line in env_file.read_text().splitlines() if not line.startswith("RABBITMQ_DEFAULT_PASS=")
    ]
    env_file.write_text("\n".join(lines) + "\n")
    result = compose(env_file, "-q")
    assert result.returncode != 0
    assert "set RABBITMQ_DEFAULT_PASS in .env" in result.stderr


def test_the_rabbitmq_health_check_runs_against_a_real_node() -> None:
    # The service's own health check, run here against the machine's RabbitMQ node.
    test = yaml.safe_load(OVERRIDE.read_text())["services"]["rabbitmq"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    done = subprocess.run(test[1:], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Ping succeeded" in done.stdout


def test_the_merged_services_commands_become_ready_on_rabbitmq(
    tmp_path, env, database_url, clean, zoo, rabbitmq_url
):
    env["CELERY_BROKER_URL"] = rabbitmq_url  # the test's vhost in place of rabbitmq:5672//
    env["METRICS_DIR"] = str(tmp_path / "metrics")
    services = merged(fill_template(tmp_path / "production.env"))["services"]
    started: list[Service] = []

    def start(name: str, **overrides: str) -> Service:
        service_env = {**environment_of(services[name], env), **overrides}
        assert service_env["CELERY_BROKER_URL"] == rabbitmq_url
        process = Service(command_of(services[name]), service_env, ROOT, tmp_path / f"{name}.log")
        started.append(process)
        return process

    try:
        migrate = start("migrate")
        assert migrate.process.wait(120) == 0, migrate.log()
        port = free_port()
        start("web", WEB_BIND=f"127.0.0.1:{port}")
        start("worker-predict")
        start("worker-trades")
        start("beat")
        web = f"http://127.0.0.1:{port}"

        def ready() -> bytes | None:
            status, body = request(f"{web}/readyz")
            return body if status == 200 else None

        checks = json.loads(wait_for(ready, 120, "the web to answer /readyz with 200 on RabbitMQ"))["checks"]
        host = socket.gethostname()
        assert checks["broker"] == {"ok": True}
        assert checks["workers"]["queues"] == {"predict": [f"predict@{host}"], "trades": [f"trades@{host}"]}
        status, body = request(f"{web}/metrics")
        assert status == 200
        assert b"celery_broker_up 1.0" in body
        assert b'celery_queue_length{queue="trades.dead-letter"}' in body
    finally:
        for process in reversed(started):
            process.stop()
