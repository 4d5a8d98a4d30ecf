"""Every version of a model that ever loaded, kept by content so it stays servable after
its file in MODEL_DIR is replaced or deleted.

Layout: `<directory>/<name>/<version>/<name>` is the content under the model's own file
name (so its suffix and `models.formats.detect` work as in MODEL_DIR), next to a copy of
its sidecar `<name>.meta.json` when it had one. A version is the content's hash, so a
kept version never changes: several worker processes keeping the same version at once
each copy into a folder of their own and rename it into place whole; the first rename
wins, the others find the version kept and clean up. Readers only ever see complete
version folders: a copy in progress and a version being removed live under hidden names
that are never a version.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.base import ModelNotFound
from models.formats import detect, is_candidate
from models.sidecar import sidecar_path
from models.store import ModelFile, check_name, inside, is_version, read_meta, version_of

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_STAGING = ".staging-"  # a copy being made: hidden, never a version
_TRASH = ".trash-"  # a version being removed
_ABANDONED_S = 24 * 3600.0  # a copy this old was left by a process that died


@dataclass(frozen=True)
class KeptVersion:
    name: str
    version: str
    first_seen: datetime  # UTC: when it was first kept
    size_bytes: int


class ModelArchive:
    def __init__(self, directory: Path | str, keep: int = 10):
        if keep < 1:
            raise ValueError("an archive keeps at least one version per model")
        self.directory = Path(os.path.abspath(directory))
        self.keep = keep
        self._warned: set[tuple[str, str]] = set()
        self._warned_guard = threading.Lock()

    # -- keeping ----------------------------------------------------------------------

    def keep_version(self, file: ModelFile) -> bool:
        """Copy `file` into the archive as its version; True once it is kept (now or
        before). False, without raising, when the file no longer has that content or the
        archive cannot be written (logged once per version)."""
        check_name(file.name)
        if not is_version(file.version):
            raise ModelNotFound(f"{file.name} has no version {file.version!r}")
        if self._is_kept(file.name, file.version):
            return True
        try:
            return self._copy_in(file)
        except OSError as exc:
            self._warn_once(file, exc)
            return False

    def _copy_in(self, file: ModelFile) -> bool:
        folder = self.directory / file.name
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f"{_STAGING}{file.version}-{uuid.uuid4().hex}"  # unique per process and call
        staging.mkdir()
        try:
            copied = _copy_file(file.path, staging / file.name)
            if copied != file.version:
                # Replaced or rewritten since it was read: the next load keeps what it is now.
                log.info(
                    "model %s changed while being kept (version %s, now %s); not kept",
                    file.name,
                    file.version,
                    copied,
                )
                return False
            side = sidecar_path(file.path)
            if side.is_file():
                _copy_file(side, staging / side.name)
            return self._publish(staging, folder / file.version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # already gone once published

    def _publish(self, staging: Path, target: Path) -> bool:
        """Rename the complete `staging` folder to `target`; True if `target` is kept after."""
        for _ in range(2):
            try:
                # A directory renames over an empty one only: of processes racing to keep
                # one version, the first wins and the others fail here.
                os.rename(staging, target)
            except OSError:
                if self._is_kept(target.parent.name, target.name):
                    return True  # kept by another process meanwhile
                if not target.exists():
                    raise
                self._discard(target)  # an incomplete leftover (not ours): replace it
                continue
            _fsync_directory(target.parent)
            return True
        return self._is_kept(target.parent.name, target.name)

    def _is_kept(self, name: str, version: str) -> bool:
        return (self.directory / name / version / name).is_file()

    def _warn_once(self, file: ModelFile, exc: OSError) -> None:
        key = (file.name, file.version)
        with self._warned_guard:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(
            "model %s version %s not kept in %s (it serves all the same): %s",
            file.name,
            file.version,
            self.directory,
            exc,
        )

    # -- reading ----------------------------------------------------------------------

    def versions(self, name: str) -> list[KeptVersion]:
        """The kept versions of the file `name`, newest first; [] for a name never kept."""
        check_name(name)
        folder = self.directory / name
        try:
            entries = os.listdir(folder)
        except OSError:
            return []
        found: list[tuple[int, KeptVersion]] = []
        for entry in entries:
            if not is_version(entry):
                continue  # a copy in progress, a version being removed, or foreign
            try:
                info = os.stat(folder / entry / name)
            except OSError:
                continue  # a folder without its content: never complete
            if stat.S_ISREG(info.st_mode):
                found.append((info.st_mtime_ns, _kept(name, entry, info)))
        found.sort(key=lambda item: (item[0], item[1].version), reverse=True)
        return [kept for _, kept in found]

    def names(self) -> list[str]:
        """The file names that have kept versions, sorted."""
        try:
            entries = sorted(os.listdir(self.directory))
        except OSError:
            return []
        return [entry for entry in entries if is_candidate(entry) and self.versions(entry)]

    def file(self, name: str, version: str) -> ModelFile:
        """The kept version `version` of the file `name`, as a ModelFile to load."""
        check_name(name)
        missing = ModelNotFound(f"{name} has no kept version {version!r}")
        if not is_version(version):
            raise missing  # a version is never a path: no '..', no separators
        path = self.directory / name / version / name
        try:
            info = path.stat()
        except OSError:
            raise missing from None
        if not stat.S_ISREG(info.st_mode) or not inside(self.directory, path):
            raise missing
        try:
            kind = detect(path)
        except OSError:
            raise missing from None  # removed meanwhile
        kept = _kept(name, version, info)
        return ModelFile(
            name=name,
            path=path,
            type=kind.type,
            format=kind.format,
            size_bytes=kept.size_bytes,
            modified=kept.first_seen,
            version=version,
            meta=read_meta(sidecar_path(path), kind),
            stat_key=(info.st_ino, info.st_size, info.st_mtime_ns),
        )

    # -- pruning ----------------------------------------------------------------------

    def prune(self, name: str, protected: Collection[str]) -> list[str]:
        """Remove the kept versions of `name` beyond the newest `keep`, except those in
        `protected`; the versions removed."""
        removed = []
        for old in self.versions(name)[self.keep :]:
            if old.version not in protected and self._discard(self.directory / name / old.version):
                log.info("model %s version %s removed from the archive", name, old.version)
                removed.append(old.version)
        self._sweep(self.directory / name)
        return removed

    def _discard(self, folder: Path) -> bool:
        # Renamed out of sight first, so a reader finds a version whole or not at all.
        trash = folder.with_name(f"{_TRASH}{folder.name}-{uuid.uuid4().hex}")
        try:
            os.rename(folder, trash)
        except OSError:
            return False  # removed by another process first, or the disk refuses
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _sweep(self, folder: Path) -> None:
        """Remove what crashed processes left: trash, and copies abandoned long ago."""
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        now = time.time()
        for entry in entries:
            try:
                abandoned = entry.name.startswith(_STAGING) and now - entry.stat().st_mtime > _ABANDONED_S
            except OSError:
                continue
            if entry.name.startswith(_TRASH) or abandoned:
                shutil.rmtree(entry.path, ignore_errors=True)


def _kept(name: str, version: str, info: os.stat_result) -> KeptVersion:
    first_seen = datetime.fromtimestamp(info.st_mtime_ns / 1e9, UTC)
    return KeptVersion(name=name, version=version, first_seen=first_seen, size_bytes=info.st_size)


def _copy_file(source: Path, target: Path) -> str:
    """Copy `source` to the new file `target`, durably; the version of what was written.

    The hash is of the bytes written, so it is the copy's: a source rewritten during the
    copy shows as another version, never as the expected one.
    """
    digest = hashlib.sha256()
    with source.open("rb") as reader, target.open("xb") as writer:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        # Its mtime is when it was first kept, to the nanosecond: versions kept one right
        # after the other still sort newest first.
        now = time.time_ns()
        os.utime(writer.fileno(), ns=(now, now))
        os.fsync(writer.fileno())
    return version_of(digest)


def _fsync_directory(folder: Path) -> None:
    # The rename is durable once its directory is; a filesystem that cannot say is let be.
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
