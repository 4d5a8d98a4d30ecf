"""A model's kept versions as the web sees them: which exist, which a worker holds, and the
file facts of one asked for by `model_version` (the web never loads a model).

A version is kept by the predict workers once it has loaded (`models.archive`); the file's
current version is listed too before a worker has kept it, so a name always shows the
version its file holds.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

from flask import current_app

from models import ModelArchive, ModelError, ModelFile, ModelNotFound, ModelRefused, ModelStore, check_name
from tasks.web_clients import ModelReports, PredictionClient
from web.errors import ApiError

_VERSION = re.compile(r"[0-9a-f]{16}")


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


def current_version(name: str) -> str | None:
    """The version of the file in MODEL_DIR now (None when it is gone or no model)."""
    try:
        return _store().resolve(name).version
    except (ModelNotFound, ModelRefused):
        return None


def known_version(name: str, version: str) -> bool:
    """Whether `version` of `name` can answer: the file's own, or a kept one."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        return False
    if version == current_version(name):
        return True
    try:
        _archive().file(name, version)
    except ModelError:  # not kept, or a kept copy that is no model (damaged on disk)
        return False
    return True


def version_file(name: str, version: str) -> ModelFile:
    """The facts of `name` at `version` (the file's, or the kept copy's); 404 `version_not_found`."""
    try:
        file = _store().resolve(name)
        if file.version == version:
            return file
    except (ModelNotFound, ModelRefused):
        pass
    if isinstance(version, str) and _VERSION.fullmatch(version):
        try:
            return _archive().file(name, version)
        except ModelError:
            pass
    raise ApiError(
        404, "version_not_found", f"{name} has no kept version {version!r}", {"model_version": version}
    )


def described(file: ModelFile, reports: ModelReports) -> dict[str, Any]:
    """What a worker reported of the file's version, else its own facts (sidecar)."""
    return reports.description(file.name, file.version) or file.to_dict()


def version_entries(name: str) -> list[dict[str, Any]]:
    """Every version of `name` that can answer, newest first."""
    reports = _client().model_reports()
    held = {
        version
        for key in (*reports.loaded, *reports.beside)
        for version in [_version_of(key, name)]
        if version
    }
    current = None
    with contextlib.suppress(ModelNotFound, ModelRefused):
        current = _store().resolve(name)
    entries = [
        {
            "model_version": kept.version,
            "first_seen": iso(kept.first_seen),
            "size_mb": round(kept.size_bytes / 1_000_000, 3),
            "loaded": kept.version in held,
            "current": current is not None and kept.version == current.version,
        }
        for kept in _archive().versions(name)
    ]
    if current is not None and all(entry["model_version"] != current.version for entry in entries):
        entries.insert(
            0,
            {
                "model_version": current.version,
                "first_seen": iso(current.modified),
                "size_mb": round(current.size_bytes / 1_000_000, 3),
                "loaded": current.version in held,
                "current": True,
            },
        )
    return sorted(entries, key=lambda entry: datetime.fromisoformat(entry["first_seen"]), reverse=True)


def _version_of(key: str, name: str) -> str | None:
    model, _, version = key.rpartition("@")
    return version if model == name else None


DEFAULT_THRESHOLD = 0.5


def threshold_of(name: str) -> float:
    """The model's decision threshold: its sidecar's `decision_threshold`, else 0.5."""
    try:
        return float(_store().resolve(name).meta.get("decision_threshold", DEFAULT_THRESHOLD))
    except ModelError:
        return DEFAULT_THRESHOLD


def iso(moment: datetime | None) -> str | None:
    """A time as the API writes times: ISO 8601, in UTC (jsonify alone writes an HTTP date)."""
    return moment.astimezone(UTC).isoformat() if moment is not None else None
