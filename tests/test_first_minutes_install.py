"""`make install` (the first thing `make run` does) says what it is doing: a line per step,
pip's own progress on a terminal, and nothing more where nobody watches (a pipe, CI logs).
Before, it ran pip with --quiet for tens of seconds with nothing shown (issue 28).

The Makefile's own recipe runs, on a virtualenv of the test's own (`VENV=...`) whose
site-packages reach this checkout's through a .pth file: every pinned requirement is there
already, so pip installs nothing from any index (PIP_NO_INDEX) and the test runs offline in
seconds; the editable install of the project goes into the test's virtualenv.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.processes import ROOT

STEPS = [
    "make install: 1/3 upgrading pip ...",
    "make install: 2/3 the pinned requirements (requirements.txt; a few minutes the first time) ...",
    "make install: 3/3 this project, editable (pip install -e .) ...",
]


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A virtualenv without pip of its own that sees this checkout's packages (pip among them)."""
    folder = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)}))
    (site / "checkout.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return folder


@pytest.fixture
def pip_env() -> dict[str, str]:
    """The machine's pip settings left out: no index, no configuration file, and the build of
    the editable install uses the setuptools already there (pip reads PIP_NO_BUILD_ISOLATION
    backwards: 0 turns the isolation off)."""
    # Nor the make around the suite (`make test`): a make it starts would say which
    # directory it enters, as a sub-make does.
    outer_make = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PIP_") and key not in outer_make
    }
    env.update(
        PIP_NO_INDEX="1",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_BUILD_ISOLATION="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def make_install(venv: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "install", f"VENV={venv}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `args` with a pseudo-terminal as its stdout and stderr, as in a shell; its status
    and what it wrote there."""
    leader, follower = os.openpty()
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    written = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        written.append(chunk)
    os.close(leader)
    return process.wait(300), b"".join(written).decode(errors="replace").replace("\r\n", "\n")


def test_make_install_in_a_pipe_says_each_step_and_pip_stays_quiet(venv, pip_env):
    result = make_install(venv, pip_env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == STEPS, result.stdout
    assert re.fullmatch(rf"make install: done in \d+ s: {re.escape(str(venv))} is ready", lines[3])
    assert len(lines) == 4 and result.stderr == "", result.stdout + result.stderr
    assert (venv / ".installed").exists()


def test_make_install_on_a_terminal_shows_pips_own_progress(venv, pip_env):
    status, written = on_a_terminal(["make", "install", f"VENV={venv}"], pip_env)
    assert status == 0, written
    steps = [line for line in written.splitlines() if line.startswith("make install: ")]
    assert steps[:3] == STEPS and steps[3].startswith("make install: done in "), written
    # pip's own lines, between the steps they belong to
    requirements = written[written.index(STEPS[1]) : written.index(STEPS[2])]
    assert "Requirement already satisfied: Flask==3.1.3" in requirements, written
    assert "BuildBackendWarning" not in written  # setuptools' notes on editable installs: not shown
