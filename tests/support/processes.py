"""Start the project's processes the way users start them: `celery -A tasks worker`, beat, flask."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from celery import Celery

from tasks.contract import DIRECT_LANE_KEY, Registration
from tasks.web_clients import loaded_descriptions

BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Service:
    """A project process with its output in a log file, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


class Worker(Service):
    def __init__(
        self,
        env: dict[str, str],
        cwd: Path,
        queues: str = "trades",
        concurrency: int = 2,
        pool: str = "prefork",
    ):
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.started_at = time.time()
        args = [
            str(BIN / "celery"), "-A", "tasks", "worker", "-Q", queues, "-c", str(concurrency), "-P", pool,
            "-n", self.name, "--without-gossip", "--without-mingle", "--loglevel", "INFO",
        ]  # fmt: skip
        super().__init__(args, env, cwd, cwd / f"worker-{self.name.split('@')[0]}.log")
        self.broker_url = env["CELERY_BROKER_URL"]

    def wait_ready(self, timeout: float = 60) -> Worker:
        app = Celery(broker=self.broker_url, set_as_current=False)
        # The worker's broker, not this process's CELERY_BROKER_URL (which Celery prefers to `broker`).
        app.conf.update(broker_read_url=self.broker_url, broker_write_url=self.broker_url)
        try:

            def answers() -> bool:
                if not self.alive():
                    raise AssertionError(f"worker exited:\n{self.log()[-3000:]}")
                return bool(app.control.ping(destination=[self.name], timeout=0.5))

            wait_for(answers, timeout, f"worker {self.name} to answer a ping")
        finally:
            app.close()
        return self

    def wait_models_loaded(self, result_url: str, names: set[str], timeout: float = 180) -> Worker:
        """Wait until this worker has reported `names` loaded (loading torch takes a while)."""
        client = redis.Redis.from_url(result_url)

        def reported() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited:\n{self.log()[-3000:]}")
            fresh = {
                key.split("@")[0]
                for key, description in loaded_descriptions(client).items()
                if description["reported_at"] >= self.started_at
            }
            return names <= fresh

        try:
            wait_for(reported, timeout, f"worker {self.name} to load {sorted(names)}", interval=0.2)
        finally:
            client.close()
        return self

    def wait_direct_registered(self, result_url: str, timeout: float = 30) -> Worker:
        """Wait until every pool process (a threads pool: the worker) has registered its direct
        connection (`tasks.contract.direct`)."""
        client = redis.Redis.from_url(result_url)

        def registered() -> bool:
            return (set(self.pool_pids()) or {self.pid}) <= set(direct_registrations(client))

        try:
            wait_for(registered, timeout, f"worker {self.name} to register its direct connections")
        finally:
            client.close()
        return self

    def pool_pids(self) -> list[int]:
        """The worker's pool processes (its children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [int(pid) for pid in children]


def direct_registrations(client: redis.Redis) -> dict[int, Registration | None]:
    """pid -> the Registration of every predict process registered (the last one of a
    process with several serving threads)."""
    entries = client.hgetall(DIRECT_LANE_KEY)
    # A field is host:pid:thread (`tasks.worker.direct_server`).
    return {int(field.rsplit(b":", 2)[1]): Registration.decode(raw) for field, raw in entries.items()}


class Beat(Service):
    def __init__(self, env: dict[str, str], cwd: Path):
        args = [
            str(BIN / "celery"), "-A", "tasks", "beat", "--loglevel", "INFO",
            "--schedule", str(cwd / "celerybeat-schedule"),
        ]  # fmt: skip
        super().__init__(args, env, cwd, cwd / "beat.log")


def flask(args: list[str], env: dict[str, str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "web", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebServer(Service):
    """The web server as users start it, `python -m web.server` (granian), on a free port."""

    def __init__(self, env: dict[str, str], cwd: Path, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        env = {**env, "WEB_BIND": f"127.0.0.1:{self.port}", "WEB_WORKERS": str(workers)}
        args = [sys.executable, "-m", "web.server"]
        super().__init__(args, env, cwd, cwd / f"web-{self.port}.log")

    def worker_pids(self) -> list[int]:
        """The web's worker processes (the server's children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def get(self, path: str, timeout: float = 10, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str, **kwargs) -> tuple[int, dict]:
        status, body = self.get(path, **kwargs)
        return status, json.loads(body)

    def wait_ready(self, timeout: float = 60) -> WebServer:
        """Until every worker serves: a signal that reaches a granian worker still starting
        is lost (it is killed WEB_GRACEFUL_TIMEOUT_S later), so tests stop only ready servers."""

        def answers() -> bool:
            if not self.alive():
                raise AssertionError(f"the web server exited:\n{self.log()[-3000:]}")
            log = self.log()
            if not all(f"Started worker-{number}" in log for number in range(1, self.workers + 1)):
                return False
            try:
                return self.get("/healthz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(answers, timeout, f"the web server on port {self.port} to answer /healthz")
        return self
