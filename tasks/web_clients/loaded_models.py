"""What the predict workers report they have loaded, and which files they could not load
(`tasks.worker.model_registry`), and which versions each live predict process holds."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks.contract import LOADED_MODELS_KEY, LOADED_VERSIONS_KEY, MODEL_FAILURES_KEY, WORKER_MODELS_PREFIX

Reported = dict[str, dict[str, Any]]  # name@version -> what a worker said of it


@dataclass(frozen=True)
class ModelReports:
    loaded: Reported  # the model's description, and `reported_at`
    failed: Reported  # `code`, `error`, `serving` (the version the worker kept, or None), `reported_at`
    beside: Reported = field(default_factory=dict)  # versions held beside a file's current one

    @classmethod
    def read(cls, client: redis.Redis) -> ModelReports:
        pipeline = client.pipeline(transaction=False)
        pipeline.hgetall(LOADED_MODELS_KEY)
        pipeline.hgetall(MODEL_FAILURES_KEY)
        pipeline.hgetall(LOADED_VERSIONS_KEY)
        loaded, failed, beside = pipeline.execute()
        return cls(_decoded(loaded), _decoded(failed), _decoded(beside))

    def description(self, name: str, version: str) -> dict[str, Any] | None:
        """What a worker said of `name` at `version`, whichever way it holds it."""
        key = f"{name}@{version}"
        return self.loaded.get(key) or self.beside.get(key)

    def versions(self, name: str) -> dict[str, float]:
        """version -> when it was last reported loaded, for every version of `name` a worker loaded."""
        found = {}
        for key, description in self.loaded.items():
            model, _, version = key.rpartition("@")
            if model == name:
                found[version] = description.get("reported_at", 0.0)
        return found


def loaded_descriptions(client: redis.Redis) -> Reported:
    """`name@version` -> description, as reported by the workers."""
    return _decoded(client.hgetall(LOADED_MODELS_KEY))


def _decoded(entries: dict[bytes, bytes]) -> Reported:
    return {key.decode(): json.loads(value) for key, value in entries.items()}


def live_workers(client: redis.Redis) -> dict[str, set[str]]:
    """host:pid -> the name@version set each live predict process holds (each renews its
    entry every few seconds; a process gone stops within HELD_TTL_S)."""
    keys = sorted(client.scan_iter(match=WORKER_MODELS_PREFIX + "*", count=500))
    if not keys:
        return {}
    values = client.mget(keys)
    return {
        key.decode()[len(WORKER_MODELS_PREFIX) :]: set(json.loads(value))
        for key, value in zip(keys, values, strict=True)
        if value is not None  # expired between the scan and the read
    }
