"""Helpers shared by the benchmarks: ports, scratch databases, process groups, CPU
accounting and wrk runs whose latency histogram comes back to Python.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_database(admin_url: str, name: str, drop: bool = False) -> str:
    """Create (or drop) a database of its own on the admin URL's server; returns its URL."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(name)  # DDL takes no parameters
            if drop:
                connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            else:
                connection.execute(text(f"CREATE DATABASE {quoted}"))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(False)


def atomic_write(path: Path, data: bytes) -> None:
    """`path` appears whole or not at all: a model watcher never reads half a file."""
    temporary = path.with_name(f".{path.name}.part")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# Processes


def start_process(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """`argv` in a session (and so a process group) of its own, its output appended to `log`."""
    with log.open("ab") as output:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def process_tree(process: subprocess.Popen) -> list[psutil.Process]:
    """The process and every descendant alive now (its own children may have sessions of
    their own, as honcho's do: they are still its descendants)."""
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_processes(targets: list[tuple[subprocess.Popen, bool]], grace_s: float = 30) -> None:
    """SIGTERM to every (process, whole_group) at once, then SIGKILL for whatever is left
    after `grace_s`, descendants included.

    With whole_group the signal goes to the process's group (it leads one: see
    start_process); without, to the process alone, which then stops its own children (as
    `make run`'s devstack does with honcho). Descendants are listed first, so those that
    outlive their parent are still found and killed by pid.
    """
    trees = [process_tree(process) for process, _ in targets]
    for process, whole_group in targets:
        if process.poll() is None:
            _signal(process.pid, signal.SIGTERM, whole_group)
    deadline = time.monotonic() + grace_s
    for process, _ in targets:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
    alive = [member for tree in trees for member in tree if _still(member)]
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
    for process, _ in targets:
        if process.poll() is None:
            process.kill()
        process.wait(5)


def _signal(pid: int, signum: int, whole_group: bool) -> None:
    try:
        if whole_group:
            os.killpg(pid, signum)  # the session's leader: its group id is its pid
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _still(member: psutil.Process) -> bool:
    # is_running also compares the creation time: a recycled pid is not ours.
    try:
        return member.is_running() and member.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cpu_seconds(members: list[psutil.Process]) -> float:
    total = 0.0
    for member in members:
        try:
            times = member.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def redis_cpu_seconds(client) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def postgres_cpu_seconds() -> float:
    """Every process named postgres: the server and its backends (pooled connections
    persist, so a burst's writes show in their counters)."""
    members = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "postgres":
            members.append(process)
    return cpu_seconds(members)


# wrk

# wrk calls done() once, in its main Lua state, with the merged latency statistics:
# `#latency` is the number of distinct values and `latency(i)` the i-th (microseconds)
# and how many requests took it. They include wrk's correction for coordinated omission
# (stats_correct), so they are the figures behind its own --latency percentiles.
_HISTOGRAM_LUA = """
done = function(summary, latency, requests)
  local out = assert(io.open(os.getenv("WRK_HISTOGRAM"), "w"))
  for i = 1, #latency do
    local value, count = latency(i)
    out:write(string.format("%d %d\\n", value, count))
  end
  out:close()
end
"""


def wrk_script(path: Path, body: str, headers: dict[str, str]) -> Path:
    """A wrk script that POSTs `body` and hands its latency histogram back (run_wrk)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n" + _HISTOGRAM_LUA)
    return path


@dataclass
class WrkRun:
    requests: int
    rate: float  # requests per second, as wrk prints it
    histogram: Counter = field(repr=False)  # microseconds -> requests
    cpu_s: float  # wrk's own CPU time
    output: str = field(repr=False)


class WrkFailed(RuntimeError):
    pass


def start_wrk(
    url: str,
    script: Path,
    threads: int,
    connections: int,
    seconds: float,
    histogram: Path,
    timeout_s: float = 10,
) -> subprocess.Popen:
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
    # wrk's default timeout is 2 s; a request slower than `timeout_s` is a stall, failed below.
    argv += ["--timeout", f"{timeout_s:g}s", "-s", str(script), url]
    env = {**os.environ, "WRK_HISTOGRAM": str(histogram)}
    histogram.unlink(missing_ok=True)
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_wrk(process: subprocess.Popen, histogram: Path, cpu_before: float) -> WrkRun:
    """Wait for wrk; WrkFailed on any non-2xx answer or socket error."""
    output, _ = process.communicate()
    # wrk is the only child reaped while it runs, so the children's rusage grows by its own.
    cpu_s = children_cpu_seconds() - cpu_before
    if process.returncode != 0 or "Non-2xx" in output or "Socket errors" in output:
        raise WrkFailed(output)
    counts: Counter = Counter()
    for line in histogram.read_text().splitlines():
        value, count = line.split()
        counts[int(value)] += int(count)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return WrkRun(requests, rate, counts, cpu_s, output)


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(histogram: Counter, share: float) -> float:
    """wrk's own percentile (stats_percentile) over a histogram, in microseconds."""
    total = sum(histogram.values())
    rank = math.floor(share * total + 1)  # C's round(share * total + 0.5)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)
