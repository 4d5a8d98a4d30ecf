"""The model archive: every version that loaded stays servable, by content, after its file
is replaced or deleted; and the store's extra versions (on demand, held, LRU)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pickle
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import lightgbm
import numpy as np
import pytest
import xgboost

from models import (
    Adapter,
    InvalidModelName,
    KeptVersion,
    ModelArchive,
    ModelFile,
    ModelNotFound,
    ModelRefused,
    ModelStore,
)
from tests.support.model_zoo import close

DATA = np.random.default_rng(99).normal(size=(8, 5))
NAMES = {"xgboost": "model.json", "lightgbm": "model.txt"}


@dataclass(frozen=True)
class Trained:
    content: bytes
    expected: np.ndarray  # its predictions for DATA


@functools.cache
def trained(kind: str, seed: int) -> Trained:
    """A small real model of `kind`, different for each seed."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(300, 5))
    target = (data[:, seed % 5] > 0).astype(float)
    if kind == "xgboost":
        params = {"objective": "binary:logistic", "max_depth": 3, "seed": seed}
        booster = xgboost.train(params, xgboost.DMatrix(data, target), 4)
        return Trained(booster.save_raw(raw_format="json"), booster.predict(xgboost.DMatrix(DATA)))
    params = {"objective": "binary", "num_leaves": 4, "seed": seed, "verbose": -1}
    model = lightgbm.train(params, lightgbm.Dataset(data, target), 4)
    return Trained(model.model_to_string().encode(), model.predict(DATA))


def deploy(folder: Path, name: str, content: bytes) -> Path:
    """Replace `name` whole, as a deployment does (write aside, rename in)."""
    staged = folder / f".{name}.part"
    staged.write_bytes(content)
    os.replace(staged, folder / name)
    return folder / name


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    return models


@pytest.fixture
def archive(tmp_path: Path) -> ModelArchive:
    return ModelArchive(tmp_path / "archive", keep=10)


@pytest.fixture
def make_store(folder: Path, archive: ModelArchive) -> Callable[..., ModelStore]:
    def make(**options: object) -> ModelStore:
        # settle_s=0 and recheck_s=0: a file deployed is loaded at the next call.
        return ModelStore(folder, settle_s=0, recheck_s=0, archive=archive, **options)  # type: ignore[arg-type]

    return make


def serve_versions(store: ModelStore, folder: Path, name: str, models: list[Trained]) -> list[str]:
    """Deploy each model in turn, loading each; their versions, oldest first."""
    versions = []
    for model in models:
        deploy(folder, name, model.content)
        versions.append(store.load(name).file.version)
    return versions


# -- kept versions ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_a_file_replaced_twice_keeps_three_servable_versions(
    kind: str, folder: Path, archive: ModelArchive, make_store: Callable[..., ModelStore]
):
    name = NAMES[kind]
    models = [trained(kind, seed) for seed in (0, 1, 2)]
    store = make_store()
    versions = serve_versions(store, folder, name, models)

    kept = archive.versions(name)
    assert [k.version for k in kept] == versions[::-1]  # newest first
    assert kept[0].first_seen > kept[1].first_seen > kept[2].first_seen
    assert kept[0].first_seen.tzinfo is UTC
    assert [k.size_bytes for k in kept] == [len(m.content) for m in models[::-1]]
    assert archive.names() == [name]
    stem = Path(name).stem
    for version, model in zip(versions, models, strict=True):
        served = store.load(name, version=version)
        assert served.file.version == version
        assert close(served.predict(DATA.tolist()), model.expected)
        assert store.load(stem, version=version) is served  # cached, and by stem as well
    assert store.load(name).file.version == versions[-1]  # the current version is untouched
    assert store.loaded() == {name: versions[-1]}
    assert set(store.loaded_versions()) == {f"{name}@{version}" for version in versions}


def test_the_sidecar_is_kept_with_each_version(
    folder: Path, archive: ModelArchive, make_store: Callable[..., ModelStore]
):
    store = make_store()
    sidecar = folder / "model.json.meta.json"
    sidecar.write_text(json.dumps({"description": "first", "n_features": 5}))
    first = serve_versions(store, folder, "model.json", [trained("xgboost", 0)])[0]
    sidecar.write_text(json.dumps({"description": "second", "type": "lightgbm"}))  # a wrong type
    second = serve_versions(store, folder, "model.json", [trained("xgboost", 1)])[0]
    sidecar.unlink()
    third = serve_versions(store, folder, "model.json", [trained("xgboost", 2)])[0]

    assert archive.file("model.json", first).meta == {"description": "first", "n_features": 5}
    assert archive.file("model.json", second).meta == {"description": "second"}  # type dropped
    assert archive.file("model.json", third).meta == {}
    assert not (archive.directory / "model.json" / third / "model.json.meta.json").exists()
    assert store.load("model.json", version=first).describe()["description"] == "first"


