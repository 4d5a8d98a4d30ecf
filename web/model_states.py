"""Which version answers for a model's name, as the web sees it without loading a model.

A name's file in MODEL_DIR normally answers at its own version once a predict worker has
loaded it. When the file does not load (its content is no model, or the library refuses
it), the version the workers loaded before keeps answering, as Triton's POLL mode and
KServe's previous revision do: the name shows that version with the file's load error
beside it, and a name that never loaded shows its error alone. One bad file never
touches another name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from models import ModelFile, ModelRefused, ModelStore
from tasks.web_clients import ModelReports


@dataclass(frozen=True)
class ModelState:
    name: str
    file: ModelFile | None  # what answers: the file's version, or the one kept; None: nothing
    load_error: dict[str, Any] | None = None  # {"version", "code", "message"} of the file on disk
    pinned: bool = False  # a release pins the version that answers (`file`: its kept copy)


@dataclass(frozen=True)
class Answering:
    file: ModelFile
    load_error: dict[str, Any] | None = None
    pinned: bool = False


@dataclass(frozen=True)
class Pins:
    """The champions releases pin (name -> version), and the facts of a kept version."""

    champions: Mapping[str, str]
    kept_file: Callable[[str, str], ModelFile | None]

    def apply(self, state: ModelState) -> ModelState:
        """What answers for a name whose release pins its champion: that version, whatever
        the file holds now (a file that does not load does not matter to it)."""
        champion = self.champions.get(state.name)
        if champion is None:
            return state
        if state.file is not None and state.file.version == champion:
            return ModelState(state.name, state.file, None, pinned=True)
        file = self.kept_file(state.name, champion)
        if file is None:
            error = _error(champion, "version_not_found", f"the pinned champion {champion} is not kept")
            return ModelState(state.name, None, error, pinned=True)
        return ModelState(state.name, file, None, pinned=True)


NO_PINS = Pins({}, lambda name, version: None)


def answering(store: ModelStore, name: str, reports: ModelReports, pins: Pins = NO_PINS) -> Answering:
    """What answers for the model called `name`; raises what `store.resolve` raises when no
    version of it can (unknown, or a file that is no model and never loaded)."""
    try:
        file = store.resolve(name)
    except ModelRefused as refused:
        version = store.content_version(name)
        state = _refused(store, name, version, refused, reports) if version is not None else None
        if state is not None:
            state = pins.apply(state)
        if state is None or state.file is None:
            raise
        return Answering(state.file, state.load_error, state.pinned)
    state = pins.apply(_listed(store, file, reports))
    return Answering(state.file or file, state.load_error, state.pinned and state.file is not None)


def model_states(store: ModelStore, reports: ModelReports, pins: Pins = NO_PINS) -> list[ModelState]:
    """Every model file of MODEL_DIR and every file there that is no model, by name."""
    files, refusals = store.scan()
    states = [_listed(store, file, reports) for file in files]
    for name, (version, refused) in refusals.items():
        states.append(_refused(store, name, version, refused, reports))
    return sorted((pins.apply(state) for state in states), key=lambda state: state.name)


def _listed(store: ModelStore, file: ModelFile, reports: ModelReports) -> ModelState:
    key = f"{file.name}@{file.version}"
    failure = reports.failed.get(key)
    if failure is None or key in reports.loaded:
        return ModelState(file.name, file)
    error = _error(file.version, failure["code"], failure["error"])
    kept = _kept(store, file.name, file.version, failure, reports)
    return ModelState(file.name, kept or file, error)


def _refused(
    store: ModelStore, name: str, version: str, refused: ModelRefused, reports: ModelReports
) -> ModelState:
    failure = reports.failed.get(f"{name}@{version}")
    kept = _kept(store, name, version, failure, reports)
    return ModelState(name, kept, _error(version, refused.code, refused.message))


def _kept(
    store: ModelStore, name: str, failed_version: str, failure: dict[str, Any] | None, reports: ModelReports
) -> ModelFile | None:
    # The workers say which version they kept once they have tried the file; until then
    # (a look every 2 s) they still hold the newest version they reported.
    versions = reports.versions(name)
    if failure is not None:
        kept = failure.get("serving")
    else:
        others = {version: at for version, at in versions.items() if version != failed_version}
        kept = max(others, key=others.__getitem__) if others else None
    if kept is None or kept not in versions:
        return None
    return ModelFile.of_description(store.directory, reports.loaded[f"{name}@{kept}"])


def _error(version: str, code: str, message: str) -> dict[str, Any]:
    return {"version": version, "code": code, "message": message}


def models_check(store: ModelStore, reports: ModelReports, pins: Pins = NO_PINS) -> dict[str, Any]:
    """/readyz's `models`: every model of MODEL_DIR answers at a version a predict worker
    loaded (the file's, or the previous one while a replaced file loads or does not load;
    the pinned champion, where a release pins one: missing until a worker holds it).
    A file that does not load is `degraded`, shown with its error: it takes its own name
    out of service (or keeps the last good version serving), never the stack."""
    loaded: list[dict[str, str]] = []
    missing: list[str] = []
    degraded: list[dict[str, Any]] = []
    named: list[str] = []  # the missing, as the error names them
    for state in model_states(store, reports, pins):
        if state.pinned:
            held = state.file is not None and reports.description(state.name, state.file.version)
            serving = state.file.version if held and state.file is not None else None
        else:
            serving = _serving_version(state, reports.versions(state.name))
        if serving is not None:
            loaded.append({"name": state.name, "version": serving})
        elif state.load_error is None or state.pinned:  # a pinned champion has no stand-in
            missing.append(state.name)
            version = (
                state.file.version if state.file is not None else (state.load_error or {}).get("version")
            )
            named.append(f"{state.name} (its pinned champion {version})" if state.pinned else state.name)
        if state.load_error is not None:
            degraded.append({"name": state.name, **state.load_error, "serving": serving})
    check: dict[str, Any] = {"ok": bool(loaded) and not missing, "loaded": loaded}
    if missing:
        check["missing"] = missing
        check["error"] = f"no predict worker has loaded {', '.join(named)}"
    elif not loaded:
        check["error"] = (
            "MODEL_DIR holds no model a worker loaded" if degraded else "MODEL_DIR holds no model"
        )
    if degraded:
        check["degraded"] = degraded
    return check


def _serving_version(state: ModelState, versions: dict[str, float]) -> str | None:
    if state.file is None or not versions:
        return None
    if state.load_error is not None:
        # The file's own version does not load: only a version the workers kept answers.
        return state.file.version if state.file.version != state.load_error["version"] else None
    if state.file.version in versions:
        return state.file.version
    return max(versions, key=versions.__getitem__)  # a replaced file still loading: the newest reported
