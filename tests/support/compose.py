"""Read docker-compose.yml the way Docker would: Debian's `docker-compose config`, no engine needed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
TEMPLATE = ROOT / ".env.production.template"
PASSWORD = "test-only-db-password"


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose")
    # Only PATH and HOME: no POSTGRES_* of the calling shell may override the env file.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(ROOT))}
    command = [binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def fill_template(path: Path) -> Path:
    """The template with its placeholders filled in, as an operator would."""
    path.write_text(TEMPLATE.read_text().replace("CHANGE_ME", PASSWORD))
    return path


def rendered_services(env_file: Path) -> dict:
    result = compose(env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]
