"""An append-only JSON-lines spool in a directory, safe for several processes at once.

Writers append whole lines to `active.jsonl` while holding an exclusive `flock`, and
fsync before they return, so a line that `append` returned for is on disk. A crash can
leave a torn last line: the next writer ends it with a newline first, and a drain skips
it with a warning (keeping its bytes in `quarantine/`), so one torn line never spoils
the lines after it.

A drain seals the active file into a numbered segment (under the same lock, so no
writer is mid-line), then hands the segments' entries, oldest first, to a callback in
chunks. After each chunk the callback returned for, the byte offset reached is saved
in `<segment>.done`; a segment is deleted only when all of it is done. A crash at any
point therefore repeats at most one chunk (the writer's idempotency absorbs that) and
never loses one. The spool's directory must be on a local disk (flock).

A full disk never strands what is spooled: an append that fails takes its partial
bytes back out (and raises, so its caller keeps the entries), and a drain needs no new
space to make progress (its bookkeeping, the done offset and the quarantine of torn
lines, is skipped with a warning when the disk refuses it).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ACTIVE = "active.jsonl"
SEGMENT_GLOB = "segment-*.jsonl"


@dataclass
class DrainReport:
    applied: int = 0
    skipped: int = 0
    segments: int = 0


class Spool:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    # -- writing ------------------------------------------------------------------

    def append(self, entries: Iterable[dict[str, Any]]) -> int:
        """Append entries as JSON lines, durably; returns how many were written."""
        lines = [json.dumps(entry, separators=(",", ":"), allow_nan=False) for entry in entries]
        if not lines:
            return 0
        payload = ("\n".join(lines) + "\n").encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock(".append.lock"):
            path = self.directory / ACTIVE
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                size = os.fstat(fd).st_size
                if not created and _ends_torn(fd):
                    payload = b"\n" + payload
                try:
                    _write_all(fd, payload)
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # no half-written entries: the caller keeps them all
                    raise
            finally:
                os.close(fd)
            if created:
                _fsync_directory(self.directory)
        return len(lines)

    # -- draining -----------------------------------------------------------------

    def drain(
        self, apply: Callable[[list[dict[str, Any]]], None], chunk_size: int = 500
    ) -> DrainReport | None:
        """Hand every spooled entry to `apply`, oldest first; None if another drain runs.

        If `apply` raises, draining stops there and the exception propagates; what was
        not applied stays in the spool for the next drain.
        """
        if not self.directory.exists():
            return DrainReport()
        with self._lock(".drain.lock", blocking=False) as held:
            if not held:
                return None
            self._seal_active()
            report = DrainReport()
            for segment in sorted(self.directory.glob(SEGMENT_GLOB)):
                self._drain_segment(segment, apply, chunk_size, report)
                report.segments += 1
            return report

    def waiting(self) -> int:
        """How many entries wait in the spool (torn lines included)."""
        count = 0
        for path, offset in self.pending_files():
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    count += sum(1 for line in handle if line.strip())
            except FileNotFoundError:
                continue
        return count

    def pending_files(self) -> list[tuple[Path, int]]:
        """The files holding waiting entries, each with the offset where they start."""
        return [
            (path, _done_offset(path))
            for path in [*self.directory.glob(SEGMENT_GLOB), self.directory / ACTIVE]
        ]

    def _seal_active(self) -> None:
        with self._lock(".append.lock"):
            active = self.directory / ACTIVE
            if active.exists() and active.stat().st_size > 0:
                sealed = self.directory / f"segment-{time.time_ns():020d}-{os.getpid()}.jsonl"
                os.rename(active, sealed)
                _fsync_directory(self.directory)

    def _drain_segment(
        self,
        segment: Path,
        apply: Callable[[list[dict[str, Any]]], None],
        chunk_size: int,
        report: DrainReport,
    ) -> None:
        chunk: list[dict[str, Any]] = []
        offset = _done_offset(segment)
        for entry, end in self._entries(segment, offset, report):
            chunk.append(entry)
            if len(chunk) >= chunk_size:
                apply(chunk)
                report.applied += len(chunk)
                _save_done_offset(segment, end)  # best effort: without it a crash repeats more
                chunk = []
        if chunk:
            apply(chunk)
            report.applied += len(chunk)
        segment.unlink()
        _done_path(segment).unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def _entries(
        self, segment: Path, offset: int, report: DrainReport
    ) -> Iterator[tuple[dict[str, Any], int]]:
        with segment.open("rb") as handle:
            handle.seek(offset)
            position = offset
            for number, raw in enumerate(handle, start=1):
                position += len(raw)
                if not raw.strip():
                    continue
                entry = _parse_line(raw)
                if entry is None:
                    report.skipped += 1
                    self._quarantine(segment, raw)
                    log.warning(
                        "spool %s: skipped an unreadable line (%d bytes, line %d after offset %d)",
                        segment.name,
                        len(raw),
                        number,
                        offset,
                    )
                    continue
                yield entry, position

    def _quarantine(self, segment: Path, raw: bytes) -> None:
        # A torn line is what a writer that died mid-append left: its caller was never told
        # it was spooled. It is kept for a person to look at, if the disk has room.
        folder = self.directory / "quarantine"
        try:
            folder.mkdir(exist_ok=True)
            with (folder / f"{segment.stem}.bad").open("ab") as handle:
                handle.write(raw if raw.endswith(b"\n") else raw + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            log.warning("spool %s: the torn line was not kept in quarantine: %s", segment.name, exc)

    @contextmanager
    def _lock(self, name: str, blocking: bool = True) -> Iterator[bool]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None  # torn: the writer died mid-line
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _done_path(segment: Path) -> Path:
    return segment.with_name(segment.name + ".done")


def _done_offset(segment: Path) -> int:
    try:
        return int(_done_path(segment).read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _save_done_offset(segment: Path, offset: int) -> None:
    done = _done_path(segment)
    partial = done.with_name(done.name + ".tmp")
    try:
        with partial.open("w") as handle:
            handle.write(str(offset))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, done)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        log.warning("spool %s: progress not saved (%s); a crash now repeats more of it", segment.name, exc)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
