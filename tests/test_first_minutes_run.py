"""`make run` as a newcomer meets it (issue 28): one line says when the stack is ready,
Flower's and granian's start-up lines do not read as errors, and Ctrl-C or SIGTERM stops
everything in order, says what it stopped, and exits 0 so that make adds no "Error 143".

The private servers' case (the ready line, a quiet start, Ctrl-C) is asserted on the stack of
tests/test_embedded_services.py, `python -m devstack` (what `make run` execs) with the unset
defaults pointed where nothing listens: one start of private servers serves both. The make
case here runs `make run` on the machine's PostgreSQL and Redis, as tests/test_make_run.py
does. Ports are free ones, and the data, metrics and access log go under the test's own
folder: a stack running from this checkout is left alone.
"""

from __future__ import annotations

import multiprocessing
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.ready import NOT_READY_AFTER_S, ReadyWatch
from tests.support.processes import BIN, ROOT, Service, free_port, wait_for
from tests.test_make_run import descendants, kill_all, running

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROCESSES = "web, worker-trades, worker-predict, beat and flower"  # the Procfile's, in its order
GRANIAN_WARNING = "which seems quite high compared to the number of CPU cores"
GRANIAN_NOTE = "The web's granian will warn that 16 threads per worker are many for"
EXPLAINED = "No worker answered Flower's first inspection: they are still starting."


class Stack:
    """A `make run` with its output in a file, in a process group of its own as a terminal
    gives the command it runs."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match:
        def said() -> re.Match | None:
            if self.process.poll() is not None:
                raise AssertionError(f"make run exited:\n{self.log()[-4000:]}")
            return re.search(pattern, self.log(), re.MULTILINE)

        return wait_for(said, timeout, f"make run to say {pattern!r}", interval=0.2)

    def stopped(self, send: Callable[[subprocess.Popen], None], timeout: float = 90) -> int:
        send(self.process)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            kill_all(self.process.pid)
            self.process.wait(10)


def sigterm(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)  # `kill <pid>`, or make passing its SIGTERM on


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def assert_quiet_start(output: str) -> None:
    """Flower's first inspection, before the workers answer, is one explained line (if the
    workers were not up yet), never "Inspect method ... failed"; granian's thread warning
    comes with the note that explains it, when the machine has so few cores that it warns."""
    assert "Inspect method" not in output
    warns = GRANIAN_WARNING in output
    assert warns == (2 * multiprocessing.cpu_count() + 1 < 16)  # granian's rule, WEB_THREADS 16
    if warns:
        assert output.index(GRANIAN_NOTE) < output.index(GRANIAN_WARNING)


def test_sigterm_to_make_run_stops_the_stack_and_make_says_no_error(env, tmp_path, database_url, clean, zoo):
    web_port, flower_port = free_port(), free_port()
    run_env = {
        **env,
        "WEB_BIND": f"127.0.0.1:{web_port}",
        "FLOWER_PORT": str(flower_port),
        "METRICS_DIR": str(tmp_path / "metrics"),
        "ACCESS_LOG": str(tmp_path / "access.log"),
    }
    stack = Stack(["make", "run"], run_env, tmp_path / "make-run.log")
    try:
        stack.wait_for_line(r"^make run: ready in \d+ s: ", 240)
        started = descendants(stack.process.pid)
        # SIGTERM to make alone (a process manager, `kill`): make passes it on to its recipe.
        status = stack.stopped(sigterm)
    finally:
        stack.kill()
    output = stack.log()
    assert "make: ***" not in output, output[-3000:]  # no "Error 143"
    assert status in (0, -signal.SIGTERM)  # make ends by the signal it was sent, quietly
    assert f"make run: stopped {PROCESSES} (on SIGTERM)" in output
    assert "started a private" not in output  # the machine's PostgreSQL and Redis answered
    wait_for(lambda: not any(running(pid) for pid in started), 30, "every process of make run to stop")


def flower_refresh(port: int) -> None:
    """Flower's `GET /api/workers?refresh=1`: it answers once an inspection round has ended
    (the one under way, or a new one)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=30) as response:
        assert response.status == 200


def test_flowers_first_inspection_before_any_worker_is_one_explained_line(env, tmp_path, broker):
    port = free_port()
    flower = Service(
        [str(BIN / "celery"), "-A", "tasks", "flower"],
        # The API answers without credentials only when told to (the test's own Flower).
        {**env, "FLOWER_PORT": str(port), "FLOWER_UNAUTHENTICATED_API": "true"},
        ROOT,  # flowerconfig.py is read from the working directory
        tmp_path / "flower.log",
    )
    try:
        # No worker consumes this broker: Flower's first inspection (as it starts) gets no answer.
        wait_for(lambda: EXPLAINED in flower.log(), 60, "Flower's first inspection to end")
        flower_refresh(port)  # the first round is over once this answers
        first = flower.log()
        flower_refresh(port)  # a round of its own: no worker answers it either

        def later_round() -> str:  # its four lines may reach the log just after the answer
            text = flower.log()[len(first) :]
            return text if len(re.findall(r"Inspect method \w+ failed$", text, re.MULTILINE)) >= 4 else ""

        later = wait_for(later_round, 10, "the later round's warnings")
    finally:
        flower.stop()
    assert first.count(EXPLAINED) == 1 and "[I " in first[first.rindex("\n", 0, first.index(EXPLAINED)) :]
    # The first round said it in one line: its other methods' warnings went. (The first refresh
    # may have run a round of its own: four warnings, passed as they are.)
    assert len(re.findall(r"Inspect method \w+ failed", first)) in (0, 4), first
    # A later round is not the workers starting: Flower's own warnings, one per method.
    assert sorted(re.findall(r"\[W .*\] Inspect method (\w+) failed$", later, re.MULTILINE)) == sorted(
        ["stats", "active_queues", "registered", "conf"]
    ), later


def test_a_stack_not_ready_after_two_minutes_is_told_what_it_waits_for(web):
    """The ready line's other half: when /readyz still answers 503 after NOT_READY_AFTER_S,
    one line names the failing checks (here a web server alone: no worker, so no models)."""
    server = web()
    said: list[str] = []
    urls = {"web": server.url, "flower": "http://127.0.0.1:5555"}
    watch = ReadyWatch(urls, time.monotonic() - NOT_READY_AFTER_S, said.append)  # began long ago
    watch.start()
    try:
        wait_for(lambda: said, 30, "the not-ready line")
    finally:
        watch.stop()
        watch.join(10)
    (line,) = said
    assert re.match(r"make run: not ready after \d+ s, waiting for: ", line), line
    assert "workers (no live worker consumes predict, trades)" in line and "models (" in line, line
    assert "database" not in line and "broker" not in line, line  # those answer
