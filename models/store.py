"""The model files of MODEL_DIR: listing, safe names, and a per-process cache of loaded models.

A model's name is its file name (or its bare stem where that is unambiguous), and a
name never reaches outside the directory. Listing tells each file's type from its
content (`models.formats`) without importing an ML library, and hashes each file once
per (inode, size, mtime) for its version.

`load` keeps one loaded model per file and follows the file as it changes: a new
version (a new content hash) is loaded beside the old one and swapped in whole, so a
caller gets the old model or the new one, never a half-built one. A file modified less
than `settle_s` ago may still be being written and is left alone until it settles; a
version that fails to load (the library refuses it, or its content is not a model at
all) is logged once, remembered per name (`failures`) and the previous version keeps
serving: one bad file affects its own name only.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import logging
import math
import os
import stat
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy

from models.base import (
    INPUT_KINDS,
    Adapter,
    InvalidModelName,
    ModelError,
    ModelLoading,
    ModelNotFound,
    ModelRefused,
    ModelUnloadable,
    check_type,
)
from models.formats import MODEL_SUFFIXES, Kind, detect, is_candidate
from models.sidecar import read_sidecar, sidecar_path
from models.threads import limit_threads
from models.validation import features_array

log = logging.getLogger(__name__)

# Imported only when a model of the type is loaded: a process serving no LSTM never imports torch.
_ADAPTERS = {
    "xgboost": ("models.xgboost_adapter", "XGBoostAdapter"),
    "lightgbm": ("models.lightgbm_adapter", "LightGBMAdapter"),
    "lstm": ("models.torch_adapter", "TorchAdapter"),
}
_MAX_NAME = 255
_HASH_CHUNK = 1 << 20
_CLOCK_SKEW_S = 60.0

StatKey = tuple[int, int, int]  # (inode, size, mtime_ns)
SIDECAR_FACTS = (
    "n_features",
    "feature_names",
    "description",
    "sequence_length",
    "fixed_sequence_length",
    "max_batch",
    "batch_wait_s",
)


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: Path
    type: str
    format: str
    size_bytes: int
    modified: datetime
    version: str  # the first 16 hex digits of the content's SHA-256
    meta: dict[str, Any]
    stat_key: StatKey = field(default=(0, 0, 0), repr=False, compare=False)

    @property
    def input_kind(self) -> str:
        return INPUT_KINDS[self.type]

    @classmethod
    def of_description(cls, directory: Path, facts: dict[str, Any]) -> ModelFile:
        """The file a loaded model's `describe()` tells of: what a worker holds, for a
        process that does not load models (the web) once the file on disk has changed."""
        return cls(
            name=facts["name"],
            path=directory / facts["name"],
            type=facts["type"],
            format=facts["format"],
            size_bytes=facts["size_bytes"],
            modified=datetime.fromisoformat(facts["modified"]),
            version=facts["version"],
            meta={key: facts[key] for key in SIDECAR_FACTS if facts.get(key) is not None},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe metadata; never the server path."""
        facts: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "input_kind": self.input_kind,
            "size_mb": round(self.size_bytes / 1_000_000, 3),
            "size_bytes": self.size_bytes,
            "modified": self.modified.isoformat(),
            "version": self.version,
        }
        for key in SIDECAR_FACTS:
            if key in self.meta:
                facts[key] = self.meta[key]
        return facts


@dataclass(frozen=True)
class LoadedModel:
    file: ModelFile
    adapter: Adapter

    def predict(self, features: Any) -> numpy.ndarray:
        """Predictions for `features` (parsed JSON or an array), checked against the model first."""
        return self.adapter.predict(features_array(self.adapter, features))

    def describe(self) -> dict[str, Any]:
        return {**self.file.to_dict(), **self.adapter.describe()}


@dataclass(frozen=True)
class _Probe:
    key: StatKey
    kind: Kind | None
    version: str
    refused: ModelRefused | None


