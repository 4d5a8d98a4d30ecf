"""`make run` on a machine where no PostgreSQL or Redis answers and no variable names one:
private servers start from PyPI packages, the whole stack works on them, and their data
survives a restart.

The machine's own servers answer on the default ports, so the test points the unset
defaults at ports where nothing listens (`--default-*-url`), which is what a machine
without them looks like to `make run`.

The first start is also where a newcomer's first minutes are asserted (issue 28, see
tests/test_first_minutes_run.py): one ready line, a quiet start, and a Ctrl-C that says
what it stopped, private servers included, and exits 0. One stack asserts both, since
starting private servers (an initdb) is the slowest start there is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.bots.send_task_bot import trade
from tests.support.model_zoo import ROWS
from tests.support.processes import ROOT, free_port, wait_for
from tests.test_first_minutes_run import PROCESSES, assert_quiet_start, refuses
from tests.test_make_run import descendants, running

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class DevStack:
    def __init__(self, env: dict[str, str], data_dir: Path, log_path: Path, redis_port: int):
        nowhere = free_port()
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "devstack", "--data-dir", str(data_dir),
                    "--default-database-url", f"postgresql+psycopg2://postgres@127.0.0.1:{nowhere}/tradebot",
                    "--default-broker-url", f"redis://127.0.0.1:{nowhere}/0",
                    "--redis-port", str(redis_port),
                ],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data, {"Content-Type": "application/json"}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_says_ready_once(output: str, web_port: int, flower_port: int) -> None:
    ready = re.search(r"^make run: ready in (\d+) s: .*$", output, re.MULTILINE)
    assert ready, output[-3000:]
    assert ready[0] == (
        f"make run: ready in {ready[1]} s: the dashboard and API at http://127.0.0.1:{web_port}, "
        f"Flower at http://127.0.0.1:{flower_port}. Ctrl-C stops it."
    )
    assert output.count("make run: ready") == 1
    assert output.index(f"flower: http://127.0.0.1:{flower_port}") < output.index("make run: ready")
    assert_quiet_start(output)


def assert_stopped_in_order(output: str, data_dir: Path, redis_port: int) -> None:
    """Ctrl-C: every stop said, the private servers' last, each process on its own terms."""
    said = [line for line in output.splitlines() if line.startswith("make run: stopped")]
    redis_dir, postgres_dir = data_dir / "redis", data_dir / "postgres"
    assert said == [
        f"make run: stopped {PROCESSES} (on SIGINT)",
        f"make run: stopped the private Redis on 127.0.0.1:{redis_port} (its data stays in {redis_dir})",
        f"make run: stopped the private PostgreSQL (its data stays in {postgres_dir})",
    ], output[-3000:]
    # exec: honcho sees the process, not a shell.
    for name in ("web", "worker-trades", "worker-predict", "beat", "flower"):
        assert f"{name}.1 stopped (rc=0)" in output, output[-3000:]
    # No traceback of `make run` itself (honcho prefixes its processes' lines, so a pool
    # child's WorkerLostError, which honcho's stop can cause, does not start a line).
    assert not re.search(r"^Traceback", output, re.MULTILINE), output[-3000:]


def test_make_run_starts_private_postgres_and_redis_when_none_answers(env, tmp_path, zoo):
    web_port, flower_port = free_port(), free_port()
    stack_env = {
        key: value
        for key, value in env.items()
        # WEB_THREADS unset: the default's granian warning comes with its note.
        if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "WEB_THREADS"}
    }
    stack_env.update(WEB_BIND=f"127.0.0.1:{web_port}", FLOWER_PORT=str(flower_port))
    data_dir, redis_port = tmp_path / "data", free_port()

    def ready(stack: DevStack) -> bool:
        if stack.process.poll() is not None:
            raise AssertionError(f"make run exited:\n{stack.log()[-4000:]}")
        try:
            return call(web_port, "GET", "/readyz")[0] == 200
        except OSError:
            return False

    stack = DevStack(stack_env, data_dir, tmp_path / "first.log", redis_port)
    try:
        wait_for(lambda: ready(stack), 300, "the stack on private servers to be ready")
        assert "started a private PostgreSQL 18" in stack.log()
        assert f"started a private Redis on redis://127.0.0.1:{redis_port}" in stack.log()
        wait_for(lambda: "make run: ready in " in stack.log(), 10, "make run to say it is ready")
        assert_says_ready_once(stack.log(), web_port, flower_port)
        started = descendants(stack.process.pid)

        record = trade("embedded", 1)
        assert call(web_port, "POST", "/api/v1/trades", record)[0] == 202
        wait_for(
            lambda: call(web_port, "GET", "/api/v1/trades/embedded-1")[0] == 200, 60, "the trade to be stored"
        )
        status, body = call(
            web_port, "POST", "/api/v1/ml/predict", {"model_name": "xgb.json", "features": ROWS.tolist()}
        )
        assert status == 200, body
        assert len(body["predictions"]) == len(ROWS)
    finally:
        stack.stop()
    assert stack.process.returncode == 0  # an orderly stop: make adds no "Error 130"
    assert_stopped_in_order(stack.log(), data_dir, redis_port)
    wait_for(lambda: not any(running(pid) for pid in started), 30, "every process of make run to stop")
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # the private servers stopped too
    assert refuses(redis_port)

    again = DevStack(stack_env, data_dir, tmp_path / "second.log", redis_port)
    try:
        wait_for(lambda: ready(again), 300, "the stack to be ready again")
        status, stored = call(web_port, "GET", "/api/v1/trades/embedded-1")
        assert status == 200 and stored["entry_price"] == record["entry_price"]
    finally:
        again.stop()
