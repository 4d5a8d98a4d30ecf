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

With a `ModelArchive`, every version that loads is also kept there by content, and
`load(name, version=...)` serves a version other than the file's current one: loaded
from the archive on demand into a small LRU (`max_extra_versions`), or held loaded for
good (`hold`: a release's champion and challenger). A version is a content hash, so a
kept version is the same model for as long as it is kept.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import logging
import math
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Hashable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from models.archive import ModelArchive  # which imports this module: for typing only

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
_VERSION_DIGITS = 16
_VERSION = re.compile(rf"[0-9a-f]{{{_VERSION_DIGITS}}}")

StatKey = tuple[int, int, int]  # (inode, size, mtime_ns)
VersionKey = tuple[str, str]  # (file name, version)
SIDECAR_FACTS = (
    "n_features",
    "feature_names",
    "description",
    "sequence_length",
    "fixed_sequence_length",
    "max_batch",
    "batch_wait_s",
    "decision_threshold",
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
        archive: ModelArchive | None = None,
        max_extra_versions: int = 4,
    ):
        if max_extra_versions < 0:
            raise ValueError("max_extra_versions must be 0 or more")
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
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()  # also guards _extra and _held
        self.archive = archive
        self.max_extra_versions = max_extra_versions
        # Loaded versions other than their file's current one, least recently used first.
        # Held ones stay whatever their use; only the others count against max_extra_versions.
        self._extra: OrderedDict[VersionKey, LoadedModel] = OrderedDict()
        self._held: frozenset[VersionKey] = frozenset()
        self._kept_failures: dict[VersionKey, ModelError] = {}

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
        probe = _Probe(key, kind, version_of(digest), refused)
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
        meta = read_meta(side, kind)
        self._sidecars[path.name] = (side_key, meta)
        return meta

    def _inside(self, path: Path) -> bool:
        return inside(self.directory, path)

    # -- loaded models --------------------------------------------------------------

    def load(self, name: str, model_type: str | None = None, version: str | None = None) -> LoadedModel:
        """The loaded model called `name`, at the file's current version once it has settled,
        or at `version` when given (see `_load_pinned`).

        `model_type`, when given, must name the file's type (ModelTypeMismatch otherwise).
        """
        if version is not None:
            return self._load_pinned(name, version, model_type)
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
        results.update(self._preload_held())
        return results

    def _preload_held(self) -> dict[str, str | None]:
        # A held pair served as its file's current version is reported under the file's name.
        results: dict[str, str | None] = {}
        for name, version in sorted(self._held):
            current = self._loaded.get(name)
            if current is not None and current.file.version == version:
                continue
            key = f"{name}@{version}"
            try:
                self.load(name, version=version)
                results[key] = None
            except ModelError as exc:
                results[key] = exc.message
            except Exception:
                log.exception("preloading %s failed", key)
                results[key] = "unexpected error; see the server log"
        return results

    def hold(self, pairs: Collection[tuple[str, str]]) -> None:
        """Keep these (file name, version) pairs loaded for good, in place of those held
        before (which become ordinary LRU members); `preload` loads the missing ones."""
        with self._guard:
            self._held = frozenset((name, version) for name, version in pairs)
            self._evict()

    def loaded(self) -> dict[str, str]:
        """name -> version of every model this process has loaded at its file's current version."""
        return {name: model.file.version for name, model in list(self._loaded.items())}

    def loaded_versions(self) -> dict[str, LoadedModel]:
        """Every model this process holds, current versions and extra ones, as
        "name@version" -> model."""
        models = {f"{name}@{model.file.version}": model for name, model in list(self._loaded.items())}
        with self._guard:
            models.update({f"{name}@{version}": model for (name, version), model in self._extra.items()})
        return models

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
            adapter = self._extra_adapter(file) or self._build(file)
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
        self._drop_extra((file.name, file.version))  # current now: held once, under its name
        if current is not None and current.file.version != file.version:
            self._retire(current)
        log.info("model %s loaded (%s, %s, version %s)", file.name, file.type, file.format, file.version)
        self._keep(file)
        return loaded

    # -- versions other than the current one ------------------------------------------

    def _load_pinned(self, name: str, version: str, model_type: str | None) -> LoadedModel:
        """`name` at `version`: the current model if it is that version, else a loaded extra
        version, else the file (if that is its current content) or the archive."""
        if not is_version(version):
            raise ModelNotFound(f"{name} has no version {version!r}; a version is 16 hexadecimal digits")
        file_name, file = self._pinned_file(name)
        model = self._loaded_version(file_name, version)
        if model is None:
            if file is not None and file.version == version:
                model = self._load_current_as(file)
            else:
                model = self._load_kept(file_name, version)
        check_type(model.file.type, model_type)
        return model

    def _pinned_file(self, name: str) -> tuple[str, ModelFile | None]:
        """The file name `name` stands for, and its file unless it is gone or no model now."""
        try:
            file = self.resolve(name)
        except (ModelNotFound, ModelRefused):
            # Deleted, or no model any more: its kept versions still serve, by full file name.
            if not is_candidate(name):
                raise
            return name, None
        return file.name, file

    def _loaded_version(self, name: str, version: str) -> LoadedModel | None:
        current = self._loaded.get(name)
        if current is not None and current.file.version == version:
            return current
        key = (name, version)
        with self._guard:
            model = self._extra.get(key)
            if model is not None:
                self._extra.move_to_end(key)  # just used: the last to be evicted
            return model

    def _load_current_as(self, file: ModelFile) -> LoadedModel:
        # The file's current content is the version asked for: loaded the usual way, and
        # so kept in the archive too.
        model = self.load(file.name)
        if model.file.version == file.version:
            return model
        failure = self._failures.get(file.name)
        if failure is not None and failure[0] == file.version:
            raise copy.copy(failure[1])
        raise ModelLoading(
            f"{file.name} version {file.version} is not loaded yet; try again in a moment",
            {"retry_after_s": max(1, math.ceil(self.settle_s))},
        )

    def _load_kept(self, name: str, version: str) -> LoadedModel:
        if self.archive is None:
            raise ModelNotFound(f"{name} has no version {version!r} here; only its current version serves")
        key = (name, version)
        with self._lock(key):  # one load per version, however many ask at once
            model = self._loaded_version(name, version)
            if model is not None:
                return model
            failure = self._kept_failures.get(key)
            if failure is not None:  # a kept version never changes: neither does its failure
                raise copy.copy(failure)
            file = self.archive.file(name, version)
            try:
                self._check_pickle(file)
                adapter = self._build(file)
            except Exception as exc:
                error = exc if isinstance(exc, ModelError) else _unloadable(file)
                self._kept_failures[key] = error
                log.warning(
                    "model %s kept version %s not loaded: %s",
                    name,
                    version,
                    error.message if error is exc else f"{type(exc).__name__}: {exc}",
                )
                raise error from None
            model = LoadedModel(replace(file, type=adapter.type), adapter)
            self._remember_extra(model)
            log.info(
                "model %s version %s loaded from the archive (%s, %s)", name, version, file.type, file.format
            )
            return model

    def _extra_adapter(self, file: ModelFile) -> Adapter | None:
        # A file back at a version loaded on the side (a rollback) needs no second load.
        with self._guard:
            extra = self._extra.get((file.name, file.version))
        return extra.adapter if _serves(extra, file) else None

    def _remember_extra(self, model: LoadedModel) -> None:
        key = (model.file.name, model.file.version)
        with self._guard:
            self._extra[key] = model
            self._extra.move_to_end(key)
            self._evict()

    def _drop_extra(self, key: VersionKey) -> None:
        with self._guard:
            self._extra.pop(key, None)

    def _retire(self, model: LoadedModel) -> None:
        """A model no longer its file's current version: a held one stays loaded on the
        side; any other is let go, as before there were versions."""
        if (model.file.name, model.file.version) in self._held:
            self._remember_extra(model)

    def _evict(self) -> None:
        # Called with _guard held.
        unheld = [key for key in self._extra if key not in self._held]
        for key in unheld[: max(0, len(unheld) - self.max_extra_versions)]:
            del self._extra[key]
            log.info("model %s version %s unloaded (least recently used)", *key)

    def _held_versions(self, name: str) -> set[str]:
        """The versions of `name` this store holds or must hold: never pruned."""
        with self._guard:
            versions = {version for held, version in self._held if held == name}
            versions.update(version for held, version in self._extra if held == name)
        current = self._loaded.get(name)
        if current is not None:
            versions.add(current.file.version)
        return versions

    def _keep(self, file: ModelFile) -> None:
        # The archive never gets in serving's way: a full or read-only disk is only logged.
        if self.archive is None:
            return
        try:
            self.archive.keep_version(file)
            self.archive.prune(file.name, self._held_versions(file.name))
        except Exception:
            log.exception("keeping model %s version %s failed; serving goes on", file.name, file.version)

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

    def _lock(self, key: Hashable) -> threading.Lock:
        """The lock of a file name, or of a (name, version) pair."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _forget_missing(self) -> None:
        for name in list(self._loaded):
            if not (self.directory / name).is_file():
                model = self._loaded.pop(name, None)
                if model is not None:
                    self._retire(model)  # a held version serves on from memory
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


def is_version(value: Any) -> bool:
    """Whether `value` is a version (16 lowercase hex digits): nothing else ever becomes a path."""
    return isinstance(value, str) and _VERSION.fullmatch(value) is not None


def version_of(digest: hashlib._Hash) -> str:
    """The version of the content whose SHA-256 `digest` is."""
    return digest.hexdigest()[:_VERSION_DIGITS]


def read_meta(side: Path, kind: Kind) -> dict[str, Any]:
    """The sidecar `side` of a model of `kind`: a `type` that contradicts the content is dropped."""
    meta = read_sidecar(side)
    if "type" in meta and meta["type"] != kind.type:
        log.warning("sidecar %s: type %r ignored; the file is a %s model", side.name, meta["type"], kind.type)
        meta = {k: v for k, v in meta.items() if k != "type"}
    return meta


def inside(directory: Path, path: Path) -> bool:
    """Whether `path`, symlinks followed, lies within `directory` (and is not it)."""
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    return real != root and os.path.commonpath([root, real]) == root


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
