"""The Getting started pages work as written: every code block of the first run's, the
first prediction's and the first trade's pages runs, in order, against a real web server
and real predict and trades workers holding the demo models (`make run`'s, trained the
way it trains them).

A block is run as a newcomer would paste it (`bash` blocks in bash, `python` blocks by the
project's Python), with `localhost:5173` pointing at the test's web server and `curl`
failing on an HTTP error; a block of `make` commands (the stack's own start, which
tests/test_make_run.py runs) is checked to name targets that exist (`make -n`). A block
that shows an error on purpose says which, in a comment before it
(`<!-- answers: 422 input_mismatch -->`). A block that only reads is tried again until it
succeeds (a trade is written by a worker a few milliseconds after it is sent)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.training import train_demo
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "docs" / "getting-started"
BLOCK = re.compile(r"(?:<!-- answers: (\d{3}) (\w+) -->\s*)?^```(\w+)\n(.*?)^```", re.M | re.S)
# A failing curl says so (exit 22) and still prints the error's body.
CURL_FAILS = 'curl() { command curl --fail-with-body "$@"; }\n'
READ_RETRY_S = 20


def blocks(page: str) -> list[tuple[str, str, tuple[int, str] | None]]:
    """(language, code, the error it answers on purpose) of each fenced block, in order."""
    found = []
    for status, code, language, text in BLOCK.findall((PAGES / page).read_text()):
        found.append((language, text, (int(status), code) if status else None))
    return found


@pytest.fixture
def demo_stack(web, workers, tmp_path):
    models = tmp_path / "models"
    train_demo(models, progress=lambda _: None, types=("xgboost",))
    workers("predict", pool="threads", MODEL_DIR=str(models))
    workers("trades")
    server = web(MODEL_DIR=str(models))
    wait_for(
        lambda: json.loads(server.get("/api/v1/ml/models/xgboost_model")[1]).get("loaded"),
        60,
        "a predict worker to load the demo model",
    )
    return server


def run(language: str, code: str, server, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = code.replace("localhost:5173", server.url.removeprefix("http://"))
    commands = code.strip().splitlines()
    if language == "bash" and all(line.startswith("make ") for line in commands):
        dry_runs = " && ".join(
            f"make -n --no-print-directory {line.removeprefix('make ')}" for line in commands
        )
        return subprocess.run(["bash", "-c", dry_runs], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", CURL_FAILS + code]
    elif language == "python":
        command = [sys.executable, "-c", code]
    else:
        raise AssertionError(f"a {language} block: the test does not know how to run it")
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def writes(language: str, code: str) -> bool:
    return language == "python" or "-X POST" in code or "-X PATCH" in code


PAGES_RUN = ("first-run.md", "first-prediction.md", "first-trade.md")  # in a newcomer's order


def test_the_getting_started_blocks_run_as_written(demo_stack, env):
    for page in PAGES_RUN:
        found = blocks(page)
        assert found, f"{page} has no code block"
        run_page(page, found, demo_stack, env)


def run_page(page: str, found, demo_stack, env) -> None:
    for language, code, error in found:
        deadline = time.monotonic() + (0 if writes(language, code) or error else READ_RETRY_S)
        while True:
            done = run(language, code, demo_stack, env)
            if done.returncode == 0 or time.monotonic() >= deadline:
                break
        if error is None:
            assert done.returncode == 0, f"{page}: this block failed:\n{code}\n{done.stdout}\n{done.stderr}"
            assert "Traceback" not in done.stderr, done.stderr
            continue
        status, expected = error
        assert done.returncode == 22, f"{page}: this block should answer {status}:\n{code}\n{done.stdout}"
        assert json.loads(done.stdout)["error"]["code"] == expected, done.stdout