def test_a_kept_version_describes_itself_like_a_file(folder: Path, archive: ModelArchive):
    path = deploy(folder, "model.json", trained("xgboost", 0).content)
    file = ModelStore(folder).resolve("model.json")
    assert archive.keep_version(file)
    kept = archive.file("model.json", file.version)
    assert (kept.name, kept.type, kept.format, kept.version) == (
        "model.json",
        "xgboost",
        "json",
        file.version,
    )
    assert kept.size_bytes == path.stat().st_size
    assert kept.modified == archive.versions("model.json")[0].first_seen
    assert kept.path.read_bytes() == path.read_bytes()
    with pytest.raises(ModelNotFound, match=r"model.json has no kept version '0123456789abcdef'"):
        archive.file("model.json", "0123456789abcdef")


@pytest.mark.parametrize(
    "version", ["../../etc", "0123", "../model.json", "0123456789ABCDEF", "0123456789abcde/", "", "..", 123]
)
def test_a_version_is_never_a_path(
    version: object, folder: Path, archive: ModelArchive, make_store: Callable[..., ModelStore]
):
    store = make_store()
    serve_versions(store, folder, "model.json", [trained("xgboost", 0)])
    with pytest.raises(ModelNotFound):
        archive.file("model.json", version)  # type: ignore[arg-type]
    with pytest.raises(ModelNotFound):
        store.load("model.json", version=version)  # type: ignore[arg-type]


def test_a_name_is_never_a_path(archive: ModelArchive, make_store: Callable[..., ModelStore]):
    for name in ("../model.json", "a/b.json", ".versions", ""):
        with pytest.raises(InvalidModelName):
            archive.versions(name)
        with pytest.raises(InvalidModelName):
            archive.file(name, "0123456789abcdef")
        with pytest.raises(InvalidModelName):
            make_store().load(name, version="0123456789abcdef")
    assert archive.versions("never_kept.json") == []
    assert archive.names() == []