class ModelStore:
    def __init__(
        self,
        directory: Path | str,
        allow_pickle: bool = False,
        settle_s: float = 1.0,
        recheck_s: float = 0.25,
    ):
        self.directory = Path(os.path.abspath(directory))
        self.allow_pickle = allow_pickle
        self.settle_s = settle_s
        # A name resolved less than recheck_s ago is not looked up on disk again: the
        # stat and realpath calls cost more than a small prediction.
        self.recheck_s = recheck_s
        self._resolved: dict[str, tuple[float, ModelFile]] = {}
        self._probes: dict[str, _Probe] = {}
        self._sidecars: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._loaded: dict[str, LoadedModel] = {}
        self._failures: dict[str, tuple[str, ModelError]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- files ----------------------------------------------------------------------

    def list(self) -> list[ModelFile]:
        """Every servable model file directly in the directory, by name."""
        return self.scan()[0]

    def content_version(self, name: str) -> str | None:
        """The version of the file called `name` as last read, a model or not."""
        probe = self._probes.get(name)
        return probe.version if probe is not None else None

    def scan(self) -> tuple[list[ModelFile], dict[str, tuple[str, ModelRefused]]]:
        """`list()`, and name -> (version, why) of every file named as a model whose content
        is not one: shown with its reason, never served."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return [], {}
        files, refused = [], {}
        for name in names:
            if not is_candidate(name):
                continue
            try:
                files.append(self._file(name))
            except ModelRefused as exc:  # not a model (warned once per content)
                version = self.content_version(name)
                if version is not None:
                    refused[name] = (version, exc)
            except ModelNotFound:
                continue  # a folder, an escaping symlink, or gone meanwhile
        return files, refused

    def resolve(self, name: str) -> ModelFile:
        """The model file called `name`, or whose stem is `name` when only one has it."""
        now = time.monotonic()
        cached = self._resolved.get(name)
        if cached is not None and now - cached[0] < self.recheck_s:
            return cached[1]
        file = self._resolve(name)
        self._resolved[name] = (now, file)
        return file

    def _resolve(self, name: str) -> ModelFile:
        check_name(name)
        if is_candidate(name):
            return self._file(name)
        if name.lower().endswith(MODEL_SUFFIXES):
            raise ModelNotFound(f"no model named {name!r}")  # a file name, not a stem
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            entries = []
        matches = []
        for entry in sorted(entries):
            if is_candidate(entry) and Path(entry).stem == name:
                try:
                    matches.append(self._file(entry))
                except (ModelNotFound, ModelRefused):
                    continue
        if len(matches) == 1:
            return matches[0]
        if matches:
            candidates = [match.name for match in matches]
            raise ModelNotFound(
                f"model name {name!r} is ambiguous: {', '.join(candidates)}; use the full file name",
                {"candidates": candidates},
            )
        raise ModelNotFound(f"no model named {name!r}")

    def _file(self, name: str) -> ModelFile:
        path = self.directory / name
        try:
            info = path.stat()
        except OSError as exc:
            raise ModelNotFound(f"no model named {name!r}") from exc
        if not stat.S_ISREG(info.st_mode) or not self._inside(path):
            raise ModelNotFound(f"no model named {name!r}")  # a symlink out is as if absent
        probe = self._probes.get(name)
        if probe is None or probe.key != _key(info):
            probe = self._probe(path)
        if probe.refused is not None or probe.kind is None:
            raise copy.copy(probe.refused) if probe.refused else ModelNotFound(f"no model named {name!r}")
        return ModelFile(
            name=name,
            path=path,
            type=probe.kind.type,
            format=probe.kind.format,
            size_bytes=probe.key[1],
            modified=datetime.fromtimestamp(probe.key[2] / 1e9, UTC),
            version=probe.version,
            meta=dict(self._meta(path, probe.kind)),  # a copy: callers may not change the cache
            stat_key=probe.key,
        )

    def _probe(self, path: Path) -> _Probe:
        # Key and hash come from one open file, so they describe the same content even if
        # the file is replaced meanwhile; a change during the probe leaves it uncached.
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            key = _key(os.fstat(handle.fileno()))
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        kind: Kind | None = None
        refused = None
        try:
            kind = detect(path)
        except ModelRefused as exc:
            refused = exc
            log.warning("model file %s is not served: %s", path.name, exc.message)
        except OSError:
            pass  # gone meanwhile
        probe = _Probe(key, kind, digest.hexdigest()[:16], refused)
        try:
            if _key(path.stat()) == key:
                self._probes[path.name] = probe
        except OSError:
            pass
        return probe

    def _meta(self, path: Path, kind: Kind) -> dict[str, Any]:
        side = sidecar_path(path)
        try:
            side_key: Any = (_key(side.stat()), kind.type)
        except OSError:
            return {}
        cached = self._sidecars.get(path.name)
        if cached is not None and cached[0] == side_key:
            return cached[1]
        meta = read_sidecar(side)
        if "type" in meta and meta["type"] != kind.type:
            log.warning(
                "sidecar %s: type %r ignored; the file is a %s model", side.name, meta["type"], kind.type
            )
            meta = {k: v for k, v in meta.items() if k != "type"}
        self._sidecars[path.name] = (side_key, meta)
        return meta

    def _inside(self, path: Path) -> bool:
        root = os.path.realpath(self.directory)
        real = os.path.realpath(path)
        return real != root and os.path.commonpath([root, real]) == root

    # -- loaded models --------------------------------------------------------------

    def load(self, name: str, model_type: str | None = None) -> LoadedModel:
        """The loaded model called `name`, at the file's current version once it has settled.

        `model_type`, when given, must name the file's type (ModelTypeMismatch otherwise).
        """
        try:
            file = self.resolve(name)
        except ModelNotFound:
            self._forget_missing()
            raise
        except ModelRefused as refused:
            # Its content is no model (any more): the version loaded before keeps serving.
            current = self._loaded.get(name)
            self._note_refusal(name, refused)
            if current is None:
                raise
            check_type(current.file.type, model_type)
            return current
        check_type(file.type, model_type)
        try:
            self._check_pickle(file)
        except ModelRefused as refused:
            self._failures[file.name] = (file.version, refused)
            raise
        current = self._loaded.get(file.name)
        if _serves(current, file):
            return current
        if self._settling(file):
            if current is not None:
                return current  # a replaced file: the old version answers until the new one loads
            raise ModelLoading(
                f"{file.name} is still being written and not loaded yet; try again in a moment",
                {"retry_after_s": max(1, math.ceil(self.settle_s))},
            )
        lock = self._lock(file.name)
        # While one thread loads a new version, the others keep answering with the old one.
        if not lock.acquire(blocking=current is None):
            return current
        try:
            current = self._loaded.get(file.name)
            if _serves(current, file):
                return current
            return self._load_version(file, current)
        finally:
            lock.release()

    def preload(self) -> dict[str, str | None]:
        """Load every listed model (and drop those that left the directory): name -> None
        if loaded, else why not. Never raises."""
        results: dict[str, str | None] = {}
        try:
            self._forget_missing()
            files, refused = self.scan()
        except Exception:
            log.exception("cannot list the model directory")
            return results
        for name, (_, error) in refused.items():
            if self._note_refusal(name, error):
                results[name] = error.message
        for file in files:
            try:
                served = self.load(file.name)
                failure = self._failures.get(file.name)
                results[file.name] = None
                if served.file.version == file.version:
                    self._failures.pop(file.name, None)  # back to a version that loads
                elif failure is not None and failure[0] == file.version:
                    results[file.name] = failure[1].message  # the previous version serves; say why
            except ModelError as exc:
                results[file.name] = exc.message
            except Exception:
                log.exception("preloading %s failed", file.name)
                results[file.name] = "unexpected error; see the server log"
        return results

    def loaded(self) -> dict[str, str]:
        """name -> version of every model this process has loaded."""
        return {name: model.file.version for name, model in list(self._loaded.items())}

    def failures(self) -> dict[str, tuple[str, ModelError]]:
        """name -> (version, why) of every file whose current content did not load here
        (a version loaded before, if any, serves meanwhile)."""
        return dict(self._failures)

    def loaded_model(self, name: str) -> LoadedModel | None:
        """The model this process holds under the file name `name`, as it is: no lookup on
        disk, no load."""
        return self._loaded.get(name)

    def _load_version(self, file: ModelFile, current: LoadedModel | None) -> LoadedModel:
        failure = self._failures.get(file.name)
        if failure is not None and failure[0] == file.version:
            if current is not None:
                return current
            raise copy.copy(failure[1])
        try:
            adapter = self._build(file)
        except Exception as exc:
            error = exc if isinstance(exc, ModelError) else _unloadable(file)
            self._failures[file.name] = (file.version, error)
            log.warning(
                "model %s version %s not loaded%s: %s",
                file.name,
                file.version,
                f"; version {current.file.version} keeps serving" if current else "",
                error.message if error is exc else f"{type(exc).__name__}: {exc}",
            )
            if current is not None:
                return current
            raise error from None
        if current is not None and _stat_key(file.path) != file.stat_key:
            return current  # changed while loading: what was read may not be this version
        loaded = LoadedModel(replace(file, type=adapter.type), adapter)
        self._loaded[file.name] = loaded  # the swap: one assignment
        self._failures.pop(file.name, None)
        log.info("model %s loaded (%s, %s, version %s)", file.name, file.type, file.format, file.version)
        return loaded

    def _build(self, file: ModelFile) -> Adapter:
        if file.format == "pickle":
            self._check_pickle(file)
            from models.pickle_adapter import load_pickled

            adapter = load_pickled(file.path)
        else:
            limit_threads()  # before the adapter imports its library, if it is the first
            module, class_name = _ADAPTERS[file.type]
            adapter = getattr(importlib.import_module(module), class_name).load(file.path)
        adapter.apply_meta(file.meta, file.name)
        return adapter

    def _check_pickle(self, file: ModelFile) -> None:
        # Refused before the file is opened for loading: unpickling can run any code.
        if file.format == "pickle" and not self.allow_pickle:
            raise ModelRefused(
                f"{file.name} is a pickle, and pickled models are refused; "
                "save it with the library's own save_model, or set ALLOW_PICKLE_MODELS"
            )

    def _settling(self, file: ModelFile) -> bool:
        return self._recent(file.stat_key)

    def _recent(self, key: StatKey) -> bool:
        age = time.time() - key[2] / 1e9
        # A modification time far in the future is clock skew, not a write in progress.
        return -_CLOCK_SKEW_S < age < self.settle_s

    def _note_refusal(self, name: str, refused: ModelRefused) -> bool:
        # A file still being written may not look like a model yet: not a failure until it settles.
        probe = self._probes.get(name)
        if probe is None or probe.refused is None or self._recent(probe.key):
            return False
        self._failures[name] = (probe.version, refused)
        return True

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _forget_missing(self) -> None:
        for name in list(self._loaded):
            if not (self.directory / name).is_file():
                self._loaded.pop(name, None)
                self._failures.pop(name, None)
                self._probes.pop(name, None)
                self._sidecars.pop(name, None)
                log.info("model %s removed from the directory; dropped", name)
        for name in list(self._failures):
            if not (self.directory / name).is_file():
                self._failures.pop(name, None)  # a file that never loaded, gone


def check_name(name: Any) -> None:
    """Raise InvalidModelName unless `name` is a plain, visible file name."""
    if not isinstance(name, str) or not name:
        raise InvalidModelName("a model name must be a non-empty string")
    if len(name) > _MAX_NAME:
        raise InvalidModelName(f"a model name has at most {_MAX_NAME} characters")
    if "\x00" in name:
        raise InvalidModelName("a model name must not contain NUL")
    if "/" in name or "\\" in name or os.path.isabs(name):
        raise InvalidModelName("a model name is a file name in the model directory, without a path")
    if name.startswith("."):
        raise InvalidModelName("a model name must not start with '.' (relative or hidden names)")


def _serves(current: LoadedModel | None, file: ModelFile) -> bool:
    return current is not None and current.file.version == file.version and current.file.meta == file.meta


def _key(info: os.stat_result) -> StatKey:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _stat_key(path: Path) -> StatKey | None:
    try:
        return _key(path.stat())
    except OSError:
        return None


def _unloadable(file: ModelFile) -> ModelUnloadable:
    # Library errors carry server paths and native stack traces: logged, never shown.
    return ModelUnloadable(
        f"{file.name} cannot be loaded as a {file.type} model ({file.format}); "
        "the file may be damaged or incomplete (details in the server log)"
    )
