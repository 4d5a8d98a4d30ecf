"""`make run` on a machine where no PostgreSQL or Redis answers and no variable names one:
private servers start from PyPI packages, the whole stack works on them, and their data
survives a restart.

The machine's own servers answer on the default ports, so the test points the unset
defaults at ports where nothing listens (`--default-*-url`), which is what a machine
without them looks like to `make run`.
"""

from __future__ import annotations

import json
import os
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


def test_make_run_starts_private_postgres_and_redis_when_none_answers(env, tmp_path, zoo):
    web_port = free_port()
    stack_env = {
        key: value
        for key, value in env.items()
        if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    }
    stack_env.update(WEB_BIND=f"127.0.0.1:{web_port}", FLOWER_PORT=str(free_port()))
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
    assert stack.process.returncode is not None
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # the private servers stopped too

    again = DevStack(stack_env, data_dir, tmp_path / "second.log", redis_port)
    try:
        wait_for(lambda: ready(again), 300, "the stack to be ready again")
        status, stored = call(web_port, "GET", "/api/v1/trades/embedded-1")
        assert status == 200 and stored["entry_price"] == record["entry_price"]
    finally:
        again.stop()
