"""A model's kept versions as the web sees them: which exist, which a worker holds, and the
file facts of one asked for by `model_version` (the web never loads a model).

A version is kept by the predict workers once it has loaded (`models.archive`); the file's
current version is listed too before a worker has kept it, so a name always shows the
version its file holds.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db import releases as stored
from models import (
    ModelArchive,
    ModelError,
    ModelFile,
    ModelNotFound,
    ModelRefused,
    ModelStore,
    check_name,
    is_version,
)
from tasks.web_clients import PredictionClient
from web.errors import ApiError
from web.model_states import NO_PINS, Pins

DEFAULT_THRESHOLD = 0.5


def _store() -> ModelStore:
    return current_app.extensions["model_store"]


def _archive() -> ModelArchive:
    return current_app.extensions["model_archive"]


def _client() -> PredictionClient:
    return current_app.extensions["predictions"]


def file_name(name: str) -> str:
    """The file name a model is known by: its file's in MODEL_DIR (the stem resolved), or
    a name whose file is gone but whose versions are kept. 404 for a name never seen."""
    try:
        return _store().resolve(name).name
    except ModelRefused:
        return name  # a file that is no model (any more): its kept versions still count
    except ModelNotFound:
        check_name(name)  # a path or a traversal is a 400, as on every model route
        if _archive().versions(name):
            return name
        raise


def _current_file(name: str) -> ModelFile | None:
    """The file in MODEL_DIR now (None when it is gone or no model)."""
    try:
        return _store().resolve(name)
    except (ModelNotFound, ModelRefused):
        return None


def current_version(name: str) -> str | None:
    file = _current_file(name)
    return file.version if file is not None else None


def version_file(name: str, version: str) -> ModelFile:
    """The facts of `name` at `version` (the file's, or the kept copy's); 404 `version_not_found`."""
    file = _current_file(name)
    if file is not None and file.version == version:
        return file
    if is_version(version):
        with contextlib.suppress(ModelError):  # not kept, or a kept copy that is no model (damaged)
            return _archive().file(name, version)
    raise ApiError(
        404, "version_not_found", f"{name} has no kept version {version!r}", {"model_version": version}
    )


def pins(session: Session, archive: ModelArchive | None = None) -> Pins:
    """The champions the releases pin now; none while the database does not answer (the
    files' view then, which /readyz shows beside the database's failure)."""
    try:
        champions = stored.pinned_champions(session)
    except SQLAlchemyError:
        session.rollback()
        return NO_PINS
    archive = archive or _archive()

    def kept_file(name: str, version: str) -> ModelFile | None:
        if is_version(version):
            with contextlib.suppress(ModelError):  # not kept, or damaged
                return archive.file(name, version)
        return None

    return Pins(champions, kept_file)


def known_version(name: str, version: str) -> bool:
    """Whether `version` of `name` can answer: the file's own, or a kept one."""
    try:
        version_file(name, version)
    except ApiError:
        return False
    return True


def version_entries(name: str) -> list[dict[str, Any]]:
    """Every version of `name` that can answer, newest first."""
    reports = _client().model_reports()
    held = {
        key.rpartition("@")[2] for key in (*reports.loaded, *reports.beside) if key.rpartition("@")[0] == name
    }
    current = _current_file(name)
    kept = {
        version.version: (version.first_seen, version.size_bytes) for version in _archive().versions(name)
    }
    if current is not None:
        kept.setdefault(current.version, (current.modified, current.size_bytes))  # not kept yet
    entries = [
        {
            "model_version": version,
            "first_seen": first_seen,
            "size_mb": round(size_bytes / 1_000_000, 3),
            "loaded": version in held,
            "current": current is not None and version == current.version,
        }
        for version, (first_seen, size_bytes) in kept.items()
    ]
    return sorted(entries, key=lambda entry: entry["first_seen"], reverse=True)


def threshold_of(name: str) -> float:
    """The model's decision threshold: its sidecar's `decision_threshold`, else 0.5."""
    file = _current_file(name)
    return (
        float(file.meta.get("decision_threshold", DEFAULT_THRESHOLD))
        if file is not None
        else DEFAULT_THRESHOLD
    )
