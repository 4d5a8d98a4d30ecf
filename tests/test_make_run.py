"""`make run`, the README's first command: it says what is missing, or starts the whole stack,
and Ctrl-C stops every process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def make_run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("variable", "url", "named", "hint"),
    [
        ("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:{port}/x", "PostgreSQL", "pg_ctlcluster"),
        ("CELERY_BROKER_URL", "redis://127.0.0.1:{port}/0", "Redis", "apt-get install redis-server"),
    ],
)
def test_a_service_that_does_not_answer_is_named_with_how_to_start_it(env, variable, url, named, hint):
    port = free_port()  # nothing listens there
    result = make_run({**env, variable: url.format(port=port)})
    assert result.returncode != 0
    assert f"{named} does not answer at" in result.stderr
    assert f":{port}" in result.stderr
    assert "docker compose up -d" in result.stderr
    assert hint in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(child) for child in (task / "children").read_text().split()}
            except OSError:
                continue
            pending.extend(children - found)
            found |= children
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_all(pid: int) -> None:
    """SIGKILL a stack that did not stop: its process group and every descendant, since
    honcho runs in a session of its own and would outlive its group, its workers
    consuming the next tests' queues."""
    leftovers = descendants(pid)
    os.killpg(pid, signal.SIGKILL)
    for child in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_make_run_starts_the_stack_and_ctrl_c_stops_all_of_it(env, tmp_path, database_url, clean, zoo):
    web_port, flower_port = free_port(), free_port()
    run_env = {**env, "WEB_BIND": f"127.0.0.1:{web_port}", "FLOWER_PORT": str(flower_port)}
    log_path = tmp_path / "make-run.log"
    access_log = ROOT / "data" / "logs" / "access.log"  # make run's default data directory
    access_start = access_log.stat().st_size if access_log.exists() else 0
    with log_path.open("wb") as log:
        # Its own process group, as a terminal gives the command it runs.
        make = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def answers(path: str, port: int) -> bool:
            if make.poll() is not None:
                raise AssertionError(f"make run exited:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(lambda: answers("/readyz", web_port), 240, "the web of make run to be ready")
        wait_for(lambda: answers("/healthcheck", flower_port), 60, "Flower of make run to answer")
        output = log_path.read_text()
        assert f"web:    http://127.0.0.1:{web_port}" in output
        assert f"flower: http://127.0.0.1:{flower_port}" in output
        # The access lines go to a file, not through honcho's pipe to the console.
        assert f"tail -f {access_log}" in output

        def access_lines() -> bytes:
            with access_log.open("rb") as lines:
                lines.seek(access_start)
                return lines.read()

        # The web writes an access line once it has answered: just after the test has read it.
        wait_for(lambda: b"GET /readyz 200" in access_lines(), 10, "the 200 of /readyz in the access log")
        assert "web.access" not in log_path.read_text()
        processes = descendants(make.pid)
        commands = " ".join(Path(f"/proc/{pid}/cmdline").read_text() for pid in processes if running(pid))
        for started in ("web.server", "worker", "beat", "flower", "honcho"):
            assert started in commands

        # Once /readyz answers 200, one line says so.
        wait_for(lambda: "make run: ready in " in log_path.read_text(), 10, "make run to say it is ready")

        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        make.wait(60)
        wait_for(lambda: not any(running(pid) for pid in processes), 30, "every process of make run to stop")
        output = log_path.read_text()
        assert "SIGINT received" in output
        assert "make run: stopped web, worker-trades, worker-predict, beat and flower (on SIGINT)" in output
        assert "make: ***" not in output  # an orderly stop exits 0: no "Error 130" from make
    finally:
        if make.poll() is None:
            kill_all(make.pid)
            make.wait(10)
