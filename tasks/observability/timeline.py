"""The timeline of a synchronous prediction, stage by stage, for `bench/timeline.py`.

Off unless PREDICT_TIMELINE_DIR is set; then the web and the predict workers stamp each
stage of every direct-lane prediction with `time.monotonic_ns()` (CLOCK_MONOTONIC: one
clock for every process of the machine, so a web's stamps and a worker's line up), and
a thread of each process appends them to `<dir>/<role>-<pid>.jsonl` every half second,
off the requests' path. A line: `{"job": id, "stage": name, "ns": stamp}`. Off, a stamp
costs one test of a module global.

The web stamps a request's stages on its thread before it knows the job's id
(`begin`, `mark`), and names the job once it does (`name`); the workers stamp jobs by id
(`stamp_jobs`).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from tasks.internals.process_exit import at_exit

FLUSH_S = 0.5


class _Recorder:
    def __init__(self, directory: Path, role: str):
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / f"{role}-{os.getpid()}.jsonl"
        # Appended by many threads, taken by one: a deque's append and popleft are atomic.
        self._lines: collections.deque[tuple[str, str, int]] = collections.deque()
        self._local = threading.local()
        threading.Thread(target=self._run, name="timeline", daemon=True).start()
        at_exit(self.flush)  # granian's workers end without atexit

    def begin(self) -> None:
        self._local.stamps = [("request", time.monotonic_ns())]
        self._local.job = None

    def mark(self, stage: str) -> None:
        stamps = getattr(self._local, "stamps", None)
        if stamps is not None:
            stamps.append((stage, time.monotonic_ns()))

    def name(self, job_id: str) -> None:
        self._local.job = job_id

    def end(self) -> None:
        stamps = getattr(self._local, "stamps", None)
        job = getattr(self._local, "job", None)
        self._local.stamps = None
        if stamps is not None and job is not None:  # a request that sent no prediction is left out
            stamps.append(("returned", time.monotonic_ns()))
            self._lines.extend((job, stage, ns) for stage, ns in stamps)

    def stamp_jobs(self, job_ids: Iterable[str], stage: str) -> None:
        now = time.monotonic_ns()
        self._lines.extend((job, stage, now) for job in job_ids)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            self.flush()

    def flush(self) -> None:
        taken = [self._lines.popleft() for _ in range(len(self._lines))]
        if taken:
            lines = (orjson.dumps({"job": job, "stage": stage, "ns": ns}) + b"\n" for job, stage, ns in taken)
            with self._path.open("ab") as file:
                file.write(b"".join(lines))


_recorder: _Recorder | None = None


def start(directory: Path | None, role: str) -> None:
    """Stamp this process's predictions into `directory` (PREDICT_TIMELINE_DIR); None: off."""
    global _recorder
    if directory is not None and _recorder is None:
        _recorder = _Recorder(directory, role)


def begin() -> None:
    if _recorder is not None:
        _recorder.begin()


def mark(stage: str) -> None:
    if _recorder is not None:
        _recorder.mark(stage)


def name(job_id: str) -> None:
    if _recorder is not None:
        _recorder.name(job_id)


def end() -> None:
    if _recorder is not None:
        _recorder.end()


def around(wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    """`wsgi_app` with each request's first and last stamps (`request`, `returned`)."""

    def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        begin()
        try:
            return wsgi_app(environ, start_response)
        finally:
            end()

    return timed


def stamp_jobs(job_ids: Iterable[str], stage: str) -> None:
    if _recorder is not None:
        _recorder.stamp_jobs(job_ids, stage)
