"""The production compose file is valid, safe by default, and its settings template is complete.

Needs the `docker-compose` binary (Debian: `apt-get install -y docker-compose`), no Docker engine:
`docker-compose config` only reads, interpolates and validates the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
TEMPLATE = ROOT / ".env.production.template"
PASSWORD = "test-only-db-password"

# DESIGN.md, "Configuration".
DESIGN_VARIABLES = [
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "MODEL_DIR",
    "SPOOL_DIR",
    "API_TOKEN",
    "PREDICT_TIMEOUT_S",
    "TIMESCALEDB",
    "ALLOW_PICKLE_MODELS",
    "FLOWER_BASIC_AUTH",
]


def template_variables() -> dict[str, str]:
    lines = TEMPLATE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value for name, value in pairs}


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose")
    # Only PATH and HOME: no POSTGRES_* of the calling shell may override the env file.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(ROOT))}
    command = [binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """The template with its placeholders filled in, as an operator would."""
    path = tmp_path / "production.env"
    path.write_text(TEMPLATE.read_text().replace("CHANGE_ME", PASSWORD))
    return path


def test_compose_file_is_valid(env_file: Path) -> None:
    result = compose(env_file, "-q")
    assert result.returncode == 0, result.stderr


def test_services_are_local_only_healthchecked_and_persistent(env_file: Path) -> None:
    result = compose(env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    db, redis = services["db"], services["redis"]

    assert db["image"] == "timescale/timescaledb:latest-pg17"
    assert redis["image"] == "redis:7-alpine"
    for service in (db, redis):
        assert service["ports"], service
        assert all(str(port).startswith("127.0.0.1:") for port in service["ports"]), service["ports"]
        assert service["healthcheck"]["test"], service
        assert service["restart"] == "unless-stopped"

    assert db["environment"]["POSTGRES_DB"] == "tradebot"
    assert db["environment"]["POSTGRES_PASSWORD"] == PASSWORD  # from the env file
    assert any(volume.endswith("/db_data:/var/lib/postgresql/data:rw") for volume in db["volumes"])
    assert any(volume.endswith("/redis_data:/data:rw") for volume in redis["volumes"])
    assert "--appendonly" in redis["command"]


def test_password_comes_from_the_environment_only(tmp_path: Path) -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert raw["services"]["db"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")

    without_password = tmp_path / "no-password.env"
    without_password.write_text("POSTGRES_USER=tradebot\n")
    result = compose(without_password, "-q")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


def test_template_lists_every_setting() -> None:
    variables = template_variables()
    settings = [name.upper() for name in Settings.model_fields]
    missing = [name for name in [*DESIGN_VARIABLES, *settings] if name not in variables]
    assert not missing, f"missing from {TEMPLATE.name}: {missing}"
    assert variables["TIMESCALEDB"] == "require"
    assert variables["ALLOW_PICKLE_MODELS"] == "false"
