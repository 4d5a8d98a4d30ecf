"""The production compose file is valid, safe by default, and its settings template is complete.

Needs the `docker-compose` binary (Debian: `apt-get install -y docker-compose`), no Docker engine:
`docker-compose config` only reads, interpolates and validates the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config import Settings
from tests.support.compose import (
    COMPOSE_FILE,
    PASSWORD,
    ROOT,
    TEMPLATE,
    compose,
    fill_template,
    rendered_services,
)

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


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return fill_template(tmp_path / "production.env")


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
    assert redis_options(redis["command"])["appendonly"] == "yes"


def redis_options(command: list[str]) -> dict[str, str]:
    """`redis-server --name value ...` as {name: value}."""
    assert command[0] == "redis-server", command
    arguments = command[1:]
    assert len(arguments) % 2 == 0 and all(name.startswith("--") for name in arguments[::2]), command
    return {
        name.removeprefix("--"): value for name, value in zip(arguments[::2], arguments[1::2], strict=True)
    }


def test_redis_fsyncs_before_it_answers_unless_told_otherwise(env_file: Path) -> None:
    # README, "Deploying with compose": `always` loses nothing a bot was told was sent,
    # at a cost measured by `make bench-ingest-durability`; everysec is the opt-out.
    assert template_variables()["REDIS_APPENDFSYNC"] == "always"
    options = redis_options(rendered_services(env_file)["redis"]["command"])
    assert options["appendonly"] == "yes"
    assert options["appendfsync"] == "always"

    lines = [line for line in env_file.read_text().splitlines() if not line.startswith("REDIS_APPENDFSYNC=")]
    env_file.write_text("\n".join(lines) + "\n")
    assert redis_options(rendered_services(env_file)["redis"]["command"])["appendfsync"] == "always"

    env_file.write_text(env_file.read_text() + "REDIS_APPENDFSYNC=everysec\n")
    assert redis_options(rendered_services(env_file)["redis"]["command"])["appendfsync"] == "everysec"


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


APP_SERVICES = ["migrate", "web", "worker-predict", "worker-trades", "beat", "flower"]


def published(service: dict) -> list[str]:
    """Each published port as host_ip:published (long syntax) or as written (short syntax)."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(f"{port.get('host_ip', '')}:{port['published']}".lstrip(":"))
        else:
            ports.append(str(port))
    return ports


def test_the_whole_stack_runs_from_one_image_after_the_migration(env_file: Path) -> None:
    services = rendered_services(env_file)
    assert sorted(services) == sorted(["db", "redis", *APP_SERVICES])
    for name in APP_SERVICES:
        service = services[name]
        assert service["image"] == "tradebot:latest", name
        assert service["build"]["context"] == str(ROOT), name
        assert service["command"], name

    migrate = services["migrate"]
    # Migrates, then builds (or brings up to date) the kept statistics before anything serves.
    assert migrate["command"] == ["sh", "-c", "flask --app web db upgrade && flask --app web stats refresh"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ["web", "worker-predict", "worker-trades", "beat"]:
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    for name in ["web", "worker-predict", "worker-trades", "flower"]:
        assert services[name]["healthcheck"]["test"], name

    # Separate queues: a trade backlog never delays predictions.
    predict, trades = services["worker-predict"]["command"], services["worker-trades"]["command"]
    assert predict[predict.index("-Q") + 1] == "predict"
    assert trades[trades.index("-Q") + 1] == "trades"


def test_only_the_web_and_flower_are_published(env_file: Path) -> None:
    services = rendered_services(env_file)
    for name, service in services.items():
        if name in ("db", "redis"):
            assert all(port.startswith("127.0.0.1:") for port in published(service)), name
        elif name == "web":
            assert published(service) == ["5173"]
        elif name == "flower":
            assert published(service) == ["5555"]
        else:
            assert not published(service), name


def test_models_and_spool_live_on_volumes(env_file: Path) -> None:
    services = rendered_services(env_file)
    model_mount = f"{ROOT}/model_store:/app/model_store:ro"
    for name in ["web", "worker-predict"]:
        assert model_mount in services[name]["volumes"], name
        assert services[name]["environment"]["MODEL_DIR"] == "/app/model_store"
    # The predict worker spools its prediction log there while the database is down.
    for name in ["web", "worker-trades", "worker-predict"]:
        assert "spool:/app/data:rw" in services[name]["volumes"], name
        assert services[name]["environment"]["SPOOL_DIR"] == "/app/data/trades"


def test_every_setting_reaches_the_application_services(env_file: Path) -> None:
    services = rendered_services(env_file)
    # The web server's and Flower's own settings (address, sizing, credentials) are theirs only.
    own = ("web_", "flower_")
    shared = [name.upper() for name in Settings.model_fields if not name.startswith(own)]
    for name in APP_SERVICES:
        missing = [variable for variable in shared if variable not in services[name]["environment"]]
        assert not missing, f"{name} lacks {missing}"
    assert services["web"]["environment"]["WEB_BIND"] == "0.0.0.0:5173"
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == f"admin:{PASSWORD}"
    assert "FLOWER_BASIC_AUTH" not in services["web"]["environment"]


@pytest.mark.parametrize("variable", ["FLOWER_BASIC_AUTH", "API_TOKEN", "DATABASE_URL"])
def test_secrets_are_required(env_file: Path, variable: str) -> None:
    lines = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{variable}=")]
    env_file.write_text("\n".join(lines) + "\n")
    result = compose(env_file, "-q")
    assert result.returncode != 0
    assert f"set {variable}" in result.stderr


def test_the_image_is_slim_python_with_cpu_torch_and_no_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line and line[0].isupper()]
    assert ["FROM", "python:3.11-slim"] in instructions
    assert "--extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt" in dockerfile
    users = [argument for keyword, argument in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".env", ".venv", "model_store", "data"} <= set(ignored)