def test_a_kept_version_linked_out_of_the_archive_is_as_if_absent(
    tmp_path: Path, folder: Path, archive: ModelArchive
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.json").write_bytes(trained("xgboost", 0).content)
    (archive.directory / "model.json").mkdir(parents=True)
    (archive.directory / "model.json" / "0123456789abcdef").symlink_to(outside)
    with pytest.raises(ModelNotFound):
        archive.file("model.json", "0123456789abcdef")


def test_a_deleted_file_keeps_its_versions_servable(folder: Path, make_store: Callable[..., ModelStore]):
    models = [trained("xgboost", 0), trained("xgboost", 1)]
    store = make_store()
    versions = serve_versions(store, folder, "model.json", models)
    (folder / "model.json").unlink()

    with pytest.raises(ModelNotFound):
        store.load("model.json")
    assert store.loaded() == {}
    for version, model in zip(versions, models, strict=True):
        assert close(store.load("model.json", version=version).predict(DATA), model.expected)
    fresh = make_store()  # another process: nothing loaded, the file gone
    assert close(fresh.load("model.json", version=versions[0]).predict(DATA), models[0].expected)


def test_without_an_archive_only_the_current_version_serves(folder: Path):
    deploy(folder, "model.json", trained("xgboost", 0).content)
    store = ModelStore(folder, settle_s=0)
    current = store.load("model.json")
    assert store.load("model.json", version=current.file.version) is current
    with pytest.raises(ModelNotFound, match="only its current version serves"):
        store.load("model.json", version="0123456789abcdef")


def test_a_kept_pickle_is_refused_unless_pickles_are_allowed(folder: Path, archive: ModelArchive):
    path = folder / "model.pkl"
    path.write_bytes(pickle.dumps(xgboost.Booster(model_file=bytearray(trained("xgboost", 0).content))))
    file = ModelStore(folder).resolve("model.pkl")
    assert archive.keep_version(file)
    path.unlink()
    store = ModelStore(folder, settle_s=0, archive=archive)
    with pytest.raises(ModelRefused, match="pickled models are refused"):
        store.load("model.pkl", version=file.version)
    allowed = ModelStore(folder, settle_s=0, archive=archive, allow_pickle=True)
    assert allowed.load("model.pkl", version=file.version).file.format == "pickle"


# -- keeping ----------------------------------------------------------------------------


def test_keeping_is_idempotent(folder: Path, archive: ModelArchive):
    deploy(folder, "model.json", trained("xgboost", 0).content)
    file = ModelStore(folder).resolve("model.json")
    assert archive.keep_version(file)
    kept = archive.directory / "model.json" / file.version / "model.json"
    before = kept.stat()
    assert archive.keep_version(file)
    after = kept.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not copied again


def test_a_file_that_changed_before_it_was_copied_is_not_kept(folder: Path, archive: ModelArchive):
    path = deploy(folder, "model.json", trained("xgboost", 0).content)
    read = ModelStore(folder).resolve("model.json")
    path.write_bytes(trained("xgboost", 1).content)  # rewritten in place after it was read
    assert archive.keep_version(read) is False
    assert archive.versions("model.json") == []
    assert os.listdir(archive.directory / "model.json") == []  # no copy left behind
    assert archive.keep_version(ModelStore(folder).resolve("model.json"))  # what it is now


def test_concurrent_keepers_leave_exactly_one_complete_copy(folder: Path, archive: ModelArchive):
    path = deploy(folder, "model.json", trained("xgboost", 0).content)
    (folder / "model.json.meta.json").write_text('{"description": "d"}')
    file = ModelStore(folder).resolve("model.json")
    keepers = [ModelArchive(archive.directory) for _ in range(8)]  # as in separate processes
    start = threading.Barrier(len(keepers))
    results: list[bool] = []

    def keep(keeper: ModelArchive) -> None:
        start.wait()
        results.append(keeper.keep_version(file))

    threads = [threading.Thread(target=keep, args=(keeper,)) for keeper in keepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [True] * len(keepers)
    assert os.listdir(archive.directory / "model.json") == [file.version]  # no staging left
    kept = archive.directory / "model.json" / file.version
    assert sorted(os.listdir(kept)) == ["model.json", "model.json.meta.json"]
    assert (kept / "model.json").read_bytes() == path.read_bytes()
    assert archive.versions("model.json") == [
        KeptVersion("model.json", file.version, archive.versions("model.json")[0].first_seen, file.size_bytes)
    ]


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory`, empty and read-only: a read-only mount as root (who writes past
    permissions), else permissions."""
    directory.mkdir(parents=True)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_read_only_archive_leaves_serving_unaffected(
    tmp_path: Path, folder: Path, caplog: pytest.LogCaptureFixture
):
    archive = ModelArchive(tmp_path / "read_only")
    model = trained("xgboost", 0)
    deploy(folder, "model.json", model.content)
    caplog.set_level(logging.WARNING, logger="models")
    with read_only(archive.directory):
        store = ModelStore(folder, settle_s=0, archive=archive)
        assert close(store.load("model.json").predict(DATA), model.expected)
        file = store.resolve("model.json")
        assert archive.keep_version(file) is False
        assert archive.keep_version(file) is False
        assert archive.versions("model.json") == []
        assert store.preload() == {"model.json": None}
    assert caplog.text.count("not kept in") == 1  # once per version, however often it is tried


# -- pruning ----------------------------------------------------------------------------


def test_prune_keeps_the_newest_and_the_protected(folder: Path, tmp_path: Path):
    archive = ModelArchive(tmp_path / "archive", keep=2)
    plain = ModelStore(folder, recheck_s=0)
    versions = []
    for seed in range(5):
        deploy(folder, "model.json", trained("xgboost", seed).content)
        file = plain.resolve("model.json")
        assert archive.keep_version(file)
        versions.append(file.version)
    assert len(archive.versions("model.json")) == 5

    removed = archive.prune("model.json", protected={versions[0]})
    assert sorted(removed) == sorted(versions[1:3])
    assert [k.version for k in archive.versions("model.json")] == [versions[4], versions[3], versions[0]]
    assert sorted(os.listdir(archive.directory / "model.json")) == sorted([versions[0], *versions[3:]])
    assert archive.prune("model.json", protected=()) == [versions[0]]


def test_the_store_prunes_what_it_does_not_hold(folder: Path, tmp_path: Path):
    archive = ModelArchive(tmp_path / "archive", keep=1)
    store = ModelStore(folder, settle_s=0, recheck_s=0, archive=archive)
    first = serve_versions(store, folder, "model.json", [trained("xgboost", 0)])[0]
    store.hold({("model.json", first)})
    later = serve_versions(store, folder, "model.json", [trained("xgboost", 1), trained("xgboost", 2)])
    assert [k.version for k in archive.versions("model.json")] == [later[1], first]
    assert set(store.loaded_versions()) == {f"model.json@{later[1]}", f"model.json@{first}"}
    assert close(store.load("model.json", version=first).predict(DATA), trained("xgboost", 0).expected)


# -- extra versions loaded ----------------------------------------------------------------


def test_extra_versions_are_an_lru_that_never_evicts_a_held_one(
    folder: Path, make_store: Callable[..., ModelStore]
):
    store = make_store(max_extra_versions=2)
    v = serve_versions(store, folder, "model.json", [trained("xgboost", seed) for seed in range(5)])
    store.hold({("model.json", v[0])})
    assert store.preload() == {"model.json": None, f"model.json@{v[0]}": None}

    def extras() -> set[str]:
        return {key.split("@")[1] for key in store.loaded_versions()} - {v[4]}

    one = store.load("model.json", version=v[1])
    store.load("model.json", version=v[2])
    assert extras() == {v[0], v[1], v[2]}  # the held one does not count
    assert store.load("model.json", version=v[1]) is one  # used again: now the most recent
    store.load("model.json", version=v[3])  # the third on demand: the least recently used goes
    assert extras() == {v[0], v[1], v[3]}
    store.hold(())  # no longer held: an ordinary member, and the least recently used
    assert extras() == {v[1], v[3]}
    assert store.loaded() == {"model.json": v[4]}


def test_a_held_version_stays_loaded_when_its_file_moves_on(
    folder: Path, make_store: Callable[..., ModelStore]
):
    store = make_store(max_extra_versions=0)
    first = serve_versions(store, folder, "model.json", [trained("xgboost", 0)])[0]
    held = store.load("model.json")
    store.hold({("model.json", first)})
    serve_versions(store, folder, "model.json", [trained("xgboost", 1)])
    assert store.load("model.json", version=first) is held  # never reloaded
    (folder / "model.json").unlink()
    store.preload()
    assert list(store.loaded_versions()) == [f"model.json@{first}"]


def test_a_held_current_version_stays_loaded_when_its_file_is_deleted(
    folder: Path, make_store: Callable[..., ModelStore]
):
    store = make_store(max_extra_versions=0)
    version = serve_versions(store, folder, "model.json", [trained("xgboost", 0)])[0]
    held = store.load("model.json")
    store.hold({("model.json", version)})
    (folder / "model.json").unlink()
    assert store.preload() == {f"model.json@{version}": None}
    assert store.loaded() == {}
    assert store.loaded_versions() == {f"model.json@{version}": held}  # from memory, not reloaded


def test_a_rollback_reuses_the_loaded_extra_version(folder: Path, make_store: Callable[..., ModelStore]):
    store = make_store()
    builds = count_builds(store)
    first, _ = serve_versions(store, folder, "model.json", [trained("xgboost", 0), trained("xgboost", 1)])
    extra = store.load("model.json", version=first)
    assert builds() == 3
    deploy(folder, "model.json", trained("xgboost", 0).content)  # back to the first version
    current = store.load("model.json")
    assert current.file.version == first and current.adapter is extra.adapter
    assert builds() == 3
    assert list(store.loaded_versions()) == [f"model.json@{first}"]  # held once, as the current


def test_a_version_asked_for_at_once_loads_once(folder: Path, make_store: Callable[..., ModelStore]):
    store = make_store()
    first, _ = serve_versions(store, folder, "model.json", [trained("xgboost", 0), trained("xgboost", 1)])
    builds = count_builds(store)
    start = threading.Barrier(6)
    served = []

    def ask() -> None:
        start.wait()
        served.append(store.load("model.json", version=first))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds() == 1
    assert len(served) == 6 and all(model is served[0] for model in served)


def test_preload_reports_a_held_version_that_cannot_load(folder: Path, make_store: Callable[..., ModelStore]):
    store = make_store()
    deploy(folder, "model.json", trained("xgboost", 0).content)
    store.hold({("model.json", "0123456789abcdef"), ("gone.json", "fedcba9876543210")})
    assert store.preload() == {
        "model.json": None,
        "model.json@0123456789abcdef": "model.json has no kept version '0123456789abcdef'",
        "gone.json@fedcba9876543210": "gone.json has no kept version 'fedcba9876543210'",
    }


def count_builds(store: ModelStore) -> Callable[[], int]:
    """Count the models `store` builds from a file from now on."""
    calls = []
    build = store._build

    def counted(file: ModelFile) -> Adapter:
        calls.append(file.version)
        return build(file)

    store._build = counted  # type: ignore[method-assign]
    return lambda: len(calls)
